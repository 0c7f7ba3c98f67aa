"""fold-batchnorm: fold inference BatchNormalization into an adjacent layer (lossless).

In inference form BatchNormalization is a per-channel affine map over axis 1::

    BN(y)[c] = gamma[c] * (y[c] - mean[c]) / sqrt(var[c] + eps) + beta[c] = s[c] * y[c] + t[c]
    s = gamma / sqrt(var + eps)        t = beta - mean * s

Producer side (the layer's output is read by the BN alone), e.g. for Conv::

    W' = W * gamma / sqrt(var + eps)                       (rows: output channels)
    b' = (b - mean) * gamma / sqrt(var + eps) + beta = s * b + t

ConvTranspose scales its output channels, which sit on weight axis 1 within each
group (``W: [Cin, M/G, k...]``, channel ``g*M/G + j``); Gemm scales the
columns of B (rows if ``transB``) and its bias ``C``; a 2-D ``MatMul`` with a
constant weight becomes ``Gemm(A, W * s, t)``. A missing bias is created.

Consumer side (the BN is read only by layers that contract its channels)::

    W'[o, c, ...] = W[o, c, ...] * s[c]          b'[o] = b[o] + sum_{c, k} W[o, c, k] * t[c]

which is exact only when every tap reads real input: the bias term counts
``t`` for taps on padding too, where the unfolded Conv reads plain zeros, so
padded Convs are left alone. Grouped Convs map input channel ``c`` to group
``c // (C/G)``. Gemm (``transA=0``) and 2-D MatMul readers scale the rows of
B and gain ``C' = beta * C + alpha * t @ B``. The producer side is tried first.

Only the single-output inference form folds (``training_mode=0``, no running
statistics outputs, ``spatial=1`` before opset 9) with constant float
parameters and ``var + eps > 0``. InstanceNormalization uses statistics of the
running input, so it is never a constant affine map over spatial inputs and is
left alone with that reason. The graph's output names are kept: when the BN
wrote a graph output, the layer takes over that name. The layer arithmetic is
shared with ``fold-channel-affine`` (:class:`AffineFolder`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from graphprune.ir import Graph, Node
from graphprune.passes.fold_channel_affine import ONNX_DOMAINS, AffineFolder
from graphprune.pipeline import Pass, register

_INSTANCE_NORM = ("InstanceNormalization normalises each sample with statistics of its own "
                  "spatial positions, so it is not a constant per-channel affine map")


def batchnorm_affine(graph: Graph, node: Node) -> tuple[np.ndarray, np.ndarray] | str:
    """``(s, t)`` of an inference-mode BatchNormalization, or why it is not one."""
    if int(node.attr("training_mode", 0)) != 0:
        return "training_mode=1 (batch statistics)"
    if any(node.outputs[1:]):
        return "it also outputs running statistics (training form)"
    if graph.opset < 9 and int(node.attr("spatial", 1)) != 1:
        return "spatial=0 (per-activation statistics)"
    if len(node.inputs) != 5 or not all(node.inputs):
        return f"expected 5 inputs, got {len(node.inputs)}"
    if node.inputs[0] in graph.constants:
        return "its input is a constant (fold-constants evaluates it)"
    params = []
    for role, name in zip(("scale", "bias", "mean", "var"), node.inputs[1:]):
        value = graph.constants.get(name)
        if value is None:
            return f"{role} '{name}' is not a constant"
        if value.dtype.kind != "f" or value.ndim != 1 or not np.all(np.isfinite(value)):
            return f"{role} '{name}' is not a finite 1-D float tensor"
        params.append(value.astype(np.float64))
    gamma, beta, mean, var = params
    if len({p.size for p in params}) != 1:
        return "scale, bias, mean and var differ in length"
    denom = var + float(node.attr("epsilon", 1e-5))
    if np.any(denom <= 0):
        return "var + epsilon is not positive"
    s = gamma / np.sqrt(denom)
    return s, beta - mean * s


@register
@dataclass
class FoldBatchNorm(Pass):
    name = "fold-batchnorm"
    summary = "fold inference BatchNormalization into the adjacent Conv/ConvTranspose/Gemm/MatMul"

    def apply(self, graph: Graph) -> dict:
        folder = AffineFolder(graph)
        folded: list[dict] = []
        while True:  # sweep until stable: a fold can expose another (BN→BN, BN→Conv after a fold)
            skipped, progress = [], False
            for node in list(graph.nodes):
                if node.domain not in ONNX_DOMAINS:
                    continue
                if node.op == "InstanceNormalization":
                    skipped.append({"node": node.name, "op": node.op, "reason": _INSTANCE_NORM})
                elif node.op == "BatchNormalization":
                    result = self._fold(folder, node)
                    if isinstance(result, str):
                        skipped.append({"node": node.name, "op": node.op, "reason": result})
                    else:
                        folded.append(result)
                        progress = True
            if not progress:
                break
        folder.cleanup()
        return {"changed": len(folded), "folded": folded, "skipped": skipped}

    def _fold(self, folder: AffineFolder, bn: Node) -> dict | str:
        affine = batchnorm_affine(folder.graph, bn)
        if isinstance(affine, str):
            return affine
        s, t = affine
        x, y = bn.inputs[0], bn.outputs[0]
        reasons = []
        side = folder.producer(x)
        if not isinstance(side, str):
            layer, axis, channels, _ = side
            if axis != 1:
                side = (f"{layer.op} '{layer.name}' has its channels on axis {axis}, "
                        "BatchNormalization on axis 1")
            elif channels != s.size:
                side = f"{layer.op} '{layer.name}' has {channels} channels, the BN {s.size}"
            else:
                side = folder.plan_producer(layer, s, t)
            if not isinstance(side, str):
                folder.commit(side)
                folder.remove(bn, 0)
                return {"node": bn.name, "into": layer.name, "side": "producer"}
        reasons.append(f"into producer: {side}")
        side = folder.consumers(y)
        if not isinstance(side, str):
            layers, axis, channels, _ = side
            if axis != 1 or channels != s.size:
                side = (f"readers contract axis {axis} with {channels} channels, "
                        f"the BN normalises axis 1 with {s.size}")
            else:
                side = folder.plan_consumers(layers, s, t, label="BN")
            if not isinstance(side, str):
                folder.commit(side)
                folder.remove(bn, 0)
                return {"node": bn.name, "into": [n.name for n in layers], "side": "consumer"}
        reasons.append(f"into consumer: {side}")
        return "; ".join(reasons)
