"""dce: remove nodes nobody reads and constants nobody uses (lossless).

A node is live when one of its outputs is a graph output or is read by a live
node (as an input or, through a subgraph, as an implicit input); everything
else is dead and goes, to a fixed point, so whole dead chains disappear.
Constants (initializers and former ``Constant`` nodes) that no remaining node
reads and that are not graph outputs go too. ``Graph.remove_unused`` does the
work; this pass counts and names what it removed.

Deliberately exact and simple:

* a node with one used output keeps all its outputs (dropping an optional
  output such as a ``Dropout`` mask or ``MaxPool`` indices would change the
  op's signature and is op-specific; ``remove-identities`` handles Dropout);
* graph inputs stay even when unused: they are the model's interface, and a
  caller feeding them must not break;
* initializers that are also graph inputs (overridable) are kept as inputs
  by the emitter only while something reads them; removing an unused one is
  what any ONNX optimizer does and changes no output.

ONNX ops have no side effects, so removing an unread node never changes what
the model computes.
"""

from __future__ import annotations

from dataclasses import dataclass

from graphprune.pipeline import Pass, register

_LISTED = 50  # names listed in the report; counts are always complete


@register
@dataclass
class DeadCodeElimination(Pass):
    """Drop unread nodes and unused constants; report how many of each and which."""

    name = "dce"
    summary = "remove nodes whose outputs are unused and unused constants"

    def apply(self, graph) -> dict:
        nodes_before = {id(n): n for n in graph.nodes}
        sizes = {name: int(value.nbytes) for name, value in graph.constants.items()}
        removed_nodes = graph.remove_unused()
        alive = {id(n) for n in graph.nodes}
        dead_nodes = [n for key, n in nodes_before.items() if key not in alive]
        dead_constants = sorted(set(sizes) - set(graph.constants))
        for name in dead_constants:
            graph.folded.pop(name, None)
        freed = sum(sizes[name] for name in dead_constants)
        by_op: dict[str, int] = {}
        for n in dead_nodes:
            by_op[n.op] = by_op.get(n.op, 0) + 1
        return {
            "changed": removed_nodes + len(dead_constants),
            "nodes_removed": removed_nodes,
            "nodes_removed_by_op": dict(sorted(by_op.items())),
            "constants_removed": len(dead_constants),
            "bytes_freed": freed,
            "removed_nodes": [n.name for n in dead_nodes[:_LISTED]],
            "removed_constants": dead_constants[:_LISTED],
        }
