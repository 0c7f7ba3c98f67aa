"""Applying a repair (:mod:`graphprune.repair`) and the BatchNorm re-estimate to a pruned module.

Both change the model the oracle verified (the structure stays verified: the
oracle runs first, on the original weights). Each step is judged by the
relative output error against the *original* model on held-out calibration
samples, ``‖y − y₀‖ / ‖y₀‖`` over every float output, and undone when it
makes that error worse; the report gives the error after each step.
"""

from __future__ import annotations

import torch
from torch.utils import _pytree as pytree

from .repair import RepairPlan, sliced_values
from .torch_calibration import recalibrate_batchnorm
from .torch_sequential import sequential_refit


def float_outputs(module, batches) -> list[list[torch.Tensor]]:
    """The float outputs of ``module`` on each batch, flattened (what a repair is judged by)."""
    with torch.no_grad():
        return [[t for t in pytree.tree_leaves(module(*inputs)) if isinstance(t, torch.Tensor)
                 and t.is_floating_point()] for inputs in batches]


def output_error(module, batches, originals) -> float:
    """``‖y − y₀‖ / ‖y₀‖`` over every float output of every batch."""
    diff = norm = 0.0
    for got, want in zip(float_outputs(module, batches), originals):
        for a, b in zip(got, want):
            if a.shape != b.shape:
                return float("inf")
            diff += float((a.double() - b.double()).pow(2).sum())
            norm += float(b.double().pow(2).sum())
    return (diff / norm) ** 0.5 if norm else 0.0


def _write(traced, values: dict) -> dict:
    """Copy ``values`` into the traced parameters in place; returns the previous values."""
    previous = {}
    with torch.no_grad():
        for name, value in values.items():
            target = traced.params[name]
            previous[name] = target.detach().clone()
            target.copy_(torch.as_tensor(value, dtype=target.dtype, device=target.device).reshape(target.shape))
    return previous


def _norm_buffers(module) -> dict:
    return {name: b.detach().clone() for m_name, m in module.named_modules()
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
            for name, b in ((f"{m_name}.{k}", v) for k, v in m._buffers.items() if v is not None)}


def _restore_buffers(module, saved: dict) -> None:
    buffers = dict(module.named_buffers())
    with torch.no_grad():
        for name, value in saved.items():
            buffers[name].copy_(value)


def apply_repair(pruned, traced, emission, repair: RepairPlan | None, fit, held_out, originals,
                 recalibrate_bn: bool, original=None) -> dict:
    """Repair, then (given the ``original`` module) the sequential refit of
    :mod:`graphprune.torch_sequential`, then re-estimate BatchNorm, keeping each step only if it
    lowers the held-out error."""
    errors = {"pruned": output_error(pruned, held_out, originals)}
    best = errors["pruned"]
    outcome: dict = {"output_error": errors}
    if repair is not None:
        outcome["repair"] = repair.to_dict()
        if repair.values:
            previous = _write(traced, sliced_values(repair, emission.sliced))
            errors["repaired"] = output_error(pruned, held_out, originals)
            if errors["repaired"] > best:
                _write(traced, previous)
                outcome["repair"]["undone"] = "it raised the held-out output error"
            else:
                best = errors["repaired"]
    if original is not None:
        kept_rows = {name[:-len(".weight")]: axes[0] for name, axes in emission.sliced.items()
                     if name.endswith(".weight") and 0 in axes}
        names, undo = sequential_refit(pruned, original, fit, kept_rows)
        if names:
            errors["sequential_refit"] = output_error(pruned, held_out, originals)
            outcome["sequential_refit"] = len(names)
            if errors["sequential_refit"] > best:
                for step in reversed(undo):
                    step()
                outcome["sequential_refit"] = 0
                outcome["sequential_undone"] = "it raised the held-out output error"
            else:
                best = errors["sequential_refit"]
    if recalibrate_bn:
        saved = _norm_buffers(pruned)
        count = recalibrate_batchnorm(pruned, fit)
        if count:
            errors["bn_recalibrated"] = output_error(pruned, held_out, originals)
            outcome["bn_recalibrated"] = count
            if errors["bn_recalibrated"] > best:
                _restore_buffers(pruned, saved)
                outcome["bn_recalibrated"] = 0
                outcome["bn_undone"] = "it raised the held-out output error"
    return outcome
