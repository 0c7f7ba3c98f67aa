"""fold-channel-affine: absorb per-channel ``Mul``/``Add``/``Sub``/``Div`` by constants
into the neighbouring Conv, ConvTranspose, Gemm or MatMul (lossless).

A per-channel affine map ``a(y)[c] = s[c] * y[c] + t[c]`` (``Mul``: ``s = k``;
``Add``: ``t = k``; ``Sub``: ``t = -k``; ``Div``: ``s = 1 / k``) beside a
linear layer can be moved into that layer's parameters.

Producer side (``y = layer(x)``, read by the affine op and nothing else)::

    Conv            W'[o, ...] = s[o] * W[o, ...]                  b' = s * b + t
    ConvTranspose   W'[i, j, ...] = s[g*M/G + j] * W[i, j, ...]    (i in group g, W: [Cin, M/G, k...])
    Gemm            B' = B * s over N (columns, or rows if transB)  C' = s * beta * C + t, beta' = 1
    MatMul          W'[..., n] = s[n] * W[..., n]   (t != 0: a 2-D MatMul becomes Gemm(A, W', t))

Consumer side (the affine op is read only by layers that contract its channels)::

    W'[o, c, ...] = W[o, c, ...] * s[c]        b'[o] = b[o] + sum_{c, k} W[o, c, k] * t[c]

The bias correction adds ``t`` for every kernel tap, also taps on padding,
which read 0 before the fold but would in effect read ``t`` after it; so a
shift (``t != 0``) only folds into unpadded Convs, while a pure scale folds
through padding because ``0 * s = 0``. For ConvTranspose consumers the
number of taps per output position varies, so only pure scales fold.

Mul/Add take the constant on either side; Sub and Div only as the second
operand (``y - k``, ``y / k`` with no zero in ``k``). The constant may vary
only along the channel axis: batch or spatial variation, or a rank that would
broadcast the output up, is left alone and listed in ``skipped`` with the
reason. The helpers here are shared with ``fold-batchnorm``, whose inference
BatchNormalization is the same affine map.
"""

from __future__ import annotations

from dataclasses import dataclass
import numpy as np

from graphprune.ir import Graph, Node
from graphprune.pipeline import Pass, register

ONNX_DOMAINS = ("", "ai.onnx")


def _bcast(v: np.ndarray, axis: int, ndim: int) -> np.ndarray:
    """``v`` shaped to broadcast along ``axis`` of a rank-``ndim`` array."""
    return v.reshape([v.size if i == axis else 1 for i in range(ndim)])


class AffineFolder:
    """Plans folds of a channel affine ``s * y + t`` into neighbouring layers.

    ``producer``/``consumers`` describe the layer side (or return a reason);
    ``plan_*`` check the math's preconditions and return the new weights (or
    a reason); ``commit`` writes them, so nothing changes until all checks pass.
    """

    def __init__(self, graph: Graph):
        self.graph = graph
        self.stale: set[str] = set()  # constants that edits stopped reading
        self.refresh()

    def refresh(self) -> None:
        self.producers = self.graph.producers()
        self.readers = self.graph.consumers()

    # -- reading ----------------------------------------------------------
    def weight(self, node: Node, i: int, optional: bool = False) -> np.ndarray | str | None:
        name = node.input(i)
        if not name:
            return None if optional else f"{node.op} '{node.name}' has no input {i}"
        value = self.graph.constants.get(name)
        if value is None:
            return f"{node.op} '{node.name}' input '{name}' is not a constant"
        if value.dtype.kind != "f":
            return f"{node.op} '{node.name}' input '{name}' is {value.dtype}, not a float"
        return value

    def rank(self, tensor: str) -> int | None:
        shape = self.graph.shape(tensor)
        return None if shape is None else len(shape)

    def producer(self, y: str) -> tuple[Node, int, int, int] | str:
        """``(layer, channel axis, channels, rank)`` of the layer producing ``y`` alone."""
        node = self.producers.get(y)
        if node is None:
            return f"'{y}' is a graph input or constant, not a layer output"
        if node.domain not in ONNX_DOMAINS or node.op not in ("Conv", "ConvTranspose", "Gemm", "MatMul"):
            return f"producer {node.op} '{node.name}' is not a Conv/ConvTranspose/Gemm/MatMul"
        if y in self.graph.outputs:
            return f"{node.op} '{node.name}' output '{y}' is also a graph output"
        readers = self.readers.get(y, [])
        if len(readers) != 1:
            return f"{node.op} '{node.name}' output '{y}' has {len(readers)} readers"
        w = self.weight(node, 1)
        if isinstance(w, str):
            return w
        if node.op == "Conv":
            return node, 1, w.shape[0], w.ndim
        if node.op == "ConvTranspose":
            return node, 1, w.shape[1] * int(node.attr("group", 1)), w.ndim
        if node.op == "Gemm":
            return node, 1, w.shape[0 if node.attr("transB", 0) else 1], 2
        rank = self.rank(y)
        if w.ndim < 2 or rank is None:
            return f"MatMul '{node.name}' has a 1-D weight or an output of unknown rank"
        return node, rank - 1, w.shape[-1], rank

    def consumers(self, z: str) -> tuple[list[Node], int, int, int] | str:
        """``(layers, channel axis, channels, rank)`` when every reader of ``z`` contracts it."""
        if z in self.graph.outputs:
            return f"'{z}' is a graph output"
        readers = list(dict.fromkeys(self.readers.get(z, [])))
        if not readers:
            return f"'{z}' has no readers"
        found = set()
        for node in readers:
            if node.domain not in ONNX_DOMAINS or node.op not in ("Conv", "ConvTranspose", "Gemm", "MatMul"):
                return f"reader {node.op} '{node.name}' is not a Conv/ConvTranspose/Gemm/MatMul"
            if node.inputs.count(z) != 1 or node.inputs[0] != z or z in node.implicit_inputs:
                return f"{node.op} '{node.name}' reads '{z}' other than as its data input"
            w = self.weight(node, 1)
            if isinstance(w, str):
                return w
            if node.op == "Conv":
                found.add((1, w.shape[1] * int(node.attr("group", 1)), w.ndim))
            elif node.op == "ConvTranspose":
                found.add((1, w.shape[0], w.ndim))
            elif node.op == "Gemm":
                if node.attr("transA", 0):
                    return f"Gemm '{node.name}' has transA=1"
                found.add((1, w.shape[1 if node.attr("transB", 0) else 0], 2))
            else:
                rank = self.rank(z)
                if w.ndim != 2 or rank is None or rank < 2:
                    return f"MatMul '{node.name}' weight is not 2-D or its input rank is unknown"
                found.add((rank - 1, w.shape[0], rank))
        if len(found) != 1:
            return f"readers of '{z}' disagree on its channel axis or count"
        return (readers, *found.pop())

    # -- planning: lists of (layer, new weight, new bias or None), committed only when all passed
    def plan_producer(self, node: Node, s: np.ndarray, t: np.ndarray) -> list | str:
        """Edits making ``node``'s output ``s * y + t`` (per output channel)."""
        w, b = self.weight(node, 1), self.weight(node, 2, optional=True)
        if isinstance(b, str):
            return b
        shift, sw = bool(np.any(t)), s.astype(w.dtype)  # weights scale in their own dtype
        if node.op in ("Conv", "ConvTranspose"):
            if b is not None and b.shape != (s.size,):
                return f"{node.op} '{node.name}' bias has shape {b.shape}, expected ({s.size},)"
            if node.op == "Conv":
                w2 = w * _bcast(sw, 0, w.ndim)
            else:  # W: [Cin, M/G, k...]; out channel g*M/G + j lives in rows of group g, column j
                g = int(node.attr("group", 1))
                grouped = w.reshape(g, w.shape[0] // g, *w.shape[1:])
                w2 = (grouped * sw.reshape(g, 1, w.shape[1], *[1] * (w.ndim - 2))).reshape(w.shape)
            no_bias = b is None and not shift  # no bias stays no bias under a pure scale
            return [(node, w2, None if no_bias else (0.0 if b is None else b) * s + t)]
        if node.op == "Gemm":  # C' = s * beta * C + t, beta' = 1
            w2 = w * _bcast(sw, 0 if node.attr("transB", 0) else 1, 2)
            if b is None and not shift:
                return [(node, w2, None)]
            c2 = (0.0 if b is None else float(node.attr("beta", 1.0)) * b) * s + t
            return f"Gemm '{node.name}' bias broadcasts to rank {c2.ndim}" if c2.ndim > 2 else [(node, w2, c2)]
        # MatMul: scale the weight's columns; a shift needs a bias, which only Gemm (2-D) has
        if shift and (w.ndim != 2 or self.rank(node.input(0)) != 2):
            return (f"MatMul '{node.name}' is not 2-D (not a Gemm), so the shift would need "
                    "a bias Add: no smaller than the op it replaces")
        return [(node, w * sw, t if shift else None)]

    def plan_consumers(self, nodes: list[Node], s: np.ndarray, t: np.ndarray, label: str) -> list | str:
        """Edits making each layer in ``nodes`` compute on ``s * x + t`` while reading ``x``."""
        shift = bool(np.any(t))
        edits = []
        for node in nodes:
            w, b = self.weight(node, 1), self.weight(node, 2, optional=True)
            if isinstance(b, str):
                return b
            sw = s.astype(w.dtype)
            if node.op == "Conv":
                if shift and (reason := self._padding(node, w, label)):
                    return reason
                g, m = int(node.attr("group", 1)), w.shape[0]
                # input channel c = group * C/G + j; output channel o belongs to group o // (M/G)
                per_out = lambda v: v.reshape(g, -1)[np.arange(m) // (m // g)].reshape(
                    *w.shape[:2], *[1] * (w.ndim - 2))
                taps = (w * per_out(t)).sum(axis=tuple(range(1, w.ndim))) if shift else None
                edits.append((node, w * per_out(sw), None if taps is None else
                              taps if b is None else b + taps))
            elif node.op == "ConvTranspose":
                if shift:
                    return (f"ConvTranspose '{node.name}' sums a varying number of taps per output, "
                            f"so a {label} shift does not fold into it")
                edits.append((node, w * _bcast(sw, 0, w.ndim), None))
            else:  # Gemm / MatMul: weight rows (or Gemm transB columns) are the input features
                trans = node.op == "Gemm" and node.attr("transB", 0)
                w2, bias = w * _bcast(sw, 1 if trans else 0, 2), None
                if shift:
                    if node.op == "MatMul" and self.rank(node.inputs[0]) != 2:
                        return f"MatMul '{node.name}' is not 2-D, so the {label} shift would need a bias Add"
                    bias = float(node.attr("alpha", 1.0)) * (t @ (w.T if trans else w))
                    bias = bias if b is None else float(node.attr("beta", 1.0)) * b + bias
                    if bias.ndim > 2:
                        return f"{node.op} '{node.name}' bias broadcasts to rank {bias.ndim}"
                edits.append((node, w2, bias))
        return edits

    @staticmethod
    def _padding(node: Node, w: np.ndarray, label: str) -> str | None:
        pads = list(node.attr("pads", []) or [])
        auto = node.attr("auto_pad", "NOTSET")
        auto = auto.decode() if isinstance(auto, bytes) else auto
        if any(pads) or (auto.startswith("SAME") and any(k > 1 for k in w.shape[2:])):
            return (f"padding makes {label}→Conv folding inexact "
                    f"(Conv '{node.name}' pads {pads or auto} would see the shifted zeros)")
        return None

    # -- editing ------------------------------------------------------------
    def commit(self, edits: list) -> None:
        """Write planned weights and biases (cast to the weight's dtype) into the graph."""
        for node, w2, b2 in edits:
            like = self.graph.constants[node.inputs[1]]
            self.set_input(node, 1, np.asarray(w2, dtype=like.dtype), "weight")
            if b2 is None:
                continue
            if node.op == "MatMul":  # 2-D MatMul(A, W) + bias is Gemm(A, W, bias)
                node.op = "Gemm"
            elif node.op == "Gemm" and node.attr("beta", 1.0) != 1.0:
                node.set_attr("beta", 1.0)
            self.set_input(node, 2, np.asarray(b2, dtype=like.dtype), "bias")

    def set_input(self, node: Node, i: int, value: np.ndarray, role: str) -> None:
        while len(node.inputs) <= i:
            node.inputs.append("")
        if node.inputs[i]:
            self.stale.add(node.inputs[i])
        node.inputs[i] = self.graph.add_constant(f"{node.name}_{role}_folded", value)

    def remove(self, op: Node, data_index: int) -> None:
        """Drop the folded op, rewiring its readers (and graph output name) to its data input."""
        self.stale.update(t for i, t in enumerate(op.inputs) if i != data_index and t)
        if not self.graph.forward(op, data_index):
            raise RuntimeError(f"cannot forward '{op.name}' after folding it")  # callers rule this out
        self.refresh()

    def cleanup(self) -> None:
        used = set(self.graph.outputs)
        for n in self.graph.nodes:
            used.update((*n.inputs, *n.implicit_inputs))
        for name in self.stale - used:
            self.graph.constants.pop(name, None)


def channel_vector(k: np.ndarray, axis: int, rank: int, channels: int) -> np.ndarray | str:
    """A constant's per-channel values, if it varies along ``axis`` of a rank-``rank`` tensor only."""
    if k.ndim > rank:
        return f"constant of rank {k.ndim} would broadcast the rank-{rank} tensor up"
    shape = (1,) * (rank - k.ndim) + k.shape
    for i, d in enumerate(shape):
        if i != axis and d != 1:
            where = "the batch axis" if i == 0 else f"axis {i}"
            return f"constant of shape {k.shape} varies along {where}, not only the channel axis {axis}"
    if shape[axis] not in (1, channels):
        return f"constant has {shape[axis]} values on the channel axis, expected 1 or {channels}"
    return np.broadcast_to(k.astype(np.float64).reshape(-1), (channels,))


_SIDES = {"Mul": (0, 1), "Add": (0, 1), "Sub": (1,), "Div": (1,)}  # where the constant may sit


@register
@dataclass
class FoldChannelAffine(Pass):
    name = "fold-channel-affine"
    summary = "fold per-channel Mul/Add/Sub/Div by constants into adjacent Conv/ConvTranspose/Gemm/MatMul"

    def apply(self, graph: Graph) -> dict:
        folder = AffineFolder(graph)
        folded: list[dict] = []
        while True:  # sweep until stable, so chains (Conv→Mul→Add) fold in one run
            skipped, progress = [], False
            for node in list(graph.nodes):
                if node.op not in _SIDES or node.domain not in ONNX_DOMAINS or len(node.inputs) != 2:
                    continue
                result = self._fold(folder, node)
                if isinstance(result, dict):
                    folded.append(result)
                    progress = True
                elif result:
                    skipped.append({"node": node.name, "op": node.op, "reason": result})
            if not progress:
                break
        folder.cleanup()
        return {"changed": len(folded), "folded": folded, "skipped": skipped}

    def _fold(self, folder: AffineFolder, node: Node) -> dict | str | None:
        """A record of the fold, a reason it was left alone, or None if it is no candidate."""
        consts = [i for i, t in enumerate(node.inputs) if t in folder.graph.constants]
        if len(consts) != 1:
            return None  # nothing constant (not affine) or all constant (fold-constants' job)
        ki, xi = consts[0], 1 - consts[0]
        x, z, k = node.inputs[xi], node.outputs[0], folder.graph.constants[node.inputs[ki]]
        neighbours = [folder.producers.get(x), *folder.readers.get(z, [])]
        if not any(n is not None and n.op in ("Conv", "ConvTranspose", "Gemm", "MatMul") for n in neighbours):
            return None  # no layer next to it: not a near miss worth reporting
        if ki not in _SIDES[node.op]:
            return f"{node.op} with the constant as its first operand is not a channel affine of the data"
        if k.dtype.kind != "f" or not np.all(np.isfinite(k)):
            return f"constant '{node.inputs[ki]}' is not a finite float tensor"
        if node.op == "Div" and np.any(k == 0):
            return f"Div by constant '{node.inputs[ki]}' which has zeros"

        def affine(axis: int, rank: int, channels: int) -> tuple[np.ndarray, np.ndarray] | str:
            v = channel_vector(k, axis, rank, channels)
            if isinstance(v, str):
                return v
            zero, one = np.zeros(channels), np.ones(channels)
            return {"Mul": (v, zero), "Add": (one, v), "Sub": (one, -v), "Div": (1.0 / v, zero)}[node.op]

        reasons = []
        side = folder.producer(x)
        if not isinstance(side, str):
            layer, axis, channels, rank = side
            st = affine(axis, rank, channels)
            if folder.rank(x) not in (None, rank):
                st = f"'{x}' has rank {folder.rank(x)}, expected {rank}"
            plan = st if isinstance(st, str) else folder.plan_producer(layer, *st)
            if not isinstance(plan, str):
                folder.commit(plan)
                folder.remove(node, xi)
                return {"node": node.name, "op": node.op, "into": layer.name, "side": "producer"}
            side = plan
        reasons.append(f"into producer: {side}")
        side = folder.consumers(z)
        if not isinstance(side, str):
            layers, axis, channels, rank = side
            st = affine(axis, rank, channels)
            shape = folder.graph.shape(x)
            if shape is None or len(shape) != rank or shape[axis] != channels:
                st = f"data input '{x}' shape {shape} is not the output shape (broadcast by the constant)"
            plan = st if isinstance(st, str) else folder.plan_consumers(layers, *st, label=node.op)
            if not isinstance(plan, str):
                folder.commit(plan)
                folder.remove(node, xi)
                return {"node": node.name, "op": node.op, "into": [n.name for n in layers],
                        "side": "consumer"}
            side = plan
        reasons.append(f"into consumer: {side}")
        return "; ".join(reasons)
