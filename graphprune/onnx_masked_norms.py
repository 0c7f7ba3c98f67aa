"""Normalisation statistics over kept channels in the ONNX oracle (cf. :mod:`.masked_norms`).

A prune that removes channels of an axis a LayerNorm or RMSNorm normalises over
is not the original with those channels zeroed; it *is* the original with
every such statistic taken over the ``K`` kept channels (mask ``m``)::

    ReduceMean(x)         → ReduceSum(m·x) / K
    ReduceL2(x)           → √ReduceSumSquare(m·x)
    LayerNormalization(x) → (x - μ_K) / √(σ²_K + ε) · γ + β,  μ_K = Σ m·x / K,  σ²_K = Σ m·(x - μ_K)² / K

:func:`mask_statistics` rewrites those nodes of an oracle model whose input's
last axis lost channels, so a hidden-size prune is compared exactly (outputs
and internal checkpoints) instead of only for finite values. A form outside
this table (several axes, the optional Mean/InvStdDev outputs, an axis that is
not the last) is left alone; the caller then falls back to the approximate check.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

STATISTICS = ("ReduceMean", "ReduceL2", "LayerNormalization", "GroupNormalization")


def mask_statistics(model: onnx.ModelProto, plan) -> tuple[int, int]:
    """Rewrite ``model`` (an oracle copy) in place when every statistic over an axis the plan
    shrank has a form handled here; ``(statistics rewritten, statistics not handled)``. With
    any not handled, ``model`` is left as it was: ``(0, n)``."""
    table, graph = plan.analysis.table, plan.analysis.graph
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
    constants = {t.name: t for t in model.graph.initializer}
    constants.update({n.output[0]: n.attribute[0].t for n in model.graph.node
                      if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"})
    nodes, initializers, rewritten, left = [], [], 0, 0
    for node in model.graph.node:
        found = _kept_of(node, graph, table, plan)
        if found is None:
            nodes.append(node)
            continue
        rank, keep = found
        replacement = None if keep is None else _masked(node, rank, keep, graph, opset, constants,
                                                        f"graphprune_stat_{rewritten}")
        if replacement is None:
            left += 1
            continue
        rewritten += 1
        nodes.extend(replacement[0])
        initializers.extend(replacement[1])
    if left or not rewritten:
        return 0, left
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    model.graph.initializer.extend(initializers)
    return rewritten, 0


def _kept_of(node, graph, table, plan):
    """``(rank, kept mask)`` when ``node`` is a statistic over its input's last axis and the
    plan shrank that axis; ``(rank, None)`` for a LayerNormalization over several axes of
    which one shrank (a form not handled); None when no statistic over a shrunk axis."""
    if node.op_type not in STATISTICS or node.domain not in ("", "ai.onnx") or not node.input:
        return None
    info = graph.tensors.get(node.input[0])
    if info is None or not info.shape:
        return None
    rank = len(info.shape)

    def shrunk(axis):
        did = table.ids.get((node.input[0], axis))
        return did if did is not None and did in table.approx and plan.kept(did) is not None else None

    if node.op_type == "GroupNormalization":  # one group over a shrunk channel axis: not handled here
        return (rank, None) if rank > 1 and shrunk(1) is not None else None
    if node.op_type == "LayerNormalization":
        first = int(_attr(node, "axis", -1)) % rank
        if first != rank - 1 and any(shrunk(a) is not None for a in range(first, rank)):
            return rank, None
    did = shrunk(rank - 1)
    if did is None:
        return None
    kept = plan.kept(did)
    keep = np.zeros(table.sizes[did], dtype=bool)
    keep[kept] = True
    return rank, keep


def _attr(node, name, default):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _reduced_axes(node, opset, constants):
    if opset >= 18 and node.op_type != "LayerNormalization":
        if len(node.input) < 2 or not node.input[1]:
            return None  # all axes
        source = constants.get(node.input[1])
        return None if source is None else [int(a) for a in numpy_helper.to_array(source).ravel()]
    return _attr(node, "axes", None)


def _masked(node, rank, keep, graph, opset, constants, base):
    """``(nodes, initializers)`` computing ``node`` over kept channels, or None for a form not handled."""
    dtype = graph.tensors[node.input[0]].dtype
    dtype = np.dtype(dtype) if dtype is not None else np.dtype(np.float32)
    if dtype.kind != "f":
        return None
    last = [rank - 1]
    if node.op_type in ("ReduceMean", "ReduceL2"):
        axes = _reduced_axes(node, opset, constants)
        if axes is None or [a % rank for a in axes] != last:
            return None
    elif int(_attr(node, "axis", -1)) % rank != rank - 1 or any(o for o in node.output[1:]):
        return None  # LayerNormalization over several axes, or its Mean / InvStdDev outputs read
    m, k, axes_name = base + "_mask", base + "_count", base + "_axes"
    initializers = [numpy_helper.from_array(keep.astype(dtype), m),
                    numpy_helper.from_array(np.array(keep.sum(), dtype=dtype), k),
                    numpy_helper.from_array(np.array(last, np.int64), axes_name)]

    def reduce(op, x, out, keepdims=1):
        """ReduceSum / ReduceSumSquare over the last axis: axes an input from opset 13 / 18."""
        if opset >= (13 if op == "ReduceSum" else 18):
            return helper.make_node(op, [x, axes_name], [out], keepdims=keepdims)
        return helper.make_node(op, [x], [out], axes=last, keepdims=keepdims)

    x, out = node.input[0], node.output[0]
    if node.op_type == "ReduceMean":
        keepdims = int(_attr(node, "keepdims", 1))
        return [helper.make_node("Mul", [x, m], [base + "_x"]),
                reduce("ReduceSum", base + "_x", base + "_sum", keepdims),
                helper.make_node("Div", [base + "_sum", k], [out])], initializers
    if node.op_type == "ReduceL2":
        keepdims = int(_attr(node, "keepdims", 1))
        return [helper.make_node("Mul", [x, m], [base + "_x"]),
                reduce("ReduceSumSquare", base + "_x", base + "_sq", keepdims),
                helper.make_node("Sqrt", [base + "_sq"], [out])], initializers
    initializers.append(numpy_helper.from_array(np.array(_attr(node, "epsilon", 1e-5), dtype=dtype), base + "_eps"))
    nodes = [helper.make_node("Mul", [x, m], [base + "_xm"]),
             reduce("ReduceSum", base + "_xm", base + "_s"),
             helper.make_node("Div", [base + "_s", k], [base + "_mean"]),
             helper.make_node("Sub", [x, base + "_mean"], [base + "_d"]),
             helper.make_node("Mul", [base + "_d", m], [base + "_dm"]),
             reduce("ReduceSumSquare", base + "_dm", base + "_ss"),
             helper.make_node("Div", [base + "_ss", k], [base + "_var"]),
             helper.make_node("Add", [base + "_var", base + "_eps"], [base + "_ve"]),
             helper.make_node("Sqrt", [base + "_ve"], [base + "_std"]),
             helper.make_node("Div", [base + "_d", base + "_std"], [base + "_n"])]
    biased = len(node.input) > 2 and node.input[2]
    scaled = base + "_y" if biased else out
    nodes.append(helper.make_node("Mul", [base + "_n", node.input[1]], [scaled]))
    if biased:
        nodes.append(helper.make_node("Add", [scaled, node.input[2]], [out]))
    return nodes, initializers
