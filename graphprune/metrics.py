"""Parameter and MAC counts of a graph, per node and in total.

MACs count the multiply-accumulates of contractions (Conv, ConvTranspose,
Gemm, MatMul, the torch path's GroupedMatMul), the ops that dominate cost and that pruning shrinks;
channel-wise ops are not counted. Symbolic sizes are evaluated at
``Graph.symbol_values`` (the declared ``--input-shape`` or the first shape
the oracle tries: batch 1, sequence 16, images 224×224); a size that stays
unknown (a data-dependent count) counts as 1, and no count is ever negative.
"""

from __future__ import annotations

import numpy as np

from .ir import Graph, Node
from .symbolic import evaluate


def _size(graph: Graph, d) -> int:
    return max(evaluate(d, graph.symbol_values, default=1) or 0, 0)


def node_macs(graph: Graph, node: Node, shape=None) -> int:
    """MACs of ``node``; ``shape(tensor)`` overrides the graph's shapes (a plan's kept sizes)."""
    def _numel(shape) -> int:
        return int(np.prod([_size(graph, d) for d in shape], dtype=np.int64)) if shape else 0

    shape = shape or graph.shape
    if node.op == "Conv":
        w, y = shape(node.input(1)), shape(node.outputs[0])
        return _numel(y) * _numel(w[1:]) if w and y else 0
    if node.op == "ConvTranspose":
        x, w = shape(node.input(0)), shape(node.input(1))
        return _numel(x) * _numel(w[1:]) if x and w else 0
    if node.op == "Gemm":
        a, y = shape(node.input(0)), shape(node.outputs[0])
        if not a or not y:
            return 0
        k = a[0] if node.attr("transA", 0) else a[1]
        return _numel(y) * _size(graph, k)
    if node.op in ("MatMul", "GroupedMatMul"):  # GroupedMatMul [N, K] × [E, K, M]: N·K·M
        a, y = shape(node.input(0)), shape(node.outputs[0])
        if not a or y is None:
            return 0
        k = a[-1]
        return max(_numel(y), 1) * _size(graph, k)
    return 0


def node_params(graph: Graph, node: Node) -> int:
    return sum(int(graph.constants[t].size) for t in node.inputs
               if t in graph.constants and graph.constants[t].dtype.kind == "f"
               and graph.constants[t].ndim >= 1)


def total_macs(graph: Graph) -> int:
    return sum(node_macs(graph, n) for n in graph.nodes)


def layer_table(graph: Graph) -> list[dict]:
    """Per-node params and MACs for nodes that have either."""
    rows = []
    for n in graph.nodes:
        params, macs = node_params(graph, n), node_macs(graph, n)
        if params or macs:
            rows.append({"node": n.name, "op": n.op, "params": params, "macs": macs})
    return rows
