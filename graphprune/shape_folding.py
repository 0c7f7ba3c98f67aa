"""Evaluate shape arithmetic and constant subgraphs into constants (lossless).

Exporters often compute reshape targets at run time (``Shape → Gather →
Concat → Reshape``) and transpose weights with ops (``Transpose(W)``). When the
shapes involved are static, those values are constants; folding them lets the
channel rules read reshape targets and weights directly.

Folded values that came from the *size* of a tensor are remembered in
``Graph.folded`` (constant name → the tensors whose sizes it read), because
pruning that tensor changes the value: the channel analysis only allows such a
constant where the emitter rewrites it (a ``Reshape`` target) and pins the
source otherwise.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from .ir import Graph, Node

_NONDETERMINISTIC = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
                     "Multinomial", "Bernoulli"}
_MIN_FOLD_CAP = 1 << 16  # elements; larger outputs fold only if no bigger than their inputs


def _static(shape) -> bool:
    return shape is not None and all(isinstance(d, int) for d in shape)


def _shape_value(node: Node, shape: tuple[int, ...]) -> np.ndarray:
    rank = len(shape)
    start = node.attr("start", 0)
    end = node.attr("end", rank)
    start = min(max(start + rank if start < 0 else start, 0), rank)
    end = min(max(end + rank if end < 0 else end, 0), rank)
    return np.array(shape[start:end], dtype=np.int64)


def evaluate_node(node: Node, values: list[np.ndarray | None], opset: int) -> list[np.ndarray]:
    """Run one node on constant inputs with ONNX's reference implementation."""
    names = [f"in{i}" if v is not None else "" for i, v in enumerate(values)]
    outs = [f"out{i}" for i in range(len(node.outputs))]
    proto = helper.make_node(node.op, names, outs, domain=node.domain or None)
    for name, value in node.attrs.items():
        proto.attribute.append(node.raw_attrs.get(name) or helper.make_attribute(name, value))
    inits = [numpy_helper.from_array(np.asarray(v), n) for n, v in zip(names, values) if n]
    graph = helper.make_graph([proto], "fold", [], [helper.make_tensor_value_info(o, 0, None) for o in outs],
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    return [np.asarray(r) for r in ReferenceEvaluator(model).run(None, {})]


def fold_static_shapes(graph: Graph) -> int:
    """Fold ``Shape``/``Size`` of static tensors and all-constant nodes. Returns nodes folded."""
    kept: list[Node] = []
    folded = 0
    for node in graph.nodes:
        value = None
        if node.domain in ("", "ai.onnx") and node.op in ("Shape", "Size"):
            shape = graph.shape(node.input(0))
            if _static(shape):
                value = [_shape_value(node, shape) if node.op == "Shape"
                         else np.array(int(np.prod(shape)), dtype=np.int64)]
                deps = {node.input(0)}
        elif (node.domain in ("", "ai.onnx") and node.op not in _NONDETERMINISTIC
              and not node.implicit_inputs and not any(
                  isinstance(v, onnx.GraphProto) for v in node.attrs.values())
              and node.inputs and all(t == "" or t in graph.constants for t in node.inputs)):
            ins = [graph.constants[t] if t else None for t in node.inputs]
            try:
                value = evaluate_node(node, ins, graph.opset)
            except Exception:  # an op the reference cannot run stays in the graph
                value = None
            if value is not None:
                in_size = sum(v.size for v in ins if v is not None)
                if any(v.size > max(in_size, _MIN_FOLD_CAP) for v in value):
                    value = None
            deps = set().union(*(graph.folded.get(t, set()) for t in node.inputs if t))
        if value is None:
            kept.append(node)
            continue
        for name, v in zip(node.outputs, value):
            if name:
                graph.constants[name] = v
                if deps:
                    graph.folded[name] = deps
        folded += 1
    graph.nodes = kept
    return folded
