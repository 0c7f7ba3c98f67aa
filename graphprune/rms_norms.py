"""RMS normalisations in the IR: which contractions read ``g ⊙ x / rms(x)``.

A pre-norm transformer's residual stream ``x`` is read through RMSNorms,
``n = x / √(mean_j x_j² + ε)``, scaled by a per-channel ``g`` and fed to
linears (q/k/v, gate/up, the LM head). Two things need to know where those
are: the residual-stream rotation (:mod:`graphprune.rotation`), which folds
``g`` into the readers so the norm commutes with an orthogonal map, and the
norm rescale of :mod:`graphprune.repair`, which corrects the statistic the
pruned model takes over fewer channels.

Recognised: ``Mul(g, Mul|Div(x, f(ReduceMean(Pow(x, 2) | Mul(x, x)))))``
with ``Identity``/``Cast`` anywhere in between, ``f`` any chain of
elementwise unary/eps ops (Add, Sqrt, Reciprocal, ...) and ``g`` optional.
That is what both tracers produce for Hugging Face's ``*RMSNorm`` and
``torch.nn.RMSNorm``'s decomposition. Anything else is not reported, which
only means nothing is folded or rescaled there.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .ir import Graph, Node

PASS_THROUGH = ("Identity", "Cast")


def passes_channels(graph: Graph, node: Node, axis: int) -> bool:
    """Whether ``node`` hands its first input on with channel ``axis`` untouched and in place:
    Identity, Cast, or a Slice over other axes (the LM head's last-token slice)."""
    if node.op in PASS_THROUGH:
        return True
    if node.op != "Slice":
        return False
    rank = len(graph.shape(node.inputs[0]) or ())
    axes = graph.constants.get(node.input(3))
    if not rank or axes is None:
        return False
    return axis % rank not in {int(a) % rank for a in np.ravel(axes)}
STATISTIC_CHAIN = ("Add", "Sqrt", "Reciprocal", "Identity", "Cast", "Pow")


@dataclass
class RmsNorm:
    """One RMSNorm: its input stream, its scale constant (if any) and the contractions reading it."""

    stream: str  # the normalised tensor x
    axis: int
    scale: str | None  # constant g (1-D, one entry per channel), None when unscaled
    scaled: str  # the tensor g ⊙ n (n itself when unscaled)
    readers: list = field(default_factory=list)  # Contraction entries whose input is ``scaled``


def _through(producers: dict[str, Node], tensor: str, graph: Graph | None = None, axis: int = -1) -> str:
    """``tensor`` seen back through Identity/Cast (and, given the graph, channel-preserving Slices)."""
    while (node := producers.get(tensor)) is not None and (
            node.op in PASS_THROUGH or (graph is not None and passes_channels(graph, node, axis))):
        tensor = node.inputs[0]
    return tensor


def _is_square_of(producers, tensor: str, x: str) -> bool:
    node = producers.get(_through(producers, tensor))
    if node is None:
        return False
    if node.op == "Mul":
        return all(_through(producers, i) == x for i in node.inputs[:2])
    return node.op == "Pow" and _through(producers, node.inputs[0]) == x


def _statistic_of(graph: Graph, producers, tensor: str, x: str, axis: int) -> bool:
    """Whether ``tensor`` is ``f(mean over axis of x²)`` for a unary/eps chain ``f``."""
    rank = len(graph.shape(x) or ())
    for _ in range(8):  # the chain is short: add ε, sqrt, reciprocal, casts
        node = producers.get(tensor)
        if node is None:
            return False
        if node.op == "ReduceMean":
            axes = node.attr("axes")
            if axes is None and len(node.inputs) > 1 and node.inputs[1] in graph.constants:
                axes = np.ravel(graph.constants[node.inputs[1]]).tolist()
            axes = [int(a) % rank for a in np.ravel(axes if axes is not None else [])] if rank else []
            return axes == [axis] and _is_square_of(producers, node.inputs[0], x)
        if node.op not in STATISTIC_CHAIN:
            return False
        varying = [i for i in node.inputs if i and i not in graph.constants]
        if len(varying) != 1:
            return False
        tensor = varying[0]
    return False


def _normalised_input(graph: Graph, producers, tensor: str, axis: int) -> str | None:
    """The stream ``x`` when ``tensor`` is ``x / rms(x)`` over ``axis`` (Mul by rsqrt or Div)."""
    node = producers.get(_through(producers, tensor))
    if node is None or node.op not in ("Mul", "Div"):
        return None
    a, b = node.inputs[:2]
    # x · rsqrt(mean x² + ε) in either order, or x / √(mean x² + ε)
    for x, statistic in ([(a, b), (b, a)] if node.op == "Mul" else [(a, b)]):
        x = _through(producers, x)
        if _statistic_of(graph, producers, statistic, x, axis):
            return x
    return None


def _scale_of(graph: Graph, producers, tensor: str, channels: int) -> tuple[str | None, str]:
    """``(g, n)`` when ``tensor`` is ``g ⊙ n`` with ``g`` a 1-D float constant, else ``(None, tensor)``."""
    node = producers.get(_through(producers, tensor))
    if node is not None and node.op == "Mul":
        for i, j in ((0, 1), (1, 0)):
            g = graph.constants.get(node.inputs[i])
            if g is not None and g.dtype.kind == "f" and g.ndim == 1 and g.shape[0] == channels:
                return node.inputs[i], node.inputs[j]
    return None, tensor


def rms_norms(analysis, group_id: int) -> list[RmsNorm]:
    """Every RMSNorm whose normalised axis is in group ``group_id``, with its reading contractions."""
    graph, table = analysis.graph, analysis.table
    producers = table.producers
    found: dict[str, RmsNorm] = {}
    for c in table.contractions:
        if int(analysis.group_of[c.dim]) != group_id or not isinstance(table.sizes[c.dim], int):
            continue
        scaled = _through(producers, c.tensor, graph, c.axis)
        scale, normalised = _scale_of(graph, producers, scaled, table.sizes[c.dim])
        stream = _normalised_input(graph, producers, normalised, c.axis)
        if stream is None:
            continue
        norm = found.setdefault(scaled, RmsNorm(stream, c.axis, scale, scaled))
        norm.readers.append(c)
    return list(found.values())


def scale_values(graph: Graph, norm: RmsNorm, channels: int) -> np.ndarray:
    """``g`` as float64 (ones when the norm is unscaled)."""
    if norm.scale is None:
        return np.ones(channels)
    return graph.constants[norm.scale].astype(np.float64)
