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

STATISTICS = ("ReduceMean", "ReduceL2", "LayerNormalization")


def mask_statistics(model: onnx.ModelProto, plan) -> tuple[int, int]:
    """Rewrite ``model`` (an oracle copy) in place; ``(statistics rewritten, left as they were)``
    among the nodes normalising over an axis the plan shrank."""
    table, graph = plan.analysis.table, plan.analysis.graph
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
    constants = {t.name: t for t in model.graph.initializer}
    constants.update({n.output[0]: n.attribute[0].t for n in model.graph.node
                      if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"})
    nodes, rewritten, left = [], 0, 0
    for node in model.graph.node:
        found = _kept_of(node, graph, table, plan)
        if found is None:
            nodes.append(node)
            continue
        rank, keep = found
        replacement = None if keep is None else _masked(node, rank, keep, graph, opset, constants, model,
                                                        f"graphprune_stat_{rewritten}")
        if replacement is None:
            left += 1
            nodes.append(node)
        else:
            rewritten += 1
            nodes.extend(replacement)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return rewritten, left


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


def _masked(node, rank, keep, graph, opset, constants, model, base):
    """The nodes computing ``node`` over kept channels, or None for a form not handled."""
    dtype = graph.tensors[node.input[0]].dtype
    dtype = np.dtype(dtype) if dtype is not None else np.dtype(np.float32)
    if dtype.kind != "f":
        return None
    mask = keep.astype(dtype)
    count = np.array(keep.sum(), dtype=dtype)
    model.graph.initializer.extend([numpy_helper.from_array(mask, base + "_mask"),
                                    numpy_helper.from_array(count, base + "_count")])
    last = [rank - 1]

    def reduce_sum(op, x, out, keepdims):
        if opset >= 13 or op == "ReduceSumSquare" and opset >= 18:
            axes = base + "_axes"
            if axes not in {t.name for t in model.graph.initializer}:
                model.graph.initializer.append(numpy_helper.from_array(np.array(last, np.int64), axes))
            return helper.make_node(op, [x, axes], [out], keepdims=keepdims)
        return helper.make_node(op, [x], [out], axes=last, keepdims=keepdims)

    def sum_square(x, out, keepdims):  # ReduceSumSquare takes axes as an input only from opset 18
        if opset >= 18:
            return reduce_sum("ReduceSumSquare", x, out, keepdims)
        return helper.make_node("ReduceSumSquare", [x], [out], axes=last, keepdims=keepdims)

    m, k = base + "_mask", base + "_count"
    if node.op_type in ("ReduceMean", "ReduceL2"):
        axes = _reduced_axes(node, opset, constants)
        if axes is None or [a % rank for a in axes] != last:
            return None
        keepdims = int(_attr(node, "keepdims", 1))
        out = node.output[0]
        if node.op_type == "ReduceMean":
            return [helper.make_node("Mul", [node.input[0], m], [base + "_x"]),
                    reduce_sum("ReduceSum", base + "_x", base + "_sum", keepdims),
                    helper.make_node("Div", [base + "_sum", k], [out])]
        return [helper.make_node("Mul", [node.input[0], m], [base + "_x"]),
                sum_square(base + "_x", base + "_sq", keepdims),
                helper.make_node("Sqrt", [base + "_sq"], [out])]
    # LayerNormalization(X, Scale, B?) over the last axis, the normalised output alone
    axis = int(_attr(node, "axis", -1))
    if axis % rank != rank - 1 or any(o for o in node.output[1:]):
        return None
    eps = np.array(_attr(node, "epsilon", 1e-5), dtype=dtype)
    model.graph.initializer.append(numpy_helper.from_array(eps, base + "_eps"))
    x = node.input[0]
    nodes = [helper.make_node("Mul", [x, m], [base + "_xm"]),
             reduce_sum("ReduceSum", base + "_xm", base + "_s", 1),
             helper.make_node("Div", [base + "_s", k], [base + "_mean"]),
             helper.make_node("Sub", [x, base + "_mean"], [base + "_d"]),
             helper.make_node("Mul", [base + "_d", m], [base + "_dm"]),
             sum_square(base + "_dm", base + "_ss", 1),
             helper.make_node("Div", [base + "_ss", k], [base + "_var"]),
             helper.make_node("Add", [base + "_var", base + "_eps"], [base + "_ve"]),
             helper.make_node("Sqrt", [base + "_ve"], [base + "_std"]),
             helper.make_node("Div", [base + "_d", base + "_std"], [base + "_n"])]
    scaled = base + "_y" if len(node.input) > 2 and node.input[2] else node.output[0]
    nodes.append(helper.make_node("Mul", [base + "_n", node.input[1]], [scaled]))
    if scaled != node.output[0]:
        nodes.append(helper.make_node("Add", [scaled, node.input[2]], [node.output[0]]))
    return nodes
