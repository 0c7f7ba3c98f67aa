"""Evaluate shape arithmetic and constant subgraphs into constants (lossless).

Exporters often compute reshape targets at run time (``Shape → Gather →
Concat → Reshape``) and transpose weights with ops (``Transpose(W)``). When the
shapes involved are static, those values are constants; folding them lets the
channel rules read reshape targets and weights directly.

Folded values that came from the *size* of a tensor are remembered in
``Graph.folded`` (constant name → the ``(tensor, axis)`` sizes it read),
because pruning that axis changes the value: the channel analysis only allows
such a constant where the emitter rewrites it (a ``Reshape`` target or a
constant piece of one) and pins the axis otherwise. A ``Gather``/``Slice`` of
a partly symbolic ``Shape`` that picks only static axes folds too.

The front end runs :func:`fold_static_shapes` at load; the ``fold-constants``
pass runs :func:`fold_constants` with its own options and reports each fold.
A fold must never blow up the file: an output over ``max_elements`` folds only
when it takes no more bytes than the node's constant inputs (a weight
``Transpose``/``Reshape`` does; ``Tile``/``Expand``/``ConstantOfShape`` into a
big tensor, or a ``Cast`` from float16 to float32, do not).
"""

from __future__ import annotations

from collections import Counter

from dataclasses import dataclass, field

import numpy as np

from .ir import Graph, Node

# Folding these would freeze one random draw (Dropout: in training mode) into the model.
NONDETERMINISTIC = frozenset({"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
                              "Multinomial", "Bernoulli", "Dropout"})
DEFAULT_MAX_ELEMENTS = 1 << 18  # elements (1 MB of float32; attention masks, position tables);
# larger outputs fold only if no bigger than their inputs
_MIN_FOLD_CAP = DEFAULT_MAX_ELEMENTS  # backward-compatible alias
_STANDARD = ("", "ai.onnx")


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
    """Run one node on constant inputs with ONNX's reference implementation.

    Raises ``TypeError`` when an output is not a tensor (sequences, optionals):
    the IR's constants are arrays only.
    """
    from onnx import helper, numpy_helper  # (onnx is imported where needed: a torch prune may never be)
    from onnx.reference import ReferenceEvaluator

    names = [f"in{i}" if v is not None else "" for i, v in enumerate(values)]
    outs = [f"out{i}" for i in range(len(node.outputs))]
    proto = helper.make_node(node.op, names, outs, domain=node.domain or None)
    for name, value in node.attrs.items():
        proto.attribute.append(node.raw_attrs.get(name) or helper.make_attribute(name, value))
    inits = [numpy_helper.from_array(np.asarray(v), n) for n, v in zip(names, values) if n]
    graph = helper.make_graph([proto], "fold", [], [helper.make_tensor_value_info(o, 0, None) for o in outs],
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    results = ReferenceEvaluator(model).run(None, {})
    if not all(isinstance(r, (np.ndarray, np.generic)) for r in results):
        raise TypeError(f"{node.op} returned a non-tensor value")
    return [np.asarray(r) for r in results]


def overridable_constants(graph: Graph) -> set[str]:
    """Initializers that are also listed as graph inputs: a caller may feed another value.

    (Models with IR version < 4 list every initializer this way.) Lossless
    passes must not treat their values as fixed.
    """
    source = graph.source
    if type(source).__name__ != "ModelProto":  # (without importing onnx for a traced module)
        return set()
    return {i.name for i in source.graph.input} & set(graph.constants)


@dataclass
class FoldResult:
    """What :func:`fold_constants` did: one record per folded node and per candidate left alone."""

    folded: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)


def _nbytes(values) -> int:
    return sum(v.nbytes for v in values if v is not None)


def fold_constants(graph: Graph, max_elements: int = DEFAULT_MAX_ELEMENTS,
                   keep_ops: frozenset[str] | set[str] = frozenset(),
                   frozen: set[str] | None = None) -> FoldResult:
    """Fold ``Shape``/``Size`` of static tensors and all-constant nodes, in one topological sweep.

    Args:
        max_elements: outputs up to this many elements always fold; larger
            ones only when they take no more bytes than the inputs folding
            frees (inputs no other node reads: a transposed copy of a tied
            embedding would double the model's largest weight).
        keep_ops: op types never folded (e.g. ``DequantizeLinear``, so a
            quantized weight stays quantized).
        frozen: constant names treated as run-time values (overridable
            initializers).
    """
    frozen = frozen or set()
    result = FoldResult()
    kept: list[Node] = []
    shape_of: dict[str, Node] = {}  # outputs of Shape nodes left in the graph (partial shapes)

    def is_const(t: str) -> bool:
        return t in graph.constants and t not in frozen

    # readers per tensor: a big input another node still reads is not freed by folding this one
    readers = Counter(t for n in graph.nodes for t in (*n.inputs, *n.implicit_inputs) if t)
    readers.update(graph.outputs)

    for node in graph.nodes:
        value, deps, reason = None, set(), None
        standard = node.domain in _STANDARD
        if standard and node.op in ("Shape", "Size") and node.inputs:
            shape = graph.shape(node.input(0))
            if _static(shape) and not (node.input(0) in frozen):
                value = [_shape_value(node, shape) if node.op == "Shape"
                         else np.array(int(np.prod(shape)), dtype=np.int64)]
                lo, hi = shape_range(node, len(shape)) if node.op == "Shape" else (0, len(shape))
                deps = {(node.input(0), a) for a in range(lo, hi)}
            elif node.op == "Shape" and shape is not None:
                shape_of[node.outputs[0]] = node
        elif standard and node.input(0) in shape_of and node.op in ("Gather", "Slice"):
            value, deps = _static_entries(graph, shape_of[node.input(0)], node)
        elif node.inputs and all(t == "" or is_const(t) for t in node.inputs):
            if not standard:
                reason = f"op domain '{node.domain}' is not evaluated"
            elif node.op in NONDETERMINISTIC:
                reason = f"{node.op} is nondeterministic"
            elif node.op in keep_ops:
                reason = f"{node.op} is kept by option keep_ops"
            elif node.implicit_inputs or any(type(v).__name__ == "GraphProto" for v in node.attrs.values()):
                reason = "it has subgraphs"
            else:
                ins = [graph.constants[t] if t else None for t in node.inputs]
                try:
                    value = evaluate_node(node, ins, graph.opset)
                except Exception as exc:  # an op the reference cannot run stays in the graph
                    reason = f"reference evaluation failed ({exc.__class__.__name__})"
                if value is not None:
                    freed = [v for t, v in zip(node.inputs, ins) if t and readers[t] <= 1]
                    reason = _size_problem(value, freed, max_elements) or _type_problem(graph, node, value)
                    if reason:
                        value = None
                deps = set().union(*(graph.folded.get(t, set()) for t in node.inputs if t))
        if value is None:
            kept.append(node)
            if reason:
                result.skipped.append({"node": node.name, "op": node.op, "reason": reason})
            continue
        for t in node.inputs:
            if t:
                readers[t] -= 1
        for name, v in zip(node.outputs, value):
            if name:
                graph.constants[name] = v
                if deps:
                    graph.folded[name] = deps
        result.folded.append({"node": node.name, "op": node.op, "inputs": [t for t in node.inputs if t],
                              "outputs": {n: list(v.shape) for n, v in zip(node.outputs, value) if n}})
    graph.nodes = kept
    return result


def shape_range(node: Node, rank: int) -> tuple[int, int]:
    """The axes ``[lo, hi)`` a Shape node reads (its ``start``/``end``, clamped)."""
    def clamp(v):
        return min(max(v + rank if v < 0 else v, 0), rank)
    return clamp(node.attr("start", 0)), clamp(node.attr("end", rank))


def _static_entries(graph: Graph, shape_node: Node, node: Node):
    """Fold ``Gather``/``Slice`` of a partly symbolic ``Shape`` when it picks only static axes.

    ``Shape(x)[2]`` of ``x: (batch, seq, 256)`` is 256 whatever the batch: the
    pick becomes a constant that remembers it read axis 2 of ``x``. Returns
    ``(None, set())`` when the pick is not constant or touches a symbolic axis.
    """
    x = shape_node.input(0)
    shape = graph.shape(x)
    lo, hi = shape_range(shape_node, len(shape))
    axes = np.arange(lo, hi)
    try:
        if node.op == "Gather":
            index = graph.constants.get(node.input(1))
            if index is None or node.attr("axis", 0) != 0 or index.dtype.kind not in "iu":
                return None, set()
            picked = axes[np.asarray(index)]
        else:
            bounds = [graph.constants.get(node.input(i)) if node.input(i) else None for i in (1, 2, 3, 4)]
            if graph.opset < 10 or any(b is None for b in bounds[:2]) or \
                    any(b is None for b, name in zip(bounds[2:], node.inputs[3:5]) if name):
                return None, set()
            if bounds[2] is not None and [int(a) for a in bounds[2].reshape(-1)] not in ([0], [-1]):
                return None, set()
            step = int(bounds[3].reshape(-1)[0]) if bounds[3] is not None else 1
            picked = axes[int(bounds[0].reshape(-1)[0]):int(bounds[1].reshape(-1)[0]):step]
    except (IndexError, ValueError):
        return None, set()
    sizes = [shape[int(a)] for a in np.asarray(picked).reshape(-1)]
    if not all(isinstance(d, int) for d in sizes):
        return None, set()
    value = np.array(sizes, dtype=np.int64).reshape(np.shape(picked))
    return [value], {(x, int(a)) for a in np.asarray(picked).reshape(-1)}


def _size_problem(value, freed, max_elements: int) -> str | None:
    big = [v for v in value if v.size > max_elements]
    if big and _nbytes(value) > _nbytes(freed):
        return (f"output of {big[0].size} elements exceeds max_elements={max_elements} "
                f"and what folding frees ({_nbytes(value)} > {_nbytes(freed)} bytes of inputs no other "
                "node reads)")
    return None


def _type_problem(graph: Graph, node: Node, value) -> str | None:
    """Refuse a value whose dtype or shape disagrees with what shape inference says."""
    for name, v in zip(node.outputs, value):
        info = graph.tensors.get(name)
        if not name or info is None:
            continue
        if info.dtype is not None and v.dtype != info.dtype:
            return f"evaluated dtype {v.dtype} differs from the inferred {info.dtype}"
        if _static(info.shape) and tuple(info.shape) != v.shape:
            return f"evaluated shape {v.shape} differs from the inferred {tuple(info.shape)}"
    return None


def fold_static_shapes(graph: Graph) -> int:
    """Fold ``Shape``/``Size`` of static tensors and all-constant nodes. Returns nodes folded."""
    return len(fold_constants(graph).folded)
