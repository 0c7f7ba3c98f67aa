"""Repair of what a prune keeps: new values for the consumers of removed channels.

For a contraction ``y = W·x + b`` whose input channels ``R`` are removed and
``K`` kept, with calibration statistics of ``x`` (:mod:`.calibration`):

* **bias compensation** (FLAP): the removed channels' mean contribution is
  folded into the bias, ``b' = b + Σ_taps W[:, R]·E[x_R]``, exact when a
  removed channel is constant;
* **least squares** (ThiNet-style, ridge-regularised): the kept columns are
  re-fitted so that ``W'_K·x_K`` best reproduces ``W·x`` on the calibration
  data, ``W'_K = W·Σ[:, K]·(Σ[K, K] + λI)⁻¹`` with ``Σ`` the covariance of
  ``x`` and ``b' = b + W·E[x] − W'_K·E[x_K]`` when the consumer has a bias,
  else the uncentred moment ``E[x xᵀ]`` (the mean then enters the fit).
  ``λ = RIDGE · mean(diag Σ[K, K])``. For a k×k convolution the same
  channel map applies at every tap (border effects of padding ignored).

Where the removed channels were on an axis an RMSNorm normalises over (a
residual stream), the pruned norm divides by ``√(mean_K x²)`` instead of
``√(mean x²)``; its readers then see ``n_K`` scaled by ``√(mean x²/mean_K x²)``.
The **norm rescale** multiplies the norm's scale by the calibration estimate
``s = √(mean_{j∈K} E[n_j²])`` of that factor (``n = x/rms(x)`` before the
scale), which brings the readers' inputs back to what the refit above
assumes. It is ``≈ 1`` when the removed channels carried an average share of
the energy and larger when they carried less (always after a rotation,
:mod:`graphprune.rotation`).

Each solve depends only on the input statistics and the kept set, so it is
computed once per input tensor and applied to every consumer (q, k and v
share one). Weights read by more than one node (tied embeddings) are left
alone: a repair for one reader would be wrong for the other.

The result is full-size arrays (removed columns untouched); the emitter's
slicing is applied to them afterwards (:func:`sliced_values`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .activation_importance import contraction_weight
from .calibration import ChannelStats
from .rms_norms import rms_norms, scale_values

from .criteria import REPAIRS  # noqa: F401  (re-exported)
RIDGE = 1e-4


@dataclass
class RepairPlan:
    """New full-size values by constant name, and what was repaired or skipped and why."""

    values: dict[str, np.ndarray] = field(default_factory=dict)
    repaired: list[str] = field(default_factory=list)  # "weight (lsq)" / "bias (bias)" entries
    skipped: dict[str, str] = field(default_factory=dict)  # weight -> reason

    def to_dict(self) -> dict:
        return {"repaired": self.repaired, "skipped": self.skipped}


def bias_of(graph, table, c) -> tuple[str, float] | None:
    """The constant bias added to ``c``'s output along its channel axis, and the factor a
    weight change reaches it with (Gemm: ``alpha/beta``); None when there is none."""
    node = table.producers.get(c.anchor)
    if node is None:
        return None
    if node.op in ("Gemm", "Conv") and node.input(2) in graph.constants:
        bias = graph.constants[node.input(2)]
        if bias.ndim == 1 or (node.op == "Gemm" and bias.ndim == 2 and bias.shape[0] == 1):
            scale = float(node.attr("alpha", 1.0)) / float(node.attr("beta", 1.0)) if node.op == "Gemm" else 1.0
            return node.input(2), scale
        return None
    users = table.consumers.get(c.anchor, [])
    if node.op == "MatMul" and len(users) == 1 and users[0].op == "Add":
        other = next((t for t in users[0].inputs if t != c.anchor), "")
        bias = graph.constants.get(other)
        if bias is not None and bias.dtype.kind == "f" and bias.ndim >= 1 and \
                int(np.prod(bias.shape[:-1])) == 1:
            return other, 1.0
    return None


def _outputs_of(weight: np.ndarray, in_axis: int, out_axis: int | None, vector: np.ndarray) -> np.ndarray:
    """``Σ_taps W·v`` per output channel: ``v`` contracted on ``in_axis``, every other axis but
    ``out_axis`` summed (the taps of a kernel)."""
    moved = np.moveaxis(weight.astype(np.float64, copy=False), in_axis, -1) @ vector
    out = out_axis if out_axis < in_axis else out_axis - 1
    return np.moveaxis(moved, out, 0).reshape(moved.shape[out], -1).sum(axis=1)


def _least_squares_map(st: ChannelStats, kept: np.ndarray, centred: bool) -> np.ndarray:
    """``M = Σ[:, K]·(Σ[K, K] + λI)⁻¹`` (channels × kept): column map of the re-fit."""
    moment = st.moments(centred)
    inner = moment[np.ix_(kept, kept)]
    ridge = RIDGE * max(float(np.mean(np.diag(inner))), 1e-12)
    inner = inner + ridge * np.eye(len(kept))
    return np.linalg.solve(inner, moment[:, kept].T).T


def repair_inputs(analysis, plan, stats: dict) -> dict[tuple[str, int], int]:
    """``(tensor, axis) -> channels`` of every contraction input that lost channels and has
    statistics: where least squares needs a Gram matrix."""
    return {(c.tensor, c.axis): len(stats[(c.tensor, c.axis)].total) for c in analysis.table.contractions
            if plan.kept(c.dim) is not None and (c.tensor, c.axis) in stats}


def plan_repair(analysis, plan, stats: dict[tuple[str, int], ChannelStats], mode: str) -> RepairPlan:
    """New values for every consumer of a removed channel (see the module docstring)."""
    result = RepairPlan()
    if mode == "none":
        return result
    graph, table = analysis.graph, analysis.table
    maps: dict[tuple, np.ndarray] = {}
    for c in table.contractions:
        kept = plan.kept(c.dim)
        if kept is None:
            continue
        found = contraction_weight(graph, table.producers, c)
        label = c.weight or c.node
        if found is None:
            result.skipped[label] = "no constant weight with a single input-channel axis"
            continue
        name, in_axis, out_axis = found
        if len(table.consumers.get(name, [])) != 1:
            result.skipped[name] = "the weight is shared by several nodes (tied)"
            continue
        st = stats.get((c.tensor, c.axis))
        if st is None or st.count == 0:
            result.skipped[name] = "no calibration statistics reached its input"
            continue
        bias = bias_of(graph, table, c)
        if out_axis is None and (bias is not None or mode == "bias"):
            result.skipped[name] = "no output-channel axis to fold a bias along"
            continue
        weight = graph.constants[name]
        removed = np.setdiff1d(np.arange(weight.shape[in_axis]), kept)
        if mode == "lsq" and st.gram is not None:
            key = (c.tensor, c.axis, bias is not None)
            if key not in maps:
                maps[key] = _least_squares_map(st, kept, centred=bias is not None)
            column_map = maps[key]
            refit = np.moveaxis(np.moveaxis(weight.astype(np.float64), in_axis, -1) @ column_map, -1, in_axis)
            new = weight.astype(np.float64, copy=True)
            index = [slice(None)] * weight.ndim
            index[in_axis] = kept
            new[tuple(index)] = refit
            result.values[name] = new.astype(weight.dtype)
            result.repaired.append(f"{name} (least squares)")
            if bias is not None:
                mean_kept = np.zeros_like(st.mean)
                mean_kept[kept] = st.mean[kept]
                shift = _outputs_of(weight, in_axis, out_axis, st.mean) - \
                    _outputs_of(new, in_axis, out_axis, mean_kept)
                _add_bias(graph, result, bias, shift)
        else:
            if bias is None:
                result.skipped[name] = "no bias to fold the removed channels' mean into"
                continue
            mean_removed = np.zeros_like(st.mean)
            mean_removed[removed] = st.mean[removed]
            _add_bias(graph, result, bias, _outputs_of(weight, in_axis, out_axis, mean_removed))
            result.repaired.append(f"{name} (bias compensation)")
    _rescale_norms(analysis, plan, stats, result)
    return result


def _rescale_norms(analysis, plan, stats, result: RepairPlan) -> None:
    """The norm rescale of every RMSNorm over a pruned axis (see the module docstring)."""
    graph, table = analysis.graph, analysis.table
    for gid, removed in plan.removed.items():
        if not removed.any() or not analysis.groups[gid].approximate:
            continue
        for norm in rms_norms(analysis, gid):
            did = table.ids.get((norm.scale, 0)) if norm.scale else None
            kept = plan.kept(did) if did is not None else None
            st = stats.get((norm.readers[0].tensor, norm.readers[0].axis))
            if kept is None or st is None or st.count == 0:
                continue
            g = scale_values(graph, norm, len(st.total))
            live = kept[np.abs(g[kept]) > 1e-12]
            if not len(live):
                continue
            factor = float(np.sqrt(np.mean(st.second_moment[live] / g[live] ** 2)))
            result.values[norm.scale] = (g * factor).astype(graph.constants[norm.scale].dtype)
            result.repaired.append(f"{norm.scale} (norm rescale x{factor:.3f})")


def _add_bias(graph, result: RepairPlan, bias: tuple[str, float], shift: np.ndarray) -> None:
    name, scale = bias
    current = result.values.get(name, graph.constants[name])
    updated = current.astype(np.float64) + (scale * shift).reshape(current.shape)
    result.values[name] = updated.astype(current.dtype)


def sliced_values(repair: RepairPlan, sliced: dict[str, dict[int, np.ndarray]]) -> dict[str, np.ndarray]:
    """The repaired arrays cut like the emitter cut their constants (``{name: {axis: kept}}``)."""
    out = {}
    for name, value in repair.values.items():
        for axis, kept in sorted(sliced.get(name, {}).items()):
            value = np.take(value, kept, axis=axis)
        out[name] = np.ascontiguousarray(value)
    return out
