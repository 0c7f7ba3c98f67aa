"""Channel importance: one score per channel of a group.

A channel's score aggregates every parameter slice it owns, in every tensor
of the group: producer rows, biases, norm scales, consumer columns. For each
parameter dim the per-element norm over the other axes is computed in one
numpy reduction and scattered onto channels with ``bincount``:

* ``l1``: ``Σ |w|``
* ``l2``: ``sqrt(Σ w²)``

Running statistics (BatchNorm mean/var) are not evidence of importance and
are skipped.

The PyTorch path adds two criteria that need the live module
(:mod:`graphprune.torch_importance`): ``taylor`` (first order, ``Σ |w·∂L/∂w|``)
and ``bn_scale`` (network slimming, ``|γ|`` of the norm layers in the group).
Both reuse this code with per-parameter ``values`` in place of the weights.
"""

from __future__ import annotations

import numpy as np

from .channels import ChannelAnalysis, ChannelGroup
from .errors import InputError
from .weights import release
from .progress import step

from .criteria import CRITERIA, TORCH_CRITERIA  # noqa: F401  (re-exported)


CHUNK_ELEMENTS = 1 << 24  # elements widened to float32 at a time for half-precision weights


def _per_slice(w: np.ndarray, axis: int, criterion: str) -> np.ndarray:
    """Σ|w| or Σw² over every axis but ``axis``, as float64.

    One fused einsum, no squared copy of ``w``; float32 sums are ample for
    ranking and several times faster than float64 accumulation. Half-precision
    weights (float16, bfloat16) are widened to float32 a bounded slab at a time:
    numpy sums float16 in float16, which is 20× slower and overflows to inf
    (Σw² of 4096 weights of magnitude 4 already exceeds float16's 65504).
    """
    if w.dtype in (np.float32, np.float64) or w.ndim < 2:
        return _sum_over_others(np.asarray(w, dtype=np.float32) if w.dtype not in (np.float32, np.float64)
                                else w, axis, criterion)
    along = 0 if axis != 0 else 1  # slabs along an axis that is summed over
    step = max(1, CHUNK_ELEMENTS // max(1, w.size // w.shape[along]))
    out = np.zeros(w.shape[axis], dtype=np.float64)
    index = [slice(None)] * w.ndim
    for start in range(0, w.shape[along], step):
        index[along] = slice(start, start + step)
        out += _sum_over_others(w[tuple(index)].astype(np.float32), axis, criterion)
    return out


def _sum_over_others(w: np.ndarray, axis: int, criterion: str) -> np.ndarray:
    letters = "abcdefghijklmnopqrstuvwxyz"[:w.ndim]
    if criterion == "l2":
        out = np.einsum(f"{letters},{letters}->{letters[axis]}", w, w)
    else:
        out = np.einsum(f"{letters}->{letters[axis]}", np.abs(w))
    return out.astype(np.float64)


def group_importance(analysis: ChannelAnalysis, group: ChannelGroup, criterion: str,
                     values: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """Scores of ``group``'s channels; ``values`` (name -> array) replaces the weights
    and restricts the evidence to the tensors it names."""
    if criterion not in CRITERIA:
        raise InputError(f"unknown importance '{criterion}': choose one of {', '.join(CRITERIA)}")
    score = np.zeros(group.size, dtype=np.float64)
    for d in analysis.constant_dims(group):
        if d in analysis.table.stats:
            continue
        tensor, axis = analysis.table.keys[d]
        if values is not None and tensor not in values:
            continue
        w = analysis.graph.constants[tensor] if values is None else values[tensor]
        if w.dtype.kind != "f":
            continue
        score += np.bincount(group.channels[d], weights=_per_slice(w, axis, criterion),
                             minlength=group.size)
        release(w)  # a mapped weight's pages leave memory once read
    return np.sqrt(score) if criterion == "l2" else score


def importance(analysis: ChannelAnalysis, criterion: str = "l2",
               values: dict[str, np.ndarray] | None = None) -> dict[int, np.ndarray]:
    """Scores of every prunable group, keyed by group id."""
    if criterion in TORCH_CRITERIA:
        raise InputError(f"importance '{criterion}' needs the PyTorch model: prune the nn.Module, "
                         "not its ONNX export")
    groups = analysis.prunable_groups()
    scores = {}
    with step(f"importance ({criterion})", total=len(groups)) as progress:
        for g in groups:
            scores[g.id] = group_importance(analysis, g, criterion, values)
            progress.advance()
    return scores
