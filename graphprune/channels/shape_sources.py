"""Where the entries of a run-time shape vector come from.

Exporters with dynamic axes build reshape targets at run time:
``Concat(Unsqueeze(Gather(Shape(x), 0)), [-1], [H], [D])``. Such a target can
still be rewritten when every entry is either a constant piece of the
``Concat`` (which the emitter can replace) or the run-time size of some axis
of a tensor (which stays right as long as that axis is not pruned — the
Reshape rule pins it).

``resolve_target`` returns one :class:`Entry` per target position, or None
when the vector is built any other way (then the Reshape stays pinned).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..ir import Graph, Node


@dataclass(frozen=True)
class Entry:
    value: int | None = None          # a constant entry
    piece: tuple[int, int] | None = None  # (Concat input index, offset in it) of a constant entry
    size_of: tuple[str, int] | None = None  # the run-time size of (tensor, axis)


def _scalar_const(graph: Graph, name: str) -> int | None:
    value = graph.constants.get(name)
    if value is None or value.size != 1:
        return None
    return int(value.reshape(-1)[0])


def _runtime_size(graph: Graph, producers: dict[str, Node], name: str) -> tuple[str, int] | None:
    """``name`` holds the size of one axis of a tensor: the (tensor, axis), else None."""
    node = producers.get(name)
    while node is not None and node.op in ("Unsqueeze", "Squeeze", "Cast", "Reshape", "Identity"):
        node = producers.get(node.input(0))
    if node is None:
        return None
    if node.op == "Gather" and node.attr("axis", 0) == 0:
        shape_node = producers.get(node.input(0))
        index = _scalar_const(graph, node.input(1))
        if shape_node is None or shape_node.op != "Shape" or index is None:
            return None
        source = shape_node.input(0)
        rank = len(graph.shape(source) or ())
        start = shape_node.attr("start", 0)
        start = start + rank if start < 0 else start
        axis = start + (index + rank if index < 0 else index)
        return (source, axis) if 0 <= axis < rank else None
    return None


def resolve_target(graph: Graph, producers: dict[str, Node], name: str) -> tuple[Node, list[Entry]] | None:
    """The Concat building target ``name`` and its entries, or None if unresolvable."""
    concat = producers.get(name)
    if concat is None or concat.op != "Concat":
        return None
    entries: list[Entry] = []
    for i, piece in enumerate(concat.inputs):
        value = graph.constants.get(piece)
        if value is not None:
            entries.extend(Entry(value=int(v), piece=(i, j)) for j, v in enumerate(np.asarray(value).reshape(-1)))
            continue
        size_of = _runtime_size(graph, producers, piece)
        if size_of is None or (graph.shape(piece) not in ((1,), ())):
            return None
        entries.append(Entry(size_of=size_of))
    return concat, entries
