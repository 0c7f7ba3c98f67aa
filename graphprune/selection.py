"""Which channels to remove: the pruning policy over importance scores.

* Local (default): each prunable group loses ``floor(ratio · n)`` of the
  least important channels of each of its *segments*: channels owned by the
  same set of parameters. A plain group is one segment; a concat of two convs
  has one segment per conv, so each branch loses the same fraction and keeps
  a regular width (uneven branches cost runtime speed for no MAC gain).
* Global: channels are ranked across all groups; the lowest ``ratio`` of all
  channels go, but no group loses more than ``max_group_ratio`` of its
  channels. How scores from different groups are made comparable is the
  *allocation*:

  - ``"normalised"`` (default): each score divided by its group's mean, so
    every group competes on relative importance (right for weight norms,
    whose scale differs from layer to layer for reasons unrelated to the loss);
  - ``"cost"``: ``score² / p``, where ``score²`` is the squared output error
    of removing the channel and ``p`` what removing it saves — parameters, or
    MACs under a MACs budget (:mod:`graphprune.budget` passes them): the greedy
    order of the knapsack "least error per unit of budget saved". Meant for
    the activation-aware criteria, whose scores are absolute errors on a common
    scale: in a pre-norm residual network an error written to the residual
    stream at any layer reaches the final norm about unchanged, so a layer
    whose channels matter less loses more of them.
* ``round_to=N`` rounds the number kept up to a multiple of N (hardware
  friendly widths), counted in elements of the widest dim: heads of
  ``head_dim`` rows need only ``N / gcd(N, head_dim)``.
* Never empties anything: every dim keeps at least one element, so no conv,
  split output or head count drops to zero.

The result is a :class:`Plan`: the removed channels of each group, and from
them the kept indices of every dim.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import math

import numpy as np

from .channels import ChannelAnalysis, ChannelGroup
from .errors import InputError


@dataclass
class Plan:
    """Removed channels per group id; ``kept(dim)`` derives per-dim indices."""

    analysis: ChannelAnalysis
    removed: dict[int, np.ndarray] = field(default_factory=dict)  # group id -> bool mask
    skipped: list[str] = field(default_factory=list)  # replayed names this model lacks (cross-format)

    def kept(self, did: int) -> np.ndarray | None:
        """Kept element indices of dim ``did`` (ascending), or None if untouched.

        A dim on the query side of grouped-query attention belongs to its kv
        group and to an inner-factor group (:mod:`graphprune.channels.factors`):
        an element is kept when every group it belongs to keeps its channel.
        """
        analysis = self.analysis
        group = analysis.groups[analysis.group_of[did]]
        mask = self.removed.get(group.id)
        gone = mask[group.channels[did]] if mask is not None and mask.any() else None
        for gid, channels in analysis.factor_of.get(did, ()):  # -1: an element outside that group
            mask = self.removed.get(gid)
            if mask is None or not mask.any():
                continue
            elements = np.zeros(len(channels), dtype=bool)
            inside = channels >= 0
            elements[inside] = mask[channels[inside]]
            gone = elements if gone is None else gone | elements
        if gone is None:  # no group of this dim loses a channel
            return None
        return np.flatnonzero(~gone)  # all indices when this dim's part of the groups is intact

    def changed_dims(self) -> list[int]:
        dims: dict[int, None] = {}
        for gid, mask in self.removed.items():
            if mask.any():
                group = self.analysis.groups[gid]
                dims.update(dict.fromkeys(group.dims + group.partial))
        return list(dims)

    @property
    def channels_removed(self) -> int:
        return int(sum(m.sum() for m in self.removed.values()))


def _keep_count(size: int, ratio: float, round_to: int) -> int:
    keep = size - int(np.floor(size * ratio + 1e-9))
    if round_to > 1:
        keep = int(np.ceil(keep / round_to) * round_to)
    return int(min(max(keep, 1), size))


def _rounding(group: ChannelGroup, round_to: int) -> int:
    """The kept channel count must be a multiple of this. ``round_to`` counts elements of the
    group's widest dim: a head group's channel is ``head_dim`` projection rows, so with
    ``head_dim`` a multiple of ``round_to`` any head count already gives aligned widths (and
    ``--round-to 8`` on an 8-head model no longer keeps every head)."""
    width = 1
    for channels in group.channels.values():
        inside = channels[channels >= 0]
        if len(inside):
            width = max(width, int(np.bincount(inside).max()))
    return math.lcm(round_to // math.gcd(round_to, width), group.multiple)


def ensure_nonempty(group: ChannelGroup, removed: np.ndarray, score: np.ndarray) -> None:
    """Give back each dim's best channel where a dim would otherwise lose everything."""
    for channels in group.channels.values():
        if len(channels) and removed[channels].all():
            best = channels[np.argmax(score[channels])]
            removed[best] = False


def _validate(ratio: float, round_to: int, max_group_ratio: float) -> None:
    if not 0.0 <= ratio < 1.0:
        raise InputError(f"ratio must be in [0, 1), got {ratio}")
    if round_to < 1:
        raise InputError(f"round-to must be a positive integer, got {round_to}")
    if not 0.0 < max_group_ratio < 1.0:
        raise InputError(f"max group ratio must be in (0, 1), got {max_group_ratio}")


ALLOCATIONS = ("normalised", "cost")


def select(analysis: ChannelAnalysis, scores: dict[int, np.ndarray], ratio: float,
           global_ranking: bool = False, round_to: int = 1, max_group_ratio: float = 0.9,
           allocation: str = "normalised", channel_cost: dict[int, float] | None = None) -> Plan:
    """Choose the channels to remove from each prunable group.

    ``channel_cost``: with ``allocation="cost"``, what one channel of each group costs (group id ->
    MACs, say); default its parameters (:func:`parameters_per_channel`).
    """
    _validate(ratio, round_to, max_group_ratio)
    check_allocation(allocation)
    plan = Plan(analysis)
    groups = [g for g in analysis.prunable_groups() if g.id in scores]
    if not groups or ratio == 0:
        return plan
    keep_counts = (_global_keep_counts(groups, _comparable(analysis, groups, scores, allocation, channel_cost),
                                       ratio, round_to, max_group_ratio) if global_ranking else {})
    for g in groups:
        score = scores[g.id]
        removed = np.zeros(g.size, dtype=bool)
        if global_ranking:
            removed[np.argsort(score, kind="stable")[:g.size - keep_counts[g.id]]] = True
        else:
            for members in segments(analysis, g):
                order = members[np.argsort(score[members], kind="stable")]
                keep = _keep_count(len(members), ratio, _rounding(g, round_to))
                removed[order[:len(members) - keep]] = True
        ensure_nonempty(g, removed, score)
        plan.removed[g.id] = removed
    return plan


def segments(analysis: ChannelAnalysis, group: ChannelGroup) -> list[np.ndarray]:
    """Channels of ``group`` split by which parameter dims contain them (vectorised)."""
    owners = np.zeros((len(analysis.constant_dims(group)), group.size), dtype=bool)
    for row, d in enumerate(analysis.constant_dims(group)):
        owners[row, group.channels[d]] = True
    _, segment = np.unique(np.packbits(owners, axis=0).T, axis=0, return_inverse=True)
    segment = segment.reshape(-1)
    order = np.argsort(segment, kind="stable")
    return np.split(order, np.flatnonzero(np.diff(segment[order])) + 1)


def check_allocation(allocation: str) -> None:
    if allocation not in ALLOCATIONS:
        raise InputError(f"unknown allocation '{allocation}': choose one of {', '.join(ALLOCATIONS)}")


def parameters_per_channel(analysis: ChannelAnalysis, group: ChannelGroup) -> float:
    """Parameters removed with one channel of ``group``: every constant dim of the group
    loses ``numel / axis size`` elements per element of the dim it owns."""
    total = 0.0
    for d in analysis.constant_dims(group):
        name, axis = analysis.table.keys[d][:2]
        shape = tuple(analysis.graph.constants[name].shape)
        if not shape or not shape[axis]:
            continue
        total += math.prod(shape) / shape[axis] * len(group.channels[d])
    return total / group.size if group.size else 0.0


def _comparable(analysis, groups, scores, allocation, channel_cost=None) -> list[np.ndarray]:
    """Each group's scores on the common scale the global ranking compares (module docstring)."""
    if allocation == "cost":
        cost = channel_cost or {g.id: parameters_per_channel(analysis, g) for g in groups}
        return [np.asarray(scores[g.id], dtype=np.float64) ** 2 / max(cost.get(g.id, 0.0), 1.0) for g in groups]
    return [scores[g.id] / (scores[g.id].mean() or 1.0) for g in groups]


def _global_keep_counts(groups, normalised, ratio, round_to, max_group_ratio) -> dict[int, int]:
    owner = np.concatenate([np.full(g.size, i) for i, g in enumerate(groups)])
    flat = np.concatenate(normalised)
    # rank of each channel inside its group, lowest score first
    rank = np.concatenate([np.argsort(np.argsort(s, kind="stable"), kind="stable") for s in normalised])
    cap = np.array([min(int(g.size * max_group_ratio), g.size - 1) for g in groups])
    allowed = rank < cap[owner]
    target = int(np.floor(len(flat) * ratio))
    candidates = np.flatnonzero(allowed)
    chosen = candidates[np.argsort(flat[candidates], kind="stable")[:target]]
    removed_per_group = np.bincount(owner[chosen], minlength=len(groups))
    return {g.id: _keep_count(g.size, removed_per_group[i] / g.size, _rounding(g, round_to))
            for i, g in enumerate(groups)}
