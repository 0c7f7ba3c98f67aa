"""Calibration on the PyTorch path: samples as call inputs, statistics from the traced graph.

The traced GraphModule is run by an interpreter that, at every fx node whose
value is a contraction input graphprune needs, adds the batch to that
tensor's running sums (:class:`graphprune.calibration.ChannelStats`) in
torch (float32 products, float64 sums), then drops it.
"""

from __future__ import annotations

import inspect

import numpy as np
import torch
import torch.fx as fx

from .calibration import ChannelStats, take
from .errors import InputError
from .frontends.fx import FxModel
from .progress import step


def call_inputs(sample, example_inputs: tuple, module: torch.nn.Module) -> tuple:
    """One calibration sample as positional call inputs matching ``example_inputs``.

    A tensor/array is the only input; a tuple/list gives the inputs in order
    (a longer one, a ``(inputs, labels)`` batch, is cut to the model's input
    count); a dict is ordered by ``module.forward``'s signature (a tokenizer's
    output).
    """
    count = len(example_inputs)
    if isinstance(sample, dict):
        names = [p for p in inspect.signature(module.forward).parameters if p in sample]
        unknown = set(sample) - set(names)
        if unknown:
            raise InputError(f"calibration sample has keys {sorted(unknown)} that "
                             f"{type(module).__name__}.forward does not take")
        sample = [sample[n] for n in names]
    if isinstance(sample, (tuple, list)):
        items = list(sample)[:count]
    else:
        items = [sample]
    if len(items) != count:
        raise InputError(f"a calibration sample gives {len(items)} inputs; the example inputs have {count}")
    out = []
    for item, example in zip(items, example_inputs):
        value = torch.as_tensor(item) if not isinstance(item, torch.Tensor) else item
        if isinstance(example, torch.Tensor):
            if value.dim() != example.dim():
                raise InputError(f"calibration input of shape {list(value.shape)} does not match the example's "
                                 f"rank ({list(example.shape)}); give batched samples")
            value = value.to(device=example.device, dtype=example.dtype)
        out.append(value)
    return tuple(out)


def calibration_inputs(data, example_inputs: tuple, module, limit: int | None = None) -> list[tuple]:
    """Every batch of ``data`` (an iterable or a ``DataLoader``) as call inputs; ``limit`` counts
    samples (rows of the batch axis), cutting the last batch short."""
    if data is None:
        return []
    if isinstance(data, (torch.Tensor, np.ndarray, dict)):
        data = [data]
    take([], limit)  # validates the limit
    batches, seen = [], 0
    for sample in data:
        inputs = call_inputs(sample, example_inputs, module)
        rows = batch_rows(inputs)
        if limit is not None and seen + rows > limit:
            inputs = tuple(x[:limit - seen] if isinstance(x, torch.Tensor) and x.dim() else x for x in inputs)
            rows = limit - seen
        batches.append(inputs)
        seen += rows
        if limit is not None and seen >= limit:
            break
    if not batches:
        raise InputError("the calibration data is empty")
    return batches


def batch_rows(inputs: tuple) -> int:
    """Samples in one batch: the first axis of its first tensor input."""
    first = next((x for x in inputs if isinstance(x, torch.Tensor) and x.dim()), None)
    return int(first.shape[0]) if first is not None else 1


class _Collector(fx.Interpreter):
    def __init__(self, gm, wanted: dict[str, list], sums: dict):
        super().__init__(gm)
        self.wanted = wanted
        self.sums = sums

    def run_node(self, n):
        value = super().run_node(n)
        for key, axis in self.wanted.get(n.name, ()):
            rows = value.detach().movedim(axis, -1).reshape(-1, value.shape[axis]).float()
            count, total, squares, gram = self.sums[key]
            self.sums[key] = (count + rows.shape[0], total + rows.sum(0, dtype=torch.float64),
                              squares + (rows * rows).sum(0, dtype=torch.float64),
                              gram + (rows.T @ rows).double() if gram is not None else None)
        return value


def collect_statistics(model: FxModel, samples: list[tuple], wanted: dict[tuple[str, int], int],
                       gram: set[tuple[str, int]] = frozenset()) -> dict[tuple[str, int], ChannelStats]:
    """Running sums of every ``(IR tensor, axis)`` in ``wanted`` over ``samples``; Gram matrices
    for the keys in ``gram``. Keys whose tensor the fx graph does not hold are left out."""
    by_node: dict[str, list] = {}
    sums = {}
    for key, channels in wanted.items():
        node = model.fx_of_ir.get(key[0])
        if node is None:
            continue
        by_node.setdefault(node, []).append((key, key[1]))
        zeros = torch.zeros(channels, dtype=torch.float64)
        sums[key] = (0, zeros, zeros.clone(),
                     torch.zeros(channels, channels, dtype=torch.float64) if key in gram else None)
    collector = _Collector(model.gm, by_node, sums)
    with torch.no_grad(), step("calibration statistics", total=len(samples)) as progress:
        for inputs in samples:
            collector.run(*inputs)
            progress.advance()
    return {key: ChannelStats(count, total.numpy(), squares.numpy(), g.numpy() if g is not None else None)
            for key, (count, total, squares, g) in sums.items()}


def recalibrate_batchnorm(module: torch.nn.Module, samples: list[tuple]) -> int:
    """Re-estimate the running mean/variance of every BatchNorm from ``samples`` (the pruned
    network's own activations, which removed upstream channels changed); returns how many.

    Cumulative averages (``momentum=None``) over every sample; other layers stay in eval mode.
    """
    norms = [m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
             and m.track_running_stats and m.running_mean is not None]
    if not norms or not samples:
        return 0
    saved = [(m, m.momentum, m.training) for m in norms]
    try:
        for m in norms:
            m.reset_running_stats()
            m.momentum = None
            m.train()
        with torch.no_grad(), step("BatchNorm re-estimate", total=len(samples)) as progress:
            for inputs in samples:
                module(*inputs)
                progress.advance()
    finally:
        for m, momentum, training in saved:
            m.momentum = momentum
            m.train(training)
    return len(norms)
