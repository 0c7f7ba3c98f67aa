"""Replay a pruning plan from a report's kept indices.

The report's ``initializers`` section (``{name: {axis: [kept indices]}}``) is
a complete, auditable description of a prune. Replaying it on the same model
(or on any model with the same initializer names and channel structure)
rebuilds the :class:`~graphprune.selection.Plan`: for each group, the first
reported parameter decides which channels go, and every other reported
parameter of the group must agree — a plan that splits a channel, prunes a
pinned group, or names unknown tensors is refused with the tensor named.

Reports are keyed by parameter (``state_dict``) names, so a plan made on a
PyTorch module replays on its ONNX export and vice versa. Across formats,
names the other side does not have (BatchNorm parameters an exporter folded
into the conv, say) are skipped and listed; every group is still decided by
the names both sides share, and a plan sharing no name is refused.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .channels import ChannelAnalysis
from .errors import InputError, PlanError
from .selection import Plan


class KeptIndices(dict):
    """``{name: {axis: kept indices}}``; ``origin`` is the format the plan was made on."""

    origin = "onnx"


def read_plan(source) -> KeptIndices:
    """Kept indices per initializer and axis, from a report dict or a JSON file."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise InputError(f"{path}: no such plan file (pass a report written by --report)")
        try:
            source = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}: not a JSON report ({exc})") from exc
    entries = source.get("initializers") if isinstance(source, dict) else None
    if not isinstance(entries, dict):
        raise PlanError("the plan has no 'initializers' section ({name: {axis: [kept indices]}})")
    try:
        kept = KeptIndices({name: {int(axis): np.asarray(kept, dtype=np.int64) for axis, kept in axes.items()}
                            for name, axes in entries.items()})
    except (TypeError, ValueError, AttributeError) as exc:
        raise PlanError(f"malformed 'initializers' entry in the plan: {exc}") from exc
    kept.origin = "torch" if "torch" in source else "onnx"
    return kept


def plan_from_kept(analysis: ChannelAnalysis, kept: dict[str, dict[int, np.ndarray]],
                   target: str = "onnx") -> Plan:
    """Rebuild a plan; ``target`` is this model's format ("onnx" or "torch")."""
    plan = Plan(analysis)
    table = analysis.table
    cross_format = getattr(kept, "origin", target) != target
    matched = 0
    for name, axes in kept.items():
        for axis, indices in axes.items():
            did = table.ids.get((name, axis))
            if did is None and cross_format and name not in analysis.graph.constants:
                plan.skipped.append(name)
                continue
            if did is None:
                raise PlanError(f"plan names '{name}' axis {axis}, which this model has no channel axis for")
            matched += 1
            size = table.sizes[did]
            if indices.size and (indices.min() < 0 or indices.max() >= size or np.any(np.diff(indices) <= 0)):
                raise PlanError(f"kept indices of '{name}' axis {axis} must be ascending and in [0, {size})")
            for group, removed in _removed_channels(analysis, did, indices, name, axis):
                if group.id in plan.removed:
                    if not np.array_equal(plan.removed[group.id], removed):
                        raise PlanError(f"kept indices of '{name}' axis {axis} disagree with the rest of its group")
                else:
                    plan.removed[group.id] = removed
    if kept and not matched:
        raise PlanError(f"the plan names none of this model's parameters (first: '{next(iter(kept))}'); "
                        "was it made on another model?")
    return plan


def _removed_channels(analysis, did, indices, name, axis) -> list:
    """``[(group, removed channels)]`` for every group dim ``did`` belongs to: its own and, on the
    query side of grouped-query attention, the inner-factor group (``analysis.factor_of``).

    A channel is removed when none of its elements is kept; the kept indices must be exactly
    the elements whose every group keeps their channel (no channel split, nothing pinned lost).
    """
    own = analysis.groups[analysis.group_of[did]]
    memberships = [(own, own.channels.get(did))] + [(analysis.groups[gid], channels)
                                                    for gid, channels in analysis.factor_of.get(did, ())]
    kept_elements = np.zeros(analysis.table.sizes[did], dtype=bool)
    kept_elements[indices] = True
    gone = np.zeros_like(kept_elements)
    pinned = None
    out = []
    for group, channels in memberships:
        if group.pinned is not None:  # loses nothing: whatever goes must go through another group
            pinned = pinned or group.pinned
            continue
        inside = channels >= 0
        kept_count = np.bincount(channels[inside], weights=kept_elements[inside], minlength=group.size)
        present = np.bincount(channels[inside], minlength=group.size) > 0
        removed = present & (kept_count == 0)
        gone[inside] |= removed[channels[inside]]
        out.append((group, removed))
    if np.any(gone == kept_elements):
        if pinned is not None and not out:
            raise PlanError(f"plan prunes '{name}' axis {axis}, but its group is pinned: {pinned}")
        raise PlanError(f"kept indices of '{name}' axis {axis} split channels that must be removed together"
                        + (f" (or remove channels of a pinned group: {pinned})" if pinned else ""))
    return out
