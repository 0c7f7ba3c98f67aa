"""Apply a plan to the IR: run each rule's size hook, then slice constants.

Hooks run first, while shapes and constants still describe the original
model (they need old sizes, e.g. channels per conv group). Then every
constant with a changed axis is sliced with ``np.take`` along that axis, once
per axis. Constants rewritten by a hook are cloned under a new name, since
exporters share small shape constants between unrelated nodes.
"""

from __future__ import annotations

import numpy as np

from ..ir import Graph, Node
from ..weights import release
from .rules import rule_for


class EmitContext:
    """What a rule's ``emit`` hook sees: the node, old sizes and kept indices."""

    def __init__(self, graph: Graph, node: Node, plan, producers: dict[str, Node]):
        self.graph = graph
        self.node = node
        self.plan = plan
        self.producers = producers
        self._ids = plan.analysis.table.ids

    def for_node(self, node: Node) -> "EmitContext":
        """The same context for another node (a hook that rewrites its inputs' producer)."""
        return EmitContext(self.graph, node, self.plan, self.producers)

    def kept(self, tensor: str, axis: int) -> np.ndarray | None:
        did = self._ids.get((tensor, axis))
        return None if did is None else self.plan.kept(did)

    def changed(self, tensor: str, axis: int) -> bool:
        return self.kept(tensor, axis) is not None

    def old_size(self, tensor: str, axis: int) -> int:
        return int(self.graph.shape(tensor)[axis])

    def new_size(self, tensor: str, axis: int) -> int:
        kept = self.kept(tensor, axis)
        return self.old_size(tensor, axis) if kept is None else len(kept)

    def replace_constant_input(self, index: int, value: np.ndarray) -> None:
        old = self.node.inputs[index]
        self.node.inputs[index] = self.graph.add_constant(f"{old}_pruned", value)

    def add_constant_input(self, index: int, value: np.ndarray) -> None:
        while len(self.node.inputs) <= index:
            self.node.inputs.append("")
        self.node.inputs[index] = self.graph.add_constant(f"{self.node.name}_input{index}", value)


def apply_plan(graph: Graph, plan) -> dict[str, dict[int, np.ndarray]]:
    """Shrink ``graph`` in place. Returns the kept indices of every sliced constant."""
    producers = graph.producers()
    unsupported = plan.analysis.table.unsupported
    for node in list(graph.nodes):  # hooks may insert nodes (private copies of shape vectors)
        rule = rule_for(node.op, node.domain)
        if rule is not None and rule.emit is not None and node.name not in unsupported:
            rule.emit(EmitContext(graph, node, plan, producers))
    table = plan.analysis.table
    sliced: dict[str, dict[int, np.ndarray]] = {}
    for did in plan.changed_dims():
        tensor, axis = table.keys[did]
        if axis >= 0 and tensor in graph.constants:
            sliced.setdefault(tensor, {})[axis] = plan.kept(did)
    for tensor, axes in sliced.items():
        source = value = graph.constants[tensor]
        for axis, kept in axes.items():
            value = np.take(value, kept, axis=axis)
        graph.constants[tensor] = graph.store(np.ascontiguousarray(value))
        release(source)  # a mapped weight's pages leave memory once sliced
    changed = {table.keys[d] for d in plan.changed_dims()}
    for name, info in graph.tensors.items():  # stale sizes are re-inferred by the emitter
        if info.shape and any((name, a) in changed for a in range(len(info.shape))):
            info.shape = None
    return sliced
