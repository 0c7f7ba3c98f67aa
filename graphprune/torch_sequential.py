"""Sequential least-squares refit of a pruned module's linears, block by block.

The one-shot repair (:mod:`graphprune.repair`) refits each consumer of a
removed channel from the *original* model's statistics, so the error every
pruned layer leaves still flows into the layers after it. Here every
``nn.Linear`` of the pruned module is refitted, block by block in execution
order, to reproduce the original linear's output (its kept rows) from the
inputs the pruned — and already refitted — model now gives it:

    [W' b'] = argmin ‖X̃·W'ᵀ + b' − Y‖² + λ‖W'‖²,   Y = X·Wᵀ + b  (kept rows)

``X̃`` is the pruned model's input to the linear, ``X`` the original's, on
the same calibration batch; ``λ = RIDGE · mean(diag X̃ᵀX̃)``. Linears without
a bias are fitted without one. The solve needs only ``X̃ᵀX̃`` and ``X̃ᵀY``,
accumulated batch by batch.

A *block* is the run of linears (in execution order) whose names share the
prefix up to their last index — a decoder layer, ``model.layers.7`` — so the
linears of one block are fitted together on inputs from the blocks before
it, refitted. Each block's pass stops the forward right after the block's
last linear, so the cost is about half a forward per block and batch, for
both models. Linears whose weight another module shares (tied embeddings)
are left alone. The refit is kept only if it lowers the held-out output
error (:func:`graphprune.torch_repair.apply_repair` judges it).
"""

from __future__ import annotations

import re

import torch
from torch import nn

from .repair import RIDGE


class _Stop(Exception):
    """Raised by the hook of a block's last linear: the rest of the forward is not needed."""


def _block_key(name: str) -> str:
    match = re.match(r"(.*\.\d+)\.", name)
    return match.group(1) if match else name


def _execution_order(module: nn.Module, inputs: tuple) -> list[str]:
    order: dict[str, None] = {}  # first call first; a linear called twice keeps its first place
    hooks = [m.register_forward_pre_hook(lambda m, args, name=name: order.setdefault(name))
             for name, m in module.named_modules() if isinstance(m, nn.Linear)]
    try:
        with torch.no_grad():
            module(*inputs)
    finally:
        for h in hooks:
            h.remove()
    return list(order)


def _shared(module: nn.Module) -> set[int]:
    counts: dict[int, int] = {}
    for m in module.modules():
        for p in m._parameters.values():
            if p is not None:
                counts[id(p)] = counts.get(id(p), 0) + 1
    return {k for k, v in counts.items() if v > 1}


def _capture(module: nn.Module, names: list[str], inputs: tuple, transform=None) -> dict[str, torch.Tensor]:
    """The input of each linear in ``names`` on ``inputs`` (rows × features, float64), or
    ``transform(name, x)`` of it; the forward stops after the last of them."""
    modules = dict(module.named_modules())
    seen: dict[str, torch.Tensor] = {}

    def hook(m, args, name):
        x = args[0].detach()
        rows = x.reshape(-1, x.shape[-1]).double()
        seen[name] = transform(name, rows) if transform else rows
        if len(seen) == len(names):
            raise _Stop

    hooks = [modules[n].register_forward_pre_hook(lambda m, args, n=n: hook(m, args, n)) for n in names]
    try:
        with torch.no_grad():
            module(*inputs)
    except _Stop:
        pass
    finally:
        for h in hooks:
            h.remove()
    return seen


def sequential_refit(pruned: nn.Module, original: nn.Module, fit: list[tuple], kept_rows: dict[str, object]
                     ) -> tuple[list[str], list]:
    """Refit every linear of ``pruned`` in place (see the module docstring); returns the
    refitted names and the undo steps. ``kept_rows[name]`` gives the original output rows a
    pruned linear keeps (absent: all)."""
    originals = dict(original.named_modules())
    modules = dict(pruned.named_modules())
    shared = _shared(pruned)
    order = [n for n in _execution_order(pruned, fit[0]) if isinstance(originals.get(n), nn.Linear)
             and id(modules[n].weight) not in shared]
    blocks: list[list[str]] = []
    for name in order:
        if blocks and _block_key(blocks[-1][-1]) == _block_key(name):
            blocks[-1].append(name)
        else:
            blocks.append([name])
    refitted, undo = [], []
    for block in blocks:
        sums: dict[str, list] = {}
        for inputs in fit:
            def target(name, x):
                m = originals[name]
                y = nn.functional.linear(x, m.weight.double(), m.bias.double() if m.bias is not None else None)
                rows = kept_rows.get(name)
                return y[:, torch.as_tensor(rows)] if rows is not None else y
            wanted = _capture(original, block, inputs, target)
            got = _capture(pruned, block, inputs)
            for name in block:
                if name not in wanted or name not in got or got[name].shape[0] != wanted[name].shape[0]:
                    continue
                x = got[name]
                if modules[name].bias is not None:
                    x = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)
                gram, cross = x.T @ x, x.T @ wanted[name]
                if name in sums:
                    sums[name][0] += gram
                    sums[name][1] += cross
                else:
                    sums[name] = [gram, cross]
        for name, (gram, cross) in sums.items():
            m = modules[name]
            features = m.in_features
            ridge = RIDGE * max(float(torch.diagonal(gram)[:features].mean()), 1e-12)
            eye = torch.eye(len(gram), dtype=gram.dtype)
            if m.bias is not None:
                eye[-1, -1] = 0.0  # the bias is not regularised
            solution = torch.linalg.solve(gram + ridge * eye, cross)  # (features [+1]) × out
            if not torch.isfinite(solution).all() or solution.shape[1] != m.out_features:
                continue
            with torch.no_grad():
                previous = (m.weight.detach().clone(), m.bias.detach().clone() if m.bias is not None else None)
                m.weight.copy_(solution[:features].T.to(m.weight.dtype))
                if m.bias is not None:
                    m.bias.copy_(solution[features].to(m.bias.dtype))
            undo.append(lambda m=m, previous=previous: _restore(m, previous))
            refitted.append(name)
    return refitted, undo


def _restore(m: nn.Linear, previous) -> None:
    with torch.no_grad():
        m.weight.copy_(previous[0])
        if previous[1] is not None:
            m.bias.copy_(previous[1])
