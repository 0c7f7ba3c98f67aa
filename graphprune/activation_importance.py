"""Activation-aware importance: the output error removing a channel causes, from calibration data.

Removing input channel ``j`` of a contraction ``y = W·x`` zeroes ``x_j``, so
every output moves by ``W[:, j]·x_j``. Its expected squared size is
``‖W[:, j]‖² · E[x_j²]`` (diagonal approximation: correlations between removed
channels ignored). A channel scores the square root of that error summed over
every contraction of its group (every consumer of a residual channel, the
output projection of a head, the down projection of an FFN unit):

* ``activation``: ``E[x_j²]`` — the Wanda / ThiNet criterion, the error with
  no repair;
* ``fluctuation``: ``Var[x_j]`` — FLAP's criterion, the error left once the
  channel's mean ``E[x_j]·W[:, j]`` is folded into the consumer's bias
  (:mod:`graphprune.repair`);
* ``reconstruction``: ``1 / (Σ⁻¹)_jj`` — the error left once the other
  channels are re-fitted by least squares (Optimal Brain Surgeon with the
  input covariance ``Σ`` as Hessian): a channel the others predict well is
  cheap to remove even when it is large. Needs the Gram matrices, so it is
  computed where they were gathered and falls back to ``Var[x_j]`` elsewhere.

Statistics come from :mod:`graphprune.calibration`. Groups no contraction
with a constant weight reads (only convolution groups, say) fall back to the
L2 weight norm and are counted.
"""

from __future__ import annotations

import numpy as np

from .calibration import ChannelStats
from .channels import ChannelAnalysis
from .channels.dims import Contraction
from .importance import _per_slice, group_importance
from .progress import stepped

from .criteria import ACTIVATION_CRITERIA, AUTO  # noqa: F401  (re-exported; AUTO: reconstruction when its Gram matrices fit GRAM_BUDGET)
GRAM_BUDGET = 2 << 30  # bytes of float64 Gram matrices the default criterion may gather
RIDGE = 1e-4  # relative to the mean variance, as in the least-squares repair


def contraction_weight(graph, producers: dict, c: Contraction) -> tuple[str, int, int | None] | None:
    """``(constant name, in-channel axis, out-channel axis)`` of the weight ``c`` multiplies by,
    seen through Transpose/Identity (the torch path's ``Wᵀ``); None when it is not a constant."""
    name, in_axis, out_axis = c.weight, c.weight_in_axis, c.weight_out_axis
    if not name or in_axis is None:
        return None
    while name not in graph.constants:
        node = producers.get(name)
        if node is None or node.op not in ("Transpose", "Identity"):
            return None
        if node.op == "Transpose":
            rank = len(graph.shape(node.inputs[0]) or ())
            perm = node.attr("perm") or list(reversed(range(rank)))
            in_axis = perm[in_axis]
            out_axis = perm[out_axis] if out_axis is not None else None
        name = node.inputs[0]
    weight = graph.constants[name]
    if weight.dtype.kind != "f" or weight.ndim < 2:
        return None
    return name, in_axis, out_axis


def _spread(st: ChannelStats, criterion: str) -> np.ndarray:
    """The per-channel factor of the removal error (see the module docstring)."""
    if criterion == "activation":
        return st.second_moment
    if criterion == "reconstruction" and st.gram is not None:
        cov = st.moments(centred=True)
        ridge = RIDGE * max(float(np.mean(np.diag(cov))), 1e-12)
        inverse = np.linalg.inv(cov + ridge * np.eye(len(cov)))
        return 1.0 / np.maximum(np.diag(inverse), 1e-30)
    return st.variance


def default_criterion(wanted: dict[tuple[str, int], int], repair: str, reconstruction: bool = True) -> str:
    """The criterion that measures the error the chosen repair leaves: ``activation`` with no
    repair, ``fluctuation`` with bias compensation, ``reconstruction`` with least squares (the
    best one-shot ranking measured) when the Gram matrices of every contraction input fit in
    ``GRAM_BUDGET``, else ``activation`` (per-channel sums only). ``reconstruction=False``
    (the ONNX path) keeps activation: the unrepaired reconstruction plans of deep models
    carry large activations and verify with little margin over the float32 oracle's
    noise-scaled tolerance (SmolLM2: 7.3e-4 against 8.0e-4)."""
    if repair == "bias":
        return "fluctuation"
    gram_bytes = sum(8 * size * size for size in wanted.values())
    fits = reconstruction and gram_bytes <= GRAM_BUDGET
    return "reconstruction" if repair == "lsq" and fits else "activation"


def needed_statistics(analysis: ChannelAnalysis) -> dict[tuple[str, int], int]:
    """``(tensor, axis) -> channels`` for every contraction input of a prunable group."""
    prunable = {g.id for g in analysis.prunable_groups()}
    table = analysis.table
    return {(c.tensor, c.axis): table.sizes[c.dim] for c in table.contractions
            if any(gid in prunable for gid, _ in _memberships(analysis, c.dim))
            and isinstance(table.sizes[c.dim], int)}


def _memberships(analysis: ChannelAnalysis, did: int) -> list[tuple[int, np.ndarray]]:
    """``(group id, channel of each element, -1 outside)`` of every group dim ``did`` is in: its
    own and, on the query side of grouped-query attention, the inner-factor group."""
    own = int(analysis.group_of[did])
    channels = analysis.groups[own].channels.get(did)
    mine = [(own, channels)] if channels is not None else []
    return mine + list(analysis.factor_of.get(did, ()))


@stepped("importance (activations)")
def activation_importance(analysis: ChannelAnalysis, stats: dict[tuple[str, int], ChannelStats],
                          criterion: str = "activation") -> tuple[dict[int, np.ndarray], int]:
    """Scores per prunable group (see the module docstring) and how many groups fell back to L2."""
    graph, table = analysis.graph, analysis.table
    producers = table.producers
    errors: dict[int, np.ndarray] = {}
    spreads: dict[tuple[str, int], np.ndarray] = {}  # one per input tensor: q, k and v share theirs
    prunable = {g.id: g for g in analysis.prunable_groups()}
    for c in table.contractions:
        groups = [(prunable[gid], channels) for gid, channels in _memberships(analysis, c.dim)
                  if gid in prunable]
        found = contraction_weight(graph, producers, c)
        key = (c.tensor, c.axis)
        st = stats.get(key)
        if not groups or found is None or st is None or st.count == 0:
            continue
        name, in_axis, _ = found
        column_energy = _per_slice(graph.constants[name], in_axis, "l2")
        if key not in spreads:
            spreads[key] = _spread(st, criterion)
        for group, channels in groups:
            inside = channels >= 0
            error = np.bincount(channels[inside], weights=(column_energy * spreads[key])[inside],
                                minlength=group.size)
            errors[group.id] = errors[group.id] + error if group.id in errors else error
    scores, fallbacks = {}, 0
    for gid, group in prunable.items():
        if errors.get(gid) is not None:
            scores[gid] = np.sqrt(errors[gid])
        else:
            scores[gid] = group_importance(analysis, group, "l2")
            fallbacks += 1
    return scores, fallbacks
