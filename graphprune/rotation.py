"""Rotating a residual stream into its principal axes before pruning it (SliceGPT's idea).

In a pre-norm transformer the residual stream ``x`` (the hidden size) is
written by contractions (embedding rows, attention and MLP output
projections), added up, and read only through RMSNorms into contractions.
For an orthogonal ``Q`` the model computes the same function on the rotated
stream ``x' = Qᵀx`` once

* every RMSNorm scale ``g`` is folded into its readers (``W ← W·diag(g)``,
  ``g ← 1``): ``x / rms(x)`` commutes with ``Q`` because ``‖Qᵀx‖ = ‖x‖``,
  the per-channel ``g`` does not;
* every constant axis of the stream's group is contracted with ``Q``:
  writers ``W ← QᵀW`` (and their biases), readers ``W ← W·Q``, embedding
  tables ``E ← E·Q`` — in index form one rule, ``A'[…, k, …] = Σ_j A[…, j, …]·Q[j, k]``.

Choosing ``Q``'s columns as the eigenvectors of ``C = Σ_norms E[n nᵀ]``
(the second moments of the normalised stream at every norm, from calibration
data) puts the stream's energy into few channels, so the ordinary
channel pruning that follows removes directions that carry little instead of
whole hidden units that all carry some. One rotation for the whole stream
keeps the architecture unchanged (SliceGPT's per-layer rotations would add a
matrix to every residual connection).

A reader whose weight is also an embedding table (tied input/output
embeddings) cannot take the final norm's scale without changing the
embedding: it gets a private copy (``untied``), which adds its parameters.
This module computes the new values; applying them to a module and checking
that the rotated model still computes the same function is
:mod:`graphprune.torch_rotation`'s job.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .activation_importance import contraction_weight
from .repair import bias_of
from .rms_norms import passes_channels, rms_norms, scale_values


@dataclass
class Rotation:
    """New full-size values for one stream group, by constant name."""

    group: int
    channels: int
    q: np.ndarray
    values: dict[str, np.ndarray] = field(default_factory=dict)
    private: dict[str, np.ndarray] = field(default_factory=dict)  # tied weight -> its contraction reader's copy
    norms: list[str] = field(default_factory=list)  # folded scales (now ones)
    explained: float = 0.0  # share of C's trace in the leading 3/4 of the channels

    def to_dict(self) -> dict:
        return {"channels": self.channels, "folded_norm_scales": len(self.norms), "untied": sorted(self.private),
                "energy_in_leading_three_quarters": round(self.explained, 4)}


def _contract(array: np.ndarray, axis: int, matrix: np.ndarray) -> np.ndarray:
    """``A'[…, k, …] = Σ_j A[…, j, …]·M[j, k]`` along ``axis``."""
    moved = np.moveaxis(array.astype(np.float64, copy=False), axis, -1) @ matrix
    return np.moveaxis(moved, -1, axis)


def _feeds_only(graph, table, tensor: str, axis: int, nodes: set[str]) -> bool:
    """Whether every use of ``tensor`` (seen through channel-preserving ops) is one of ``nodes``."""
    for user in table.consumers.get(tensor, []):
        if user.name in nodes:
            continue
        if user.inputs[0] != tensor or not passes_channels(graph, user, axis) or \
                not all(_feeds_only(graph, table, o, axis, nodes) for o in user.outputs):
            return False
    return True


def plan_rotation(analysis, group_id: int, stats: dict) -> Rotation | str:
    """The rotation of one stream group, or why it cannot be rotated (see the module docstring)."""
    graph, table = analysis.graph, analysis.table
    group = analysis.groups[group_id]
    channels = group.size
    norms = rms_norms(analysis, group_id)
    if not norms:
        return "no RMSNorm reads it"
    contractions = [c for c in table.contractions if int(analysis.group_of[c.dim]) == group_id]
    weights: dict[str, list] = {}  # contraction weight -> [(contraction, in_axis or out_axis)]
    allowed: set[str] = set()
    for c in table.contractions:
        found = contraction_weight(graph, table.producers, c)
        if found is not None:
            weights.setdefault(found[0], []).append((c, found[1]))
            allowed.add(found[0])
        bias = bias_of(graph, table, c)
        if bias is not None:
            allowed.add(bias[0])
    allowed |= {n.inputs[0] for n in graph.nodes if n.op == "Gather" and n.inputs[0] in graph.constants}
    scales = {n.scale for n in norms if n.scale}
    for d in analysis.constant_dims(group):
        name = table.keys[d][0]
        if name not in allowed and name not in scales:
            return f"'{name}' is on the stream but is neither a contraction weight, a bias nor a norm scale"
        if graph.constants[name].dtype.kind != "f":
            return f"'{name}' is not a float constant"
    folded: dict[str, np.ndarray] = {}  # weight -> its values with the norm scale folded in
    private: set[str] = set()
    moments = []
    for norm in norms:
        reader_nodes = {c.node for c in norm.readers}
        if not _feeds_only(graph, table, norm.scaled, norm.axis, reader_nodes):
            return f"the normalised '{norm.scaled}' is used by more than its contractions"
        g = scale_values(graph, norm, channels)
        st = stats.get((norm.readers[0].tensor, norm.readers[0].axis))
        if st is None or st.gram is None or st.count == 0:
            return f"no calibration statistics reached '{norm.scaled}'"
        safe = np.where(np.abs(g) > 1e-12, g, 1.0)
        moments.append(st.moments(centred=False) / np.outer(safe, safe))
        for c in norm.readers:
            found = contraction_weight(graph, table.producers, c)
            if found is None:
                return f"the reader '{c.node}' of '{norm.scaled}' has no constant weight"
            name, in_axis, _ = found
            if name in folded:
                return f"'{name}' reads two norms"
            users = [u for u in table.consumers.get(name, [])]
            if len(weights.get(name, [])) > 1:
                return f"'{name}' is read by several contractions"
            if len(users) > 1:
                private.add(name)  # shared with a non-contraction use (an embedding table)
            shape = [1] * graph.constants[name].ndim
            shape[in_axis] = channels
            folded[name] = graph.constants[name].astype(np.float64) * g.reshape(shape)
    for c in contractions:  # contractions reading the raw stream
        if not any(c in n.readers for n in norms):
            st = stats.get((c.tensor, c.axis))
            if st is None or st.gram is None or st.count == 0:
                return f"no calibration statistics reached '{c.tensor}'"
            moments.append(st.moments(centred=False))
    total = sum(m / max(np.trace(m) / channels, 1e-30) for m in moments)
    eigenvalues, vectors = np.linalg.eigh((total + total.T) / 2)
    order = np.argsort(eigenvalues)[::-1]
    q = vectors[:, order]
    spectrum = np.maximum(eigenvalues[order], 0)
    rotation = Rotation(group_id, channels, q, norms=sorted(scales),
                        explained=float(spectrum[: (3 * channels) // 4].sum() / max(spectrum.sum(), 1e-30)))
    current: dict[str, np.ndarray] = {}
    for d in analysis.constant_dims(group):  # a stream-to-stream weight has both axes here
        name, axis = table.keys[d]
        original = graph.constants[name]
        if name in scales:
            rotation.values[name] = np.ones_like(original)
            continue
        if name in private:
            rotation.private[name] = _contract(rotation.private.get(name, folded[name]), axis, q)
            current[name] = _contract(current.get(name, original), axis, q)
        else:
            current[name] = _contract(current.get(name, folded.get(name, original)), axis, q)
    rotation.values.update({k: v.astype(graph.constants[k].dtype) for k, v in current.items()})
    rotation.private = {k: v.astype(graph.constants[k].dtype) for k, v in rotation.private.items()}
    return rotation


def stream_groups(analysis) -> list[int]:
    """Prunable groups normalised by an RMSNorm: the candidates for a rotation."""
    return [g.id for g in analysis.prunable_groups() if g.approximate and rms_norms(analysis, g.id)]


ROTATION_TOLERANCE = 1e-3  # ‖y' − y‖/‖y‖: float32 rounding through a few dozen rotated layers stays far below
NO_STREAM = "no prunable stream is read through an RMSNorm"


def stream_inputs(analysis, groups: list[int]) -> dict[tuple[str, int], int]:
    """``(tensor, axis) -> channels`` of every contraction reading one of ``groups``: where the
    rotation needs Gram matrices."""
    table = analysis.table
    return {(c.tensor, c.axis): table.sizes[c.dim] for c in table.contractions
            if int(analysis.group_of[c.dim]) in groups}


def rotate_groups(analysis, groups: list[int], stats: dict, apply, output_change) -> dict:
    """Plan, apply and check each group's rotation; the report of what was rotated or skipped.

    ``apply(rotation)`` writes it into the model and returns its undo steps (or why it
    cannot); ``output_change()`` is the relative change of the model's outputs since before
    the first rotation. A rotation that changes them by more than ``ROTATION_TOLERANCE`` is
    undone: it was meant to be lossless.
    """
    rotated, skipped = [], {}
    for gid in groups:
        label = analysis.describe(analysis.groups[gid])
        rotation = plan_rotation(analysis, gid, stats)
        undo = apply(rotation) if not isinstance(rotation, str) else rotation
        if isinstance(undo, str):
            skipped[label] = undo
            continue
        error = output_change()
        if error > ROTATION_TOLERANCE:
            for step in reversed(undo):
                step()
            skipped[label] = f"the rotated model's outputs differ by {error:.1e} (relative)"
            continue
        rotated.append({"group": label, "output_change": float(f"{error:.2e}"), **rotation.to_dict()})
    return {"rotated": rotated, "skipped": skipped}
