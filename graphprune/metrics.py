"""Parameter and MAC counts of a graph, per node and in total.

MACs count the multiply-accumulates of contractions (Conv, ConvTranspose,
Gemm, MatMul), the ops that dominate cost and that pruning shrinks;
channel-wise ops are not counted. Symbolic sizes (batch) count as 1.
"""

from __future__ import annotations

import numpy as np

from .ir import Graph, Node


def _numel(shape) -> int:
    return int(np.prod([d if isinstance(d, int) else 1 for d in shape])) if shape else 0


def node_macs(graph: Graph, node: Node) -> int:
    shape = graph.shape
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
        return _numel(y) * (k if isinstance(k, int) else 1)
    if node.op == "MatMul":
        a, y = shape(node.input(0)), shape(node.outputs[0])
        if not a or y is None:
            return 0
        k = a[-1]
        return max(_numel(y), 1) * (k if isinstance(k, int) else 1)
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
