"""Applying residual-stream rotations (:mod:`graphprune.rotation`) to a live module.

The rotation is meant to be lossless: the rotated module must compute the
same function. That is checked, not assumed: the outputs before and after on
the held-out calibration batches and the oracle's inputs must agree to float
rounding (:func:`graphprune.rotation.rotate_groups`), else the rotation is
undone and the report says why. Pruning then runs on the rotated module as on any other.
"""

from __future__ import annotations

import torch
from torch import nn

from .frontends.fx import FxModel
from .rotation import NO_STREAM, rotate_groups, stream_groups, stream_inputs
from .torch_calibration import collect_statistics
from .torch_repair import float_outputs, output_error


def _holders(module: nn.Module, param: torch.Tensor) -> list[tuple[nn.Module, str]]:
    return [(m, attr) for m in module.modules() for attr, p in m._parameters.items() if p is param]


def _untie(module: nn.Module, param: torch.Tensor, value) -> list | str:
    """Give the ``nn.Linear`` holders of a tied ``param`` their own copy holding ``value``;
    returns the undo steps, or why it cannot."""
    holders = _holders(module, param)
    readers = [(m, a) for m, a in holders if isinstance(m, nn.Linear)]
    if not readers or len(readers) == len(holders):
        return "cannot tell which of the modules sharing it is the contraction that reads the norm"
    undo = []
    for m, attr in readers:
        copy = nn.Parameter(torch.as_tensor(value, dtype=param.dtype, device=param.device).reshape(param.shape),
                            requires_grad=param.requires_grad)
        setattr(m, attr, copy)
        undo.append(lambda m=m, attr=attr: setattr(m, attr, param))
    config = getattr(module, "config", None)
    if config is not None and getattr(config, "tie_word_embeddings", False):
        config.tie_word_embeddings = False  # so that saving and reloading keeps the copy
        undo.append(lambda: setattr(config, "tie_word_embeddings", True))
    return undo


def _copy(target: torch.Tensor, value: torch.Tensor) -> None:
    with torch.no_grad():
        target.copy_(value)


def _apply(traced: FxModel, rotation) -> list | str:
    undo = []
    with torch.no_grad():
        for name, value in rotation.private.items():
            steps = _untie(traced.module, traced.params[name], value)
            if isinstance(steps, str):
                for step in reversed(undo):
                    step()
                return f"'{name}': {steps}"
            undo.extend(steps)
        for name, value in rotation.values.items():
            target = traced.params[name]
            previous = target.detach().clone()
            target.copy_(torch.as_tensor(value, dtype=target.dtype).reshape(target.shape))
            undo.append(lambda target=target, previous=previous: _copy(target, previous))
    return undo


def rotate_streams(traced: FxModel, analysis, fit: list[tuple], checks: list[tuple]) -> dict:
    """Rotate every RMSNorm-read stream group of ``traced.module`` in place; a report of what
    was rotated and what was not (and why). ``fit`` gives the statistics, ``checks`` the
    batches the rotated module must reproduce its outputs on."""
    groups = stream_groups(analysis)
    if not groups:
        return {"rotated": [], "skipped": {}, "reason": NO_STREAM}
    wanted = stream_inputs(analysis, groups)
    stats = collect_statistics(traced, fit, wanted, gram=set(wanted))
    before = float_outputs(traced.module, checks)
    return rotate_groups(analysis, groups, stats, lambda rotation: _apply(traced, rotation),
                         lambda: output_error(traced.module, checks, before))
