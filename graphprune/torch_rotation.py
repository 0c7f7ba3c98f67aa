"""Applying residual-stream rotations (:mod:`graphprune.rotation`) to a live module.

The rotation is meant to be lossless: the rotated module must compute the
same function. That is checked, not assumed: the outputs before and after on
the held-out calibration batches and the oracle's inputs must agree to float
rounding (``ROTATION_TOLERANCE``, relative), else the rotation is undone and
the report says why. Pruning then runs on the rotated module as on any other.
"""

from __future__ import annotations

import torch
from torch import nn

from .frontends.fx import FxModel
from .rotation import plan_rotation, stream_groups
from .torch_calibration import collect_statistics
from .torch_repair import float_outputs, output_error

ROTATION_TOLERANCE = 1e-3  # ‖y' − y‖/‖y‖ float32 rounding through a few dozen rotated layers stays far below


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
            undo.append(lambda target=target, previous=previous: target.copy_(previous))
    return undo


def rotate_streams(traced: FxModel, analysis, fit: list[tuple], checks: list[tuple]) -> dict:
    """Rotate every RMSNorm-read stream group of ``traced.module`` in place; a report of what
    was rotated and what was not (and why). ``fit`` gives the statistics, ``checks`` the
    batches the rotated module must reproduce its outputs on."""
    groups = stream_groups(analysis)
    if not groups:
        return {"rotated": [], "skipped": {}, "reason": "no prunable stream is read through an RMSNorm"}
    table = analysis.table
    wanted = {(c.tensor, c.axis): table.sizes[c.dim] for c in table.contractions
              if int(analysis.group_of[c.dim]) in groups}
    stats = collect_statistics(traced, fit, wanted, gram=set(wanted))
    before = float_outputs(traced.module, checks)
    rotated, skipped = [], {}
    for gid in groups:
        label = analysis.describe(analysis.groups[gid])
        rotation = plan_rotation(analysis, gid, stats)
        if isinstance(rotation, str):
            skipped[label] = rotation
            continue
        undo = _apply(traced, rotation)
        if isinstance(undo, str):
            skipped[label] = undo
            continue
        error = output_error(traced.module, checks, before)
        if error > ROTATION_TOLERANCE:
            with torch.no_grad():
                for step in reversed(undo):
                    step()
            skipped[label] = f"the rotated model's outputs differ by {error:.1e} (relative)"
            continue
        rotated.append({"group": label, "output_change": float(f"{error:.2e}"), **rotation.to_dict()})
    return {"rotated": rotated, "skipped": skipped}
