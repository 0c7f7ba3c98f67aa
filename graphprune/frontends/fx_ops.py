"""Translation of fx calls into IR nodes in ONNX's vocabulary.

One handler per torch op, keyed by its name, serves all three spellings of a
call: a function (``torch.cat``, ``F.conv2d``), a tensor method (``x.view``)
and an ATen overload (``aten.view.default`` from ``torch.export``). Leaf
modules (``nn.Conv2d``...) are translated by class. Handlers only *translate*:
the coupling logic is the ONNX rule of the op they emit. A handler that meets
a form it cannot express raises :class:`Untranslatable`; the call then pins
every axis it touches.

Literal sizes a prune may change (view targets, split sizes, slice bounds,
``normalized_shape``) are bound to their place in the fx node so the torch
emitter can rewrite them.
"""

from __future__ import annotations

import math
import operator

import numpy as np
import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from ..ir import TensorInfo
from .fx import Binding, Translator, Untranslatable, _fetch, _target_name, build

HANDLERS: dict[str, tuple] = {}
BIG = np.iinfo(np.int64).max


def op(*names: str, params: str):
    """Register a handler for ``names`` whose arguments are ``params`` (``x*`` packs varargs)."""
    def register(fn):
        for name in names:
            HANDLERS[name] = (fn, params.split())
        return fn
    return register


class Call:
    """A call's arguments by name, with where each lives in the fx node (for rewrites)."""

    def __init__(self, t: Translator, n: fx.Node, params: list[str]):
        self.t, self.n = t, n
        self.raw: dict = {}
        self.loc: dict = {}
        if isinstance(n.target, torch._ops.OpOverload):
            params = ["input" if a.name == "self" else a.name for a in n.target._schema.arguments]
        for i, name in enumerate(params):
            if name.endswith("*"):
                name = name[:-1]
                rest = n.args[i:]
                if len(rest) == 1 and isinstance(rest[0], (list, tuple)):
                    self.raw[name], self.loc[name] = list(rest[0]), ("args", i)
                elif rest:
                    self.raw[name], self.loc[name] = list(rest), ("varargs", i)
                break
            if i < len(n.args):
                self.raw[name], self.loc[name] = n.args[i], ("args", i)
        for key, value in n.kwargs.items():
            key = "input" if key == "self" else key
            self.raw[key], self.loc[key] = value, ("kwargs", key)

    def get(self, name, default=None):
        return self.raw.get(name, default)

    def val(self, name, default=None):
        return self.t.value(self.raw[name]) if name in self.raw else default

    def path(self, name, index=None) -> tuple:
        loc = self.loc[name]
        if loc[0] == "varargs":
            return ("args", loc[1] + index)
        return loc if index is None else loc + (index,)

    def tensor(self, name="input") -> str:
        return self.t.tensor(self.raw[name])


# -- helpers ------------------------------------------------------------------

def _ints(value, rank: int | None = None) -> list[int]:
    if isinstance(value, int):
        return [value] * (rank or 1)
    return [int(v) for v in value]


def _temp(t: Translator, base: str, shape, dtype=None) -> str:
    name = t.fresh(base)
    t.set_shape(name, shape, dtype)
    return name


def _out_shape(t: Translator) -> tuple:
    return t.shape(t.current)


def _axis(axis: int, rank: int) -> int:
    return axis % rank if rank else 0


def _reshape(t: Translator, x: str, out: str | None = None, shape=None) -> "Node":  # noqa: F821
    shape = _out_shape(t) if shape is None else shape
    return t.emit("Reshape", [x, t.constant(np.array(shape, dtype=np.int64))], out)


# -- contractions -----------------------------------------------------------------

def _conv(t, x, w, b, stride, padding, dilation, groups, transposed=False, output_padding=0):
    # the weight may be computed at run time (timm's weight-standardised convs): its traced shape
    w_shape = t.constants[w].shape if w in t.constants else t.tensors[w].shape
    spatial = len(w_shape) - 2
    attrs = {"strides": _ints(stride, spatial), "dilations": _ints(dilation, spatial),
             "group": int(groups), "kernel_shape": [int(k) for k in w_shape[2:]]}
    if isinstance(padding, str):
        attrs["auto_pad"] = "SAME_UPPER" if padding == "same" else "VALID"
    else:
        pads = _ints(padding, spatial)
        attrs["pads"] = pads + pads
    if transposed:
        attrs["output_padding"] = _ints(output_padding, spatial)
    return t.emit("ConvTranspose" if transposed else "Conv", [x, w] + ([b] if b else []), **attrs)


def _bind_groups(t, c, node, groups) -> None:
    """A literal ``groups`` argument follows the pruned group count (depthwise convs)."""
    if int(groups) > 1 and "groups" in c.loc and isinstance(c.get("groups"), int):
        t.bind(node, "group", None, c.path("groups"), int(groups))


@op("conv1d", "conv2d", "conv3d", params="input weight bias stride padding dilation groups")
def conv(t, n, c):
    node = _conv(t, c.tensor(), c.tensor("weight"), c.tensor("bias") if c.get("bias") is not None else "",
                 c.val("stride", 1), c.val("padding", 0), c.val("dilation", 1), c.val("groups", 1))
    _bind_groups(t, c, node, c.val("groups", 1))


@op("conv_transpose1d", "conv_transpose2d", "conv_transpose3d",
    params="input weight bias stride padding output_padding groups dilation")
def conv_transpose(t, n, c):
    _conv(t, c.tensor(), c.tensor("weight"), c.tensor("bias") if c.get("bias") is not None else "",
          c.val("stride", 1), c.val("padding", 0), c.val("dilation", 1), c.val("groups", 1),
          transposed=True, output_padding=c.val("output_padding", 0))


@op("convolution", params="input weight bias stride padding dilation transposed output_padding groups")
def convolution(t, n, c):
    node = _conv(t, c.tensor(), c.tensor("weight"), c.tensor("bias") if c.get("bias") is not None else "",
                 c.val("stride"), c.val("padding"), c.val("dilation"), c.val("groups"),
                 transposed=c.val("transposed"), output_padding=c.val("output_padding"))
    _bind_groups(t, c, node, c.val("groups"))


def _linear(t, x, w, b):
    rank = len(t.tensors[x].shape) if x in t.tensors else 0
    if rank == 2:
        t.emit("Gemm", [x, w] + ([b] if b else []), transB=1)
        return
    w_shape = t.constants[w].shape if w in t.constants else t.tensors[w].shape
    wt = _temp(t, "weight_t", (w_shape[1], w_shape[0]))
    t.emit("Transpose", [w], wt, perm=[1, 0])
    if not b:
        t.emit("MatMul", [x, wt])
        return
    mm = _temp(t, "matmul", _out_shape(t))
    t.emit("MatMul", [x, wt], mm)
    t.emit("Add", [mm, b])


@op("linear", params="input weight bias")
def linear(t, n, c):
    _linear(t, c.tensor(), c.tensor("weight"), c.tensor("bias") if c.get("bias") is not None else "")


@op("matmul", "mm", "bmm", params="input other")
def matmul(t, n, c):
    other = "other" if "other" in c.raw else "mat2"
    t.emit("MatMul", [c.tensor(), c.tensor(other)])


def _add_scaled(t, c, product: str, shape) -> None:
    """The current output as ``beta·input + alpha·product`` (with beta = 0 torch still
    broadcasts ``input``, so its axes stay coupled)."""
    product = _scaled(t, product, c.val("alpha", 1), shape)
    bias = c.get("input")
    like = c.get("batch1", c.get("mat"))
    t.emit("Add", [product, _scaled(t, _operand(t, bias, like), c.val("beta", 1), _shape_of(t, bias))])


def _grouped_mm(t, n, c):
    """``y[s] = x[s] @ W[e(s)]``: rows of ``x`` [N, K], sorted by expert, in contiguous segments
    ``offs[e-1]:offs[e]`` (``offs`` [E], a cumulative count), each times its expert's ``W[e]``
    [K, M] (Mixture-of-Experts FFNs). Only the 2-D × 3-D form without bias becomes
    GroupedMatMul(x, W, offs) (:mod:`graphprune.channels.rules.grouped`); ``out_dtype`` only
    sets the result's precision."""
    x = c.get("input", c.get("mat_a"))
    w = c.get("weight", c.get("mat2", c.get("mat_b")))
    offs = c.get("offs")
    if not (t.is_tensor(x) and t.is_tensor(w) and t.is_tensor(offs)):
        raise Untranslatable("grouped matmul without a tensor of group offsets")
    if c.val("bias") is not None:
        raise Untranslatable("grouped matmul with a bias")
    xs, ws, os_ = t.shape(x), t.shape(w), t.shape(offs)
    if len(xs) != 2 or len(ws) != 3:
        raise Untranslatable(f"grouped matmul of ranks {len(xs)} × {len(ws)} (only 2-D × 3-D)")
    if len(os_) != 1 or os_[0] != ws[0] or xs[1] != ws[1]:
        raise Untranslatable(f"grouped matmul of {xs} × {ws} with offsets {os_}")
    t.emit("GroupedMatMul", [t.tensor(x), t.tensor(w), t.tensor(offs)])


op("grouped_mm_fallback", params="input weight offs")(_grouped_mm)  # torch.ops.transformers
op("_grouped_mm", params="input mat2 offs bias out_dtype")(_grouped_mm)  # aten / torch._grouped_mm
op("grouped_mm", params="mat_a mat_b offs bias out_dtype")(_grouped_mm)  # F.grouped_mm


@op("addmm", "addmm_", params="input mat1 mat2 beta alpha")
def addmm(t, n, c):
    """``beta·input + alpha·(mat1 @ mat2)`` is Gemm(mat1, mat2, input): mat2 is ``[in, out]``
    (Hugging Face's ``Conv1D`` weight), its axis 0 contracted with mat1's axis 1. With beta = 0
    torch ignores ``input``'s values but still broadcasts it: it stays an input."""
    inputs = [c.tensor("mat1"), c.tensor("mat2"), _operand(t, c.get("input"), c.get("mat1"))]
    t.emit("Gemm", inputs, alpha=float(c.val("alpha", 1)), beta=float(c.val("beta", 1)))


@op("baddbmm", "baddbmm_", "addmv", "addmv_", params="input batch1 batch2 beta alpha")
def baddbmm(t, n, c):
    """``beta·input + alpha·(batch1 @ batch2)``: MatMul, then Mul and Add (addmv: ``mat @ vec``)."""
    a, b = ("batch1", "batch2") if "batch1" in c.raw else ("mat", "vec")
    shape = _out_shape(t)
    product = _temp(t, "product", shape)
    t.emit("MatMul", [c.tensor(a), c.tensor(b)], product)
    _add_scaled(t, c, product, shape)


@op("addbmm", "addbmm_", params="input batch1 batch2 beta alpha")
def addbmm(t, n, c):
    """``beta·input + alpha·Σ_b batch1[b] @ batch2[b]``: MatMul, ReduceSum over the batch, Mul, Add."""
    shape = _out_shape(t)
    batched = _temp(t, "batched", (t.shape(c.get("batch1"))[0],) + tuple(shape))
    t.emit("MatMul", [c.tensor("batch1"), c.tensor("batch2")], batched)
    product = _temp(t, "product", shape)
    t.emit("ReduceSum", [batched, t.constant(np.array([0], np.int64))], product, keepdims=0)
    _add_scaled(t, c, product, shape)


@op("embedding", params="input weight padding_idx max_norm norm_type scale_grad_by_freq sparse")
def embedding(t, n, c):
    """``weight[indices]`` is Gather(weight, indices, axis=0): the table's width carries through.

    ``padding_idx``, ``scale_grad_by_freq`` and ``sparse`` only change gradients; ``max_norm``
    renormalises looked-up rows in place (a norm over the width) and is not translated.
    """
    if n.target is torch.embedding:  # torch.embedding(weight, input, padding_idx, scale_grad_by_freq, sparse)
        c = Call(t, n, ["weight", "input", "padding_idx", "scale_grad_by_freq", "sparse"])
    if c.val("max_norm") is not None:
        raise Untranslatable("embedding with max_norm renormalises rows")
    indices = c.get("indices") if "indices" in c.raw else c.get("input")
    t.emit("Gather", [c.tensor("weight"), t.tensor(indices)], axis=0)


@op("einsum", params="equation tensors*")
def einsum(t, n, c):
    operands = c.get("tensors")
    t.emit("Einsum", [t.tensor(o) for o in operands], equation=c.val("equation").replace(" ", ""))


def _repeat_heads(t, x: str, shape, group: int) -> tuple[str, tuple]:
    """``x.repeat_interleave(group, dim=-3)`` as Reshape ``(H, 1)``, Expand ``(H, group)``, Reshape ``H·group``."""
    lead, heads, tail = tuple(shape[:-3]), shape[-3], tuple(shape[-2:])
    one, wide = lead + (heads, 1) + tail, lead + (heads, group) + tail
    flat = lead + (heads * group,) + tail
    a, b, out = _temp(t, "heads", one), _temp(t, "repeated", wide), _temp(t, "kv", flat)
    _reshape(t, x, a, one)
    t.emit("Expand", [a, t.constant(np.array(wide, np.int64))], b)
    _reshape(t, b, out, flat)
    return out, flat


@op("scaled_dot_product_attention",
    params="query key value attn_mask dropout_p is_causal scale enable_gqa")
def sdpa(t, n, c):
    """softmax(Q·Kᵀ·scale + mask)·V, with the scale frozen to the original head size.

    Arguments are read by value: timm passes ``attn_mask=None`` and ``is_causal=False`` down
    from the top-level forward as placeholders. ``is_causal`` adds the constant causal mask, a
    boolean mask selects logits (Where, else −inf), and ``enable_gqa`` repeats each K/V head
    for its group of query heads (query head ``h`` reads K/V head ``h // group``, torch's
    ``repeat_interleave``). Dropout applies in every mode: not translated.
    """
    if c.val("dropout_p", 0.0):
        raise Untranslatable("attention dropout")
    mask = c.get("attn_mask")
    if not t.is_tensor(mask):
        if c.val("attn_mask") is not None:
            raise Untranslatable("attention mask is not a tensor")
        mask = None
    q, k, v = c.tensor("query"), c.tensor("key"), c.tensor("value")
    qs, ks = t.shape(c.get("query")), t.shape(c.get("key"))
    scale = c.val("scale") or 1.0 / math.sqrt(qs[-1])
    if c.val("enable_gqa", False) and len(qs) >= 3 and ks[-3] != qs[-3]:
        group = qs[-3] // ks[-3]
        k, ks = _repeat_heads(t, k, ks, group)
        v, _ = _repeat_heads(t, v, t.shape(c.get("value")), group)
    kt = _temp(t, "key_t", ks[:-2] + (ks[-1], ks[-2]))
    t.emit("Transpose", [k], kt, perm=list(range(len(ks) - 2)) + [len(ks) - 1, len(ks) - 2])
    logits_shape = tuple(np.broadcast_shapes(qs[:-2], ks[:-2])) + (qs[-2], ks[-2])
    logits = _temp(t, "logits", logits_shape)
    t.emit("MatMul", [q, kt], logits)
    scaled = _temp(t, "scaled", logits_shape)
    t.emit("Mul", [logits, t.constant(np.array(scale, np.float32))], scaled)
    if c.val("is_causal", False):
        causal = np.triu(np.full(logits_shape[-2:], -np.inf, np.float32), 1)
        masked = _temp(t, "causal", logits_shape)
        t.emit("Add", [scaled, t.constant(causal, "causal_mask")], masked)
        scaled = masked
    if mask is not None:
        masked = _temp(t, "masked", logits_shape)
        if t.info(mask).dtype == np.bool_:
            t.emit("Where", [c.tensor("attn_mask"), scaled, t.constant(np.array(-np.inf, np.float32))], masked)
        else:
            t.emit("Add", [scaled, c.tensor("attn_mask")], masked)
        scaled = masked
    probs = _temp(t, "probs", logits_shape)
    t.emit("Softmax", [scaled], probs, axis=-1)
    t.pin((probs, len(logits_shape) - 1), "attention keys are positions, not channels")
    t.emit("MatMul", [probs, v])
    if c.val("scale") is None:
        node, path = n, c.path("scale") if "scale" in c.loc else None

        def freeze_scale(changed) -> bool:
            if not changed(c.get("query"), len(qs) - 1):
                return False
            node.kwargs = {**node.kwargs, "scale": float(scale)} if path is None or path[0] == "kwargs" \
                else node.kwargs
            if path is not None and path[0] == "args":
                args = list(node.args)
                args[path[1]] = float(scale)
                node.args = tuple(args)
            return True
        t.model.fixups.append(freeze_scale)


# -- normalisation ----------------------------------------------------------------

def _batch_norm(t, x, weight, bias, mean, var, eps, channels, batch_stats=False):
    ones = weight or t.constant(np.ones(channels, np.float32), "ones")
    zeros = bias or t.constant(np.zeros(channels, np.float32), "zeros")
    if mean is None or var is None:
        batch_stats = True
        mean = t.constant(np.zeros(channels, np.float32), "mean")
        var = t.constant(np.ones(channels, np.float32), "var")
    if batch_stats:
        # statistics per channel over every other axis: those axes must keep all their elements
        # (timm's weight standardisation runs batch_norm over a weight's input channels)
        for axis in range(len(t.tensors[x].shape) if x in t.tensors else 0):
            if axis != 1:
                t.pin((x, axis), "batch_norm with batch statistics reduces over this axis")
    t.emit("BatchNormalization", [x, ones, zeros, mean, var], epsilon=float(eps))


@op("batch_norm", params="input running_mean running_var weight bias training momentum eps")
def batch_norm(t, n, c):
    opt = lambda k: c.tensor(k) if c.get(k) is not None else None  # noqa: E731
    _batch_norm(t, c.tensor(), opt("weight"), opt("bias"), opt("running_mean"), opt("running_var"),
                c.val("eps", 1e-5), t.shape(c.get("input"))[1], batch_stats=bool(c.val("training", False)))


@op("layer_norm", params="input normalized_shape weight bias eps")
def layer_norm(t, n, c):
    shape = _ints(c.val("normalized_shape"))
    inputs = [c.tensor()]
    for k in ("weight", "bias"):
        if c.get(k) is not None:
            inputs.append(c.tensor(k))
    node = t.emit("LayerNormalization", inputs, axis=-len(shape), epsilon=float(c.val("eps", 1e-5)))
    node.attrs["normalized_shape"] = shape
    rank = len(_out_shape(t))
    for j, raw in enumerate(_list(c.get("normalized_shape"))):
        if raw is not None:
            t.bind(node, "normalized_shape", j, c.path("normalized_shape", j), shape[j])
    del rank


@op("rms_norm", params="input normalized_shape weight eps")
def rms_norm(t, n, c):
    """``x / √(mean(x²) + ε) · γ`` over the last ``len(normalized_shape)`` axes (ε defaults to the
    dtype's machine epsilon, as in torch). Decomposed as Hugging Face's RMSNorm is traced, so the
    rules and the RMS-norm analysis (:mod:`graphprune.rms_norms`) see the same pattern."""
    shape = _ints(c.val("normalized_shape"))
    eps = c.val("eps")
    weight = c.tensor("weight") if c.get("weight") is not None else None
    node = _rms_norm(t, c.get("input"), len(shape), eps, weight)
    for j, raw in enumerate(_list(c.get("normalized_shape"))):
        if raw is not None:
            t.bind(node, "normalized_shape", j, c.path("normalized_shape", j), shape[j])


def _rms_norm(t, source: fx.Node, count: int, eps, weight: str | None):
    """Emit the RMSNorm decomposition of ``source``; returns the ReduceMean node (it carries
    ``normalized_shape``)."""
    shape, dtype, x = t.shape(source), t.info(source).dtype, t.tensor(source)
    if dtype is None or dtype.kind != "f":
        raise Untranslatable("rms_norm of a non-float tensor")
    eps = float(np.finfo(dtype).eps) if eps is None else float(eps)
    axes = list(range(len(shape) - count, len(shape)))
    kept = tuple(1 if a in axes else s for a, s in enumerate(shape))
    square, mean, shifted, root = (_temp(t, k, sh, dtype) for k, sh in (
        ("squared", shape), ("mean_square", kept), ("shifted", kept), ("rms", kept)))
    t.emit("Mul", [x, x], square)
    node = t.emit("ReduceMean", [square], mean, axes=axes, keepdims=1)
    node.attrs["normalized_shape"] = list(shape[-count:])
    t.emit("Add", [mean, t.constant(np.array(eps, dtype))], shifted)
    t.emit("Sqrt", [shifted], root)
    if weight is None:
        t.emit("Div", [x, root])
        return node
    normalised = _temp(t, "normalised", shape, dtype)
    t.emit("Div", [x, root], normalised)
    t.emit("Mul", [normalised, weight])
    return node


@op("group_norm", params="input num_groups weight bias eps")
def group_norm(t, n, c):
    """``F.group_norm`` / ``aten.group_norm`` as GroupNormalization with per-channel scale and
    bias; the ``num_groups`` literal is bound so removing whole groups rewrites it."""
    inputs = [c.tensor()] + [c.tensor(k) if c.get(k) is not None else "" for k in ("weight", "bias")]
    groups = int(c.val("num_groups"))
    node = t.emit("GroupNormalization", inputs, num_groups=groups, epsilon=float(c.val("eps", 1e-5)))
    if not isinstance(c.get("num_groups"), fx.Node):
        t.bind(node, "num_groups", None, c.path("num_groups"), groups)


def _list(raw):
    """Elements of a literal list argument; a list computed at run time (an fx node) has none to rewrite."""
    if isinstance(raw, fx.Node):
        return []
    return list(raw) if isinstance(raw, (list, tuple)) else [raw]


# -- elementwise ------------------------------------------------------------------

UNARY = {
    "relu": "Relu", "relu_": "Relu", "sigmoid": "Sigmoid", "sigmoid_": "Sigmoid", "tanh": "Tanh",
    "gelu": "Gelu", "silu": "Swish", "silu_": "Swish", "hardswish": "HardSwish",
    "hardswish_": "HardSwish", "hardsigmoid": "HardSigmoid", "hardsigmoid_": "HardSigmoid",
    "mish": "Mish", "elu": "Elu", "selu": "Selu", "leaky_relu": "LeakyRelu", "softplus": "Softplus",
    "exp": "Exp", "log": "Log", "sqrt": "Sqrt", "rsqrt": "Reciprocal", "neg": "Neg", "abs": "Abs",
    "erf": "Erf", "sin": "Sin", "cos": "Cos", "reciprocal": "Reciprocal",
    "contiguous": "Identity", "clone": "Identity", "alias": "Identity", "detach": "Identity",
    "dropout": "Identity", "dropout_": "Identity", "feature_dropout": "Identity", "dropout1d": "Identity",
    "dropout2d": "Identity", "dropout3d": "Identity", "alpha_dropout": "Identity",
    "stochastic_depth": "Identity", "lift_fresh_copy": "Identity", "float": "Identity",
    "to": "Identity", "type_as": "Identity", "clamp": "Clip", "clamp_min": "Clip", "clamp_max": "Clip",
    "hardtanh": "Clip", "hardtanh_": "Clip", "relu6": "Clip",
}


@op(*UNARY, params="input")
def unary(t, n, c):
    name = _target_name(n)
    if name in ("dropout", "dropout_", "stochastic_depth", "feature_dropout") and (
            c.val("train", False) or c.val("training", False)):
        raise Untranslatable("dropout in training mode")
    if name in ("clamp", "clamp_min", "clamp_max") and any(
            t.is_tensor(a) for a in list(n.args[1:]) + list(n.kwargs.values())):
        return _clamp_by_tensors(t, n, c, name)
    if name in ("to", "type_as") and _out_shape(t) != t.shape(c.get("input")):
        raise Untranslatable("conversion changes the shape")
    t.emit(UNARY[name], [c.tensor()])


def _clamp_by_tensors(t, n, c, name):
    """``clamp(x, lo, hi)`` with tensor bounds is ``Min(Max(x, lo), hi)``, both broadcasting."""
    args = list(n.args[1:])
    if name == "clamp":
        lo = n.kwargs.get("min", args[0] if args else None)
        hi = n.kwargs.get("max", args[1] if len(args) > 1 else None)
    else:
        bound = n.kwargs.get(name[-3:], args[0] if args else None)
        lo, hi = (bound, None) if name == "clamp_min" else (None, bound)
    x = c.raw["input"]
    steps = [(op, bound) for op, bound in (("Max", lo), ("Min", hi)) if bound is not None]
    current = c.tensor()
    for k, (op, bound) in enumerate(steps):
        out = t.output() if k == len(steps) - 1 else _temp(t, "clamped", _out_shape(t), t.info(x).dtype)
        t.emit(op, [current, _operand(t, bound, x)], out)
        current = out


BINARY = {"add": "Add", "iadd": "Add", "add_": "Add", "sub": "Sub", "isub": "Sub", "sub_": "Sub",
          "rsub": "Sub", "mul": "Mul", "imul": "Mul", "mul_": "Mul", "maximum": "Max", "minimum": "Min",
          "eq": "Equal", "lt": "Less", "gt": "Greater", "le": "LessOrEqual", "ge": "GreaterOrEqual",
          "logical_and": "And", "logical_or": "Or", "logical_xor": "Xor"}


def _operand(t, arg, like=None) -> str:
    """The IR name of an operand. A number (a literal, or a size the trace computed) becomes a
    constant of ``like``'s floating dtype when ``like`` is a float tensor, as torch promotes it."""
    if t.is_tensor(arg):
        return t.tensor(arg)
    value = t.value(arg) if isinstance(arg, fx.Node) else arg
    if isinstance(value, torch.Tensor) or not isinstance(value, (bool, int, float)):
        raise Untranslatable(f"operand {arg!r} is neither a tensor nor a number")
    dtype = t.info(like).dtype if t.is_tensor(like) else None
    if dtype is not None and dtype.kind == "f":
        return t.constant(np.array(value, dtype))
    return t.tensor(value)


def _shape_of(t, arg) -> tuple:
    return t.shape(arg) if t.is_tensor(arg) else ()


def _scaled(t, x: str, factor, shape) -> str:
    """``x · factor`` for a Python number (``x`` itself when it is 1)."""
    if factor in (None, 1):
        return x
    out = _temp(t, "scaled", shape)
    t.emit("Mul", [x, t.constant(np.array(factor, np.float32))], out)
    return out


def _two(t, c, second: str = "other"):
    """The raw (first, second) operands of a binary call, at least one a tensor."""
    a, b = c.get("input"), c.get(second, c.get("other"))
    if not (t.is_tensor(a) or t.is_tensor(b)):
        raise Untranslatable("no tensor operand")
    return a, b


@op(*BINARY, params="input other alpha")
def binary(t, n, c):
    """``a ∘ b`` elementwise; ``add``/``sub`` take ``a ± alpha·b``, ``rsub`` is ``b − alpha·a``."""
    name = _target_name(n)
    a, b = _two(t, c)
    if name == "rsub":
        a, b = b, a
    b_name = _scaled(t, _operand(t, b, a), c.val("alpha", 1), _shape_of(t, b))
    t.emit(BINARY[name], [_operand(t, a, b), b_name])


@op("ne", params="input other")
def not_equal(t, n, c):
    """``a != b`` is Not(Equal(a, b))."""
    a, b = _two(t, c)
    eq = _temp(t, "equal", _out_shape(t), np.dtype(bool))
    t.emit("Equal", [_operand(t, a, b), _operand(t, b, a)], eq)
    t.emit("Not", [eq])


@op("pow", "pow_", "ipow", params="input exponent")
def power(t, n, c):
    """``base ** exponent`` (the schema calls the second operand ``exponent``)."""
    a, b = _two(t, c, "exponent")
    t.emit("Pow", [_operand(t, a, b), _operand(t, b, a)])


def _rounded(t, q: str, mode: str) -> None:
    """The current output as ``floor(q)``, or ``trunc(q) = sign(q)·floor(|q|)`` (ONNX has no Trunc)."""
    if mode == "floor":
        t.emit("Floor", [q])
        return
    sign, mag, low = (_temp(t, k, _out_shape(t)) for k in ("sign", "abs", "floor"))
    t.emit("Sign", [q], sign)
    t.emit("Abs", [q], mag)
    t.emit("Floor", [mag], low)
    t.emit("Mul", [sign, low])


@op("div", "div_", "truediv", "itruediv", "true_divide", "floor_divide", "floor_divide_", "floordiv",
    "ifloordiv", params="input other rounding_mode")
def div(t, n, c):
    """``a / b``, rounded as ``rounding_mode`` says (``floor_divide`` and ``//`` round to the floor)."""
    a, b = _two(t, c)
    mode = "floor" if "floor" in _target_name(n) else c.val("rounding_mode")
    if mode not in (None, "floor", "trunc"):
        raise Untranslatable(f"rounding_mode={mode!r}")
    inputs = [_operand(t, a, b), _operand(t, b, a)]
    if mode is None:
        t.emit("Div", inputs)
        return
    q = _temp(t, "quotient", _out_shape(t))
    t.emit("Div", inputs, q)
    _rounded(t, q, mode)


@op("remainder", "remainder_", "mod", "imod", "fmod", "fmod_", params="input other")
def remainder(t, n, c):
    """``fmod``: Mod(fmod=1), the sign of ``a``; ``remainder`` and ``%``: ``a − b·floor(a/b)``, the sign of ``b``."""
    a, b = _two(t, c)
    a, b = _operand(t, a, b), _operand(t, b, a)
    if _target_name(n).startswith("fmod"):
        t.emit("Mod", [a, b], fmod=1)
        return
    shape = _out_shape(t)
    q, low, back = (_temp(t, k, shape) for k in ("quotient", "floor", "multiple"))
    t.emit("Div", [a, b], q)
    t.emit("Floor", [q], low)
    t.emit("Mul", [b, low], back)
    t.emit("Sub", [a, back])


@op("addcmul", "addcmul_", "addcdiv", "addcdiv_", params="input tensor1 tensor2 value")
def addcmul(t, n, c):
    """``input + value·t1·t2`` (addcmul) or ``input + value·t1/t2`` (addcdiv)."""
    t1, t2 = c.get("tensor1"), c.get("tensor2")
    shape = tuple(np.broadcast_shapes(_shape_of(t, t1), _shape_of(t, t2)))
    prod = _temp(t, "product", shape)
    t.emit("Div" if "div" in _target_name(n) else "Mul", [_operand(t, t1, t2), _operand(t, t2, t1)], prod)
    t.emit("Add", [_operand(t, c.get("input"), t1), _scaled(t, prod, c.val("value", 1), shape)])


@op("where", params="condition input other")
def where(t, n, c):
    t.emit("Where", [c.tensor("condition"), c.tensor("input"), c.tensor("other")])


@op("masked_fill", "masked_fill_", params="input mask value")
def masked_fill(t, n, c):
    value = c.val("value")
    fill = c.tensor("value") if t.is_tensor(c.get("value")) else t.constant(np.array(value, np.float32))
    t.emit("Where", [c.tensor("mask"), fill, c.tensor()])


# -- layout -------------------------------------------------------------------------

@op("view", "reshape", "_unsafe_view", params="input size*")
def view(t, n, c):
    key = "size" if "size" in c.raw else "shape"
    node = _reshape(t, c.tensor())
    out = _out_shape(t)
    sizes = _list(c.get(key))
    if len(sizes) == 1 and isinstance(sizes[0], fx.Node):  # view(size_out), a size built at run time
        _bind_appended_sizes(t, node, sizes[0], out)
        return
    for j, raw in enumerate(sizes):
        if raw != -1 and j < len(out):
            t.bind(node, 1, j, c.path(key, j), out[j])


def _bind_appended_sizes(t, node, size: fx.Node, out) -> None:
    """``x.size()[:-1] + (self.nf,)`` (Hugging Face's Conv1D): the literals appended to a run-time
    size are bound in the ``add`` that builds it."""
    if size.target is not operator.add or len(size.args) != 2 or not isinstance(size.args[1], tuple):
        return
    head = t.value(size.args[0])
    if not isinstance(head, (tuple, list)):
        return
    for k, item in enumerate(size.args[1]):
        j = len(head) + k
        if isinstance(item, int) and item != -1 and j < len(out):
            t.model.bindings.append(Binding(node, 1, j, size, ("args", 1, k), int(out[j])))


@op("unflatten", params="input dim sizes")
def unflatten(t, n, c):
    node = _reshape(t, c.tensor())
    rank_in = len(t.shape(c.get("input")))
    dim = c.val("dim") % rank_in
    out = _out_shape(t)
    for j, raw in enumerate(_list(c.get("sizes"))):
        if raw != -1:
            t.bind(node, 1, dim + j, c.path("sizes", j), out[dim + j])


@op("flatten", "squeeze", "unsqueeze", "squeeze_", "unsqueeze_", "expand_as", "view_as", "reshape_as",
    params="input")
def reshape_like(t, n, c):
    name = _target_name(n)
    if name == "expand_as" and t.shape(c.get("input")) != _out_shape(t):
        return expand(t, n, c)
    _reshape(t, c.tensor())


@op("expand", params="input size*")
def expand(t, n, c):
    out = _out_shape(t)
    node = t.emit("Expand", [c.tensor(), t.constant(np.array(out, np.int64))])
    if "size" in c.raw:
        for j, raw in enumerate(_list(c.get("size"))):
            if raw != -1:
                t.bind(node, 1, j, c.path("size", j), out[j])


@op("permute", params="input dims*")
def permute(t, n, c):
    rank = len(_out_shape(t))
    t.emit("Transpose", [c.tensor()], perm=[d % rank for d in _ints(c.val("dims"))])


@op("transpose", "swapaxes", "swapdims", "transpose_", params="input dim0 dim1")
def transpose(t, n, c):
    rank = len(_out_shape(t))
    perm = list(range(rank))
    a, b = c.val("dim0") % rank, c.val("dim1") % rank
    perm[a], perm[b] = perm[b], perm[a]
    t.emit("Transpose", [c.tensor()], perm=perm)


@op("t", "numpy_T", params="input")
def transpose_2d(t, n, c):
    rank = len(_out_shape(t))
    t.emit("Transpose", [c.tensor()], perm=list(reversed(range(rank))))


@op("cat", "concat", "concatenate", params="tensors dim")
def cat(t, n, c):
    tensors = [x for x in c.get("tensors") if not (t.is_tensor(x) and 0 in t.shape(x))]
    rank = len(_out_shape(t))
    t.emit("Concat", [t.tensor(x) for x in tensors], axis=c.val("dim", 0) % rank)


@op("stack", params="tensors dim")
def stack(t, n, c):
    out = _out_shape(t)
    axis = c.val("dim", 0) % len(out)
    pieces = []
    for x in c.get("tensors"):
        shape = list(t.shape(x))
        shape.insert(axis, 1)
        piece = _temp(t, "stacked", shape)
        _reshape(t, t.tensor(x), piece, shape)
        pieces.append(piece)
    t.emit("Concat", pieces, axis=axis)


def _split(t, n, c, x_raw, axis, sizes, bind_key=None):
    x = t.tensor(x_raw)
    outputs = [t.output(str(i)) for i in range(len(sizes))]
    base = t.shape(x_raw)
    for name, size in zip(outputs, sizes):
        shape = list(base)
        shape[axis] = size
        t.set_shape(name, shape)
    node = t.emit("Split", [x, t.constant(np.array(sizes, np.int64))], outputs, axis=axis)
    return node


@op("split", "split_with_sizes", params="input split_size_or_sections dim")
def split(t, n, c):
    key = next(k for k in ("split_size_or_sections", "split_size", "split_sizes") if k in c.raw)
    axis = c.val("dim", 0) % len(t.shape(c.get("input")))
    size = t.shape(c.get("input"))[axis]
    spec = c.val(key)
    sizes = _ints(spec) if isinstance(spec, (list, tuple)) else [min(spec, size - i) for i in range(0, size, spec)]
    node = _split(t, n, c, c.get("input"), axis, sizes)
    _resize_split_later(t, n, c, node, key, axis)


@op("chunk", params="input chunks dim")
def chunk(t, n, c):
    axis = c.val("dim", 0) % len(t.shape(c.get("input")))
    sizes = [s.shape[axis] for s in t.info(n)]
    node = _split(t, n, c, c.get("input"), axis, sizes)
    _resize_split_later(t, n, c, node, "chunks", axis)


def _resize_split_later(t, n, c, node, key, axis):
    """After a prune, uneven pieces need explicit sizes: the call becomes ``split(sizes)``."""
    def rewrite(changed, graph=None, node=node) -> bool:
        if not changed(c.get("input"), axis):
            return False
        sizes = [int(v) for v in graph.constants[node.inputs[1]]]
        n.target = torch.split if n.op == "call_function" and not isinstance(n.target, torch._ops.OpOverload) \
            else (torch.ops.aten.split_with_sizes.default if n.op == "call_function" else "split")
        args = [n.args[0] if n.args else n.kwargs.get("input", n.kwargs.get("self"))]
        n.args = (args[0], sizes, axis)
        n.kwargs = {}
        return True
    rewrite.needs_graph = True
    t.model.fixups.append(rewrite)


@op("meshgrid", params="tensors* indexing")
def meshgrid(t, n, c):
    """Output k is input k (1-D, or a scalar) along axis k, expanded to the grid: Reshape, Expand.

    ``indexing="xy"`` swaps the first two axes of the grid.
    """
    tensors = c.get("tensors")
    grid = t.info(n)[0].shape
    axes = list(range(len(tensors)))
    if c.val("indexing", "ij") == "xy" and len(axes) > 1:
        axes[0], axes[1] = 1, 0
    for k, (x, axis) in enumerate(zip(tensors, axes)):
        if len(t.shape(x)) > 1:
            raise Untranslatable("meshgrid of a tensor with several axes")
        line = [1] * len(grid)
        line[axis] = grid[axis]
        piece = _temp(t, f"line{k}", line)
        _reshape(t, t.tensor(x), piece, line)
        t.set_shape(t.output(str(k)), grid)
        t.emit("Expand", [piece, t.constant(np.array(grid, np.int64))], t.output(str(k)))


@op("unbind", params="input dim")
def unbind(t, n, c):
    x_raw = c.get("input")
    axis = c.val("dim", 0) % len(t.shape(x_raw))
    count = t.shape(x_raw)[axis]
    node_outputs = []
    base = list(t.shape(x_raw))
    base[axis] = 1
    for i in range(count):
        name = _temp(t, f"piece{i}", base)
        node_outputs.append(name)
    t.emit("Split", [t.tensor(x_raw), t.constant(np.ones(count, np.int64))], node_outputs, axis=axis)
    for i, piece in enumerate(node_outputs):
        shape = list(t.shape(x_raw))
        del shape[axis]
        t.set_shape(t.output(str(i)), shape)
        _reshape(t, piece, t.output(str(i)), shape)


@op("slice", params="input dim start end step")
def slice_(t, n, c):
    rank = len(t.shape(c.get("input")))
    axis = c.val("dim", 0) % rank
    node = _emit_slice(t, c.tensor(), axis, c.val("start"), c.val("end"), c.val("step", 1), None)
    for slot, key in ((1, "start"), (2, "end")):
        raw = c.get(key)
        if raw is not None and key in c.loc:
            t.bind(node, slot, 0, c.path(key), c.val(key))


def _emit_slice(t, x, axis, start, end, step, out):
    start = 0 if start is None else int(start)
    end = BIG if end is None else min(int(end), BIG)
    return t.emit("Slice", [x, t.constant(np.array([start], np.int64)), t.constant(np.array([end], np.int64)),
                            t.constant(np.array([axis], np.int64)),
                            t.constant(np.array([step or 1], np.int64))], out)


@op("slice_scatter", params="input src dim start end step")
def slice_scatter(t, n, c):
    """``input`` with ``[start:end]`` along ``dim`` replaced by ``src``: Concat(head, src, tail)."""
    if c.val("step", 1) not in (1, None):
        raise Untranslatable("strided slice_scatter")
    shape = list(t.shape(c.get("input")))
    axis = c.val("dim", 0) % len(shape)
    size = shape[axis]
    start, end = c.val("start"), c.val("end")
    start = 0 if start is None else min(start + size if start < 0 else start, size)
    end = size if end is None else min(end + size if end < 0 else end, size)
    x = c.tensor()
    pieces = []
    if start > 0:
        head = _temp(t, "head", shape[:axis] + [start] + shape[axis + 1:])
        node = _emit_slice(t, x, axis, 0, start, 1, head)
        if c.get("start") is not None and "start" in c.loc:
            t.bind(node, 2, 0, c.path("start"), start)
        pieces.append(head)
    pieces.append(c.tensor("src"))
    if end < size:
        tail = _temp(t, "tail", shape[:axis] + [size - end] + shape[axis + 1:])
        node = _emit_slice(t, x, axis, end, BIG, 1, tail)
        if c.get("end") is not None and "end" in c.loc:
            t.bind(node, 1, 0, c.path("end"), end)
        pieces.append(tail)
    t.emit("Concat", pieces, axis=axis)


@op("zero", "zeros_like", params="input")
def zeros_like(t, n, c):
    """A tensor of zeros shaped like ``input``: ``input · 0`` couples it like the input."""
    t.emit("Mul", [c.tensor(), t.constant(np.array(0, np.float32))])


@op("select", params="input dim index")
def select(t, n, c):
    rank = len(t.shape(c.get("input")))
    t.emit("Gather", [c.tensor(), t.constant(np.array(c.val("index"), np.int64))],
           axis=c.val("dim") % rank)


@op("narrow", params="input dim start length")
def narrow(t, n, c):
    rank = len(t.shape(c.get("input")))
    axis = c.val("dim") % rank
    start = c.val("start")
    size = t.shape(c.get("input"))[axis]
    start = start + size if start < 0 else start
    node = _emit_slice(t, c.tensor(), axis, start, start + c.val("length"), 1, None)

    def renarrow(changed, graph) -> bool:
        """``narrow(dim, start, length)`` from the Slice's new bounds."""
        if not changed(c.get("input"), axis):
            return False
        new_start = int(graph.constants[node.inputs[1]][0])
        new_end = int(graph.constants[node.inputs[2]][0])
        args = list(n.args)
        values = {"start": new_start, "length": new_end - new_start}
        for key, value in values.items():
            where = c.loc[key]
            if where[0] == "args":
                args[where[1]] = value
            else:
                n.kwargs = {**n.kwargs, where[1]: value}
        n.args = tuple(args)
        return True
    renarrow.needs_graph = True
    t.model.fixups.append(renarrow)


@op("index", params="input indices")
def index(t, n, c):
    indices = c.get("indices")
    present = [i for i, x in enumerate(indices) if x is not None]
    if len(present) != 1:
        raise Untranslatable("advanced indexing with several index tensors")
    if not _is_index(t, indices[present[0]]):
        raise Untranslatable("indexing by a boolean mask")
    t.emit("Gather", [c.tensor(), t.tensor(indices[present[0]])], axis=present[0])


@op("roll", params="input shifts dims")
def roll(t, n, c):
    """``roll`` is two slices and a concat along each rolled axis."""
    shape = list(t.shape(c.get("input")))
    rank = len(shape)
    shifts, dims = _ints(c.val("shifts")), _ints(c.val("dims", []) or [])
    if not dims:
        raise Untranslatable("roll over the flattened tensor")
    cur = c.tensor()
    heads = {}
    for k, (shift, dim) in enumerate(zip(shifts, dims)):
        dim %= rank
        size = shape[dim]
        shift %= size
        last = k == len(dims) - 1
        out = t.output() if last else _temp(t, "rolled", shape)
        if shift == 0:
            t.emit("Identity", [cur], out)
        else:
            head = list(shape)
            head[dim] = shift
            tail = list(shape)
            tail[dim] = size - shift
            a = _temp(t, "roll_head", head)
            b = _temp(t, "roll_tail", tail)
            heads[k] = (_emit_slice(t, cur, dim, size - shift, size, 1, a), a, dim)
            _emit_slice(t, cur, dim, 0, size - shift, 1, b)
            t.emit("Concat", [a, b], out, axis=dim)
        cur = out

    def reshift(changed, graph) -> bool:
        """A roll along a pruned axis shifts by the kept part of the rolled-over head."""
        if not any(changed(c.get("input"), d % rank) for d in dims):
            return False
        new = list(shifts)
        for k, (node, head, dim) in heads.items():
            new[k] = int(graph.tensors[head].shape[dim])
        where = c.loc["shifts"]
        value = new if isinstance(c.val("shifts"), (list, tuple)) else new[0]
        if where[0] == "args":
            args = list(n.args)
            args[where[1]] = value
            n.args = tuple(args)
        else:
            n.kwargs = {**n.kwargs, where[1]: value}
        return True
    reshift.needs_graph = True
    t.model.fixups.append(reshift)


@op("getitem", params="input index")
def getitem(t, n, c):
    source = c.get("input")
    if not t.is_tensor(source):  # an element of a tuple-valued call
        key = c.val("index")
        items = t.info(source)
        if isinstance(key, int) and isinstance(items, (list, tuple)):
            key %= len(items)  # state[-1]
        alias = f"{t.model.ir_name.get(source.name, source.name)}#{key}"
        if alias not in t.tensors and not any(k.startswith(f"{alias}#") for k in t.tensors):  # nor a nested tuple
            raise Untranslatable(f"element {key} of '{source.name}' is unknown")
        t.model.ir_name[n.name] = alias
        return
    _tensor_index(t, n, c)


def _is_index(t, arg) -> bool:
    """An integer index tensor (a boolean one is a mask: it selects, it does not gather)."""
    info = t.info(arg) if t.is_tensor(arg) else None
    return info is not None and info.dtype is not None and info.dtype.kind in "iu"


def _tensor_index(t, n, c):
    """``x[...]`` as a chain of Slice / Gather / Reshape (for ``None``) along the current axis;
    an integer index tensor of any rank is a Gather whose axes replace the one it indexes
    (``attention_biases[:, idx]``, idx ``[N, N]``: ``[heads, N] -> [heads, N, N]``)."""
    raw = c.get("index")
    items = list(raw) if isinstance(raw, tuple) else [raw]
    base = c.path("index")
    paths = [base + (k,) for k in range(len(items))] if isinstance(raw, tuple) else [base]
    values = [t.value(item) if not t.is_tensor(item) else item for item in items]
    kinds = []
    for item, value in zip(items, values):
        if item is Ellipsis or value is Ellipsis:
            kinds.append("ellipsis")
        elif item is None:
            kinds.append("none")
        elif isinstance(value, slice):
            kinds.append("slice")
        elif isinstance(value, int):
            kinds.append("int")
        elif _is_index(t, item):
            kinds.append("tensor")  # an index tensor of any rank: its axes replace the one it indexes
        else:
            raise Untranslatable(f"index {value!r}")
    if "tensor" in kinds and ("int" in kinds or kinds.count("tensor") > 1):
        raise Untranslatable("advanced indexing with several indices")
    cur, shape, pos = c.tensor(), list(t.shape(c.get("input"))), 0
    ops = []
    for k, (kind, item, value, path) in enumerate(zip(kinds, items, values, paths)):
        if kind == "ellipsis":
            pos = len(shape) - sum(1 for q in kinds[k + 1:] if q in ("slice", "int", "tensor"))
        elif kind == "none":
            shape.insert(pos, 1)
            ops.append(("reshape", pos, None, path, list(shape)))
            pos += 1
        elif kind == "slice":
            if not (value.start in (None, 0) and value.stop is None and value.step in (None, 1)):
                shape[pos] = len(range(*value.indices(shape[pos])))
                ops.append(("slice", pos, (item, value), path, list(shape)))
            pos += 1
        elif kind == "int":
            del shape[pos]
            ops.append(("int", pos, value, path, list(shape)))
        else:
            shape[pos:pos + 1] = t.shape(item)
            ops.append(("tensor", pos, item, path, list(shape)))
            pos += len(t.shape(item))
    if not ops:
        t.emit("Identity", [cur])
        return
    for k, (kind, axis, payload, path, out_shape) in enumerate(ops):
        out = t.output() if k == len(ops) - 1 else _temp(t, "indexed", out_shape)
        if kind == "reshape":
            _reshape(t, cur, out, out_shape)
        elif kind == "int":
            t.emit("Gather", [cur, t.constant(np.array(payload, np.int64))], out, axis=axis)
        elif kind == "tensor":
            t.emit("Gather", [cur, t.tensor(payload)], out, axis=axis)
        else:
            raw_slice, sl = payload
            node = _emit_slice(t, cur, axis, sl.start, sl.stop, sl.step, out)
            for slot, attr in ((1, "start"), (2, "stop")):
                if isinstance(raw_slice, slice) and getattr(raw_slice, attr) is not None:
                    t.bind(node, slot, 0, path + (attr,), getattr(sl, attr))
        cur = out


# -- reductions, pooling, resampling ------------------------------------------------

@op("mean", "sum", "amax", "amin", "any", "all", params="input dim keepdim")
def reduce(t, n, c):
    """A reduction over ``dim`` (all axes if None); ``any``/``all`` of booleans are its max/min."""
    rank = len(t.shape(c.get("input")))
    dims = c.val("dim")
    axes = list(range(rank)) if dims in (None, []) else [d % rank for d in _ints(dims)]
    keep = int(bool(c.val("keepdim", False)))
    name = {"mean": "ReduceMean", "sum": "ReduceSum", "amax": "ReduceMax", "amin": "ReduceMin", "any": "ReduceMax",
            "all": "ReduceMin"}[_target_name(n)]
    if name == "ReduceSum":
        t.emit(name, [c.tensor(), t.constant(np.array(axes, np.int64))], keepdims=keep)
    else:
        t.emit(name, [c.tensor()], axes=axes, keepdims=keep)


@op("var", "std", "var_mean", "std_mean", params="input dim unbiased keepdim")
def variance(t, n, c):
    """``var = mean((x − mean(x))²) · N/(N − correction)`` over ``dim`` (N elements), ``std = √var``.

    ONNX has no Var: ReduceMean, Sub, Mul, ReduceMean, Mul (and Sqrt). ``var_mean`` and
    ``std_mean`` also return the mean. ``correction`` defaults to 1 (``unbiased=True``).
    """
    name = _target_name(n)
    shape = t.shape(c.get("input"))
    dims, unbiased = c.val("dim"), c.val("unbiased", True)
    if isinstance(dims, bool):  # torch.var(x, unbiased)
        dims, unbiased = None, dims
    axes = list(range(len(shape))) if dims in (None, []) else sorted({d % len(shape) for d in _ints(dims)})
    correction = c.val("correction")
    correction = (1 if unbiased in (None, True) else 0) if correction is None else correction
    count = math.prod(shape[a] for a in axes)
    if count <= correction:
        raise Untranslatable(f"{count} elements with correction {correction}")
    keep = int(bool(c.val("keepdim", False)))
    x = c.tensor()
    kept = tuple(1 if a in axes else s for a, s in enumerate(shape))
    out = tuple(s for a, s in enumerate(kept) if keep or a not in axes)
    mean, diff, square, spread = (_temp(t, k, sh) for k, sh in (
        ("mean", kept), ("centred", shape), ("squared", shape), ("spread", out)))
    t.emit("ReduceMean", [x], mean, axes=axes, keepdims=1)
    t.emit("Sub", [x, mean], diff)
    t.emit("Mul", [diff, diff], square)
    t.emit("ReduceMean", [square], spread, axes=axes, keepdims=keep)
    var = _scaled(t, spread, count / (count - correction), out)
    pair = name.endswith("_mean")
    result = t.output("0") if pair else t.output()
    t.emit("Sqrt" if name.startswith("std") else "Identity", [var], result)
    if pair:
        for k in ("0", "1"):
            t.set_shape(t.output(k), out)
        t.emit("ReduceMean", [x], t.output("1"), axes=axes, keepdims=keep)


@op("linalg_vector_norm", "norm", params="input ord dim keepdim")
def vector_norm(t, n, c):
    rank = len(t.shape(c.get("input")))
    dims = c.val("dim")
    axes = list(range(rank)) if dims in (None, []) else [d % rank for d in _ints(dims)]
    t.emit("ReduceL2" if c.val("ord", 2) in (2, 2.0, None) else "ReduceL1", [c.tensor()], axes=axes,
           keepdims=int(bool(c.val("keepdim", False))))


@op("normalize", params="input p dim eps")
def normalize(t, n, c):
    """``F.normalize``: ``x / max(‖x‖_p, ε)`` over ``dim`` (p = 1 or 2), as ReduceL2/L1, Max, Div."""
    order = c.val("p", 2.0)
    if order not in (1, 1.0, 2, 2.0):
        raise Untranslatable(f"normalize with p={order}")
    dim = c.val("dim", 1)
    if not isinstance(dim, int):
        raise Untranslatable(f"normalize over several axes {dim}")
    shape, dtype = t.shape(c.get("input")), t.info(c.get("input")).dtype
    axis = dim % len(shape)
    kept = tuple(1 if a == axis else d for a, d in enumerate(shape))
    norm, floored = _temp(t, "norm", kept, dtype), _temp(t, "norm_floored", kept, dtype)
    t.emit("ReduceL2" if order in (2, 2.0) else "ReduceL1", [c.tensor()], norm, axes=[axis], keepdims=1)
    t.emit("Max", [norm, t.constant(np.array(c.val("eps", 1e-12), dtype))], floored)
    t.emit("Div", [c.tensor(), floored])


@op("softmax", "log_softmax", "_softmax", params="input dim")
def softmax(t, n, c):
    rank = len(_out_shape(t))
    t.emit("LogSoftmax" if "log" in _target_name(n) else "Softmax", [c.tensor()], axis=c.val("dim") % rank)


def _pool(t, c, kind):
    t.emit(kind, [c.tensor()])


@op("adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d", "_adaptive_avg_pool2d",
    params="input output_size")
def adaptive_avg_pool(t, n, c):
    if all(s == 1 for s in _out_shape(t)[2:]):
        t.emit("GlobalAveragePool", [c.tensor()])
    else:
        t.emit("AveragePool", [c.tensor()])


@op("adaptive_max_pool1d", "adaptive_max_pool2d", "adaptive_max_pool3d", params="input output_size")
def adaptive_max_pool(t, n, c):
    if isinstance(t.info(n), list):
        raise Untranslatable("pooling indices encode channel positions")
    t.emit("GlobalMaxPool" if all(s == 1 for s in _out_shape(t)[2:]) else "MaxPool", [c.tensor()])


@op("max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d",
    params="input kernel_size stride padding")
def pool(t, n, c):
    if isinstance(t.info(n), list):
        raise Untranslatable("pooling indices encode channel positions")
    t.emit("MaxPool" if "max" in _target_name(n) else "AveragePool", [c.tensor()])


UPSAMPLE_OPS = ("upsample_nearest1d", "upsample_nearest2d", "upsample_nearest3d", "_upsample_nearest_exact1d",
                "_upsample_nearest_exact2d", "_upsample_nearest_exact3d", "upsample_linear1d", "upsample_bilinear2d",
                "upsample_trilinear3d", "upsample_bicubic2d", "_upsample_bilinear2d_aa", "_upsample_bicubic2d_aa")


@op("interpolate", "upsample", *UPSAMPLE_OPS, params="input")
def interpolate(t, n, c):
    out = _out_shape(t)
    t.emit("Resize", [c.tensor(), "", "", t.constant(np.array(out, np.int64))], mode="linear")


PAD_MODES = {"constant": "constant", None: "constant", "reflect": "reflect", "replicate": "edge",
             "circular": "wrap"}  # torch's padding mode -> ONNX Pad's (wrap: opset 19)
PAD_OPS = {"reflection_pad1d": "reflect", "reflection_pad2d": "reflect", "reflection_pad3d": "reflect",
           "replication_pad1d": "edge", "replication_pad2d": "edge", "replication_pad3d": "edge",
           "circular_pad1d": "wrap", "circular_pad2d": "wrap", "circular_pad3d": "wrap"}


def _pad(t: Translator, x: str, shape: tuple, spec: list[int], mode: str, out: bool = False) -> str:
    """``F.pad``'s ``spec`` (last axis first, ``(begin, end)`` pairs) as an ONNX Pad of ``x``
    (of ``shape``); into a new tensor when ``out`` (the call's own output otherwise)."""
    rank = len(shape)
    begins, ends = [0] * rank, [0] * rank
    for k in range(len(spec) // 2):
        begins[rank - 1 - k], ends[rank - 1 - k] = spec[2 * k], spec[2 * k + 1]
    padded = _temp(t, "padded", [s + b + e for s, b, e in zip(shape, begins, ends)]) if out else None
    return t.emit("Pad", [x, t.constant(np.array(begins + ends, np.int64))], padded, mode=mode).outputs[0]


@op("pad", "constant_pad_nd", *PAD_OPS, params="input pad mode value")
def pad(t, n, c):
    """Every padding mode pads spatial axes only, element by element: the channels pass through."""
    mode = PAD_OPS.get(_target_name(n)) or PAD_MODES.get(c.val("mode", "constant"))
    if mode is None:
        raise Untranslatable(f"{c.val('mode')} padding")
    spec = _ints(c.val("pad") if "pad" in c.raw else c.val("padding"))
    _pad(t, c.tensor(), tuple(t.shape(c.get("input"))), spec, mode)


@op("repeat", "tile", params="input repeats*")
def repeat(t, n, c):
    """``x.repeat(*r)`` / ``torch.tile(x, r)`` as ``Tile``; ``x`` first gets leading axes of 1
    when ``r`` is longer than its rank (tile instead pads a shorter ``r`` with 1s). A repeat
    count computed at run time is bound, so it becomes its literal if the prune would change it."""
    name = "dims" if "dims" in c.raw else "repeats"
    if isinstance(c.get(name), fx.Node):
        raise Untranslatable("repeat counts computed at run time as one list")
    raw = _list(c.get(name))
    shape = tuple(t.shape(c.get("input")))
    reps = [int(v) for v in t.value(raw)]
    lead = max(len(shape) - len(reps), 0)
    reps = [1] * lead + reps
    x = c.tensor()
    if len(reps) > len(shape):
        full = (1,) * (len(reps) - len(shape)) + shape
        x = _reshape(t, x, _temp(t, "tile_input", full), full).outputs[0]
    node = t.emit("Tile", [x, t.constant(np.array(reps, np.int64))])
    for j, entry in enumerate(raw):
        if isinstance(entry, fx.Node):
            t.bind(node, 1, lead + j, c.path(name, j), reps[lead + j])


@op("repeat_interleave", params="input repeats dim output_size")
def repeat_interleave(t, n, c):
    """``repeat_interleave(x, r, dim)``: each element repeated ``r`` times in place, i.e. a new
    axis of 1 after ``dim`` tiled ``r`` times and merged back (element ``j·r + k`` is ``j``)."""
    reps = c.val("repeats")
    if not isinstance(reps, int) or "input" not in c.raw or not t.is_tensor(c.get("input")):
        raise Untranslatable("repeat_interleave with per-element repeats")
    shape, dim, x = tuple(t.shape(c.get("input"))), c.val("dim"), c.tensor()
    if dim is None:  # flattened first
        shape, dim = (math.prod(shape),), 0
        x = _reshape(t, x, _temp(t, "flat", shape), shape).outputs[0]
    dim = _axis(dim, len(shape))
    spread = shape[:dim + 1] + (1,) + shape[dim + 1:]
    tiled = spread[:dim + 1] + (reps,) + spread[dim + 2:]
    x = _reshape(t, x, _temp(t, "spread", spread), spread).outputs[0]
    x = t.emit("Tile", [x, t.constant(np.array([reps if a == dim + 1 else 1 for a in range(len(spread))],
                                                  np.int64))], _temp(t, "tiled", tiled)).outputs[0]
    _reshape(t, x)


def _arg(t: Translator, n: fx.Node, index: int, name: str, default=None):
    """Argument ``index`` (or keyword ``name``) of ``n`` as its concrete value."""
    return t.value(n.args[index] if len(n.args) > index else n.kwargs.get(name, default))


@op("unfold", "im2col", "fold", "col2im", params="input")
def sliding_windows(t, n, c):
    """``F.unfold``/``aten.im2col`` as ``TorchIm2Col``, ``F.fold``/``aten.col2im`` as ``TorchCol2Im``
    (channel ``c`` is columns ``c·K … c·K + K − 1``, ``K`` the kernel's elements) and
    ``Tensor.unfold``/``aten.unfold`` as ``TorchWindows`` (:mod:`..channels.rules.windows`)."""
    name = _target_name(n)
    if name == "unfold" and (n.op == "call_method" or isinstance(n.target, torch._ops.OpOverload)):
        t.emit("TorchWindows", [c.tensor()], axis=int(_arg(t, n, 1, "dimension")))
        return
    kernel = _arg(t, n, 1 if name in ("unfold", "im2col") else 2, "kernel_size")
    op_type = "TorchIm2Col" if name in ("unfold", "im2col") else "TorchCol2Im"
    t.emit(op_type, [c.tensor()], kernel_elements=math.prod(_ints(kernel, 2)))


# -- leaf modules --------------------------------------------------------------------

def _param(t: Translator, n: fx.Node, attr: str) -> str:
    """A leaf module's parameter or buffer as a constant named by its state_dict name."""
    name = f"{n.target}.{attr}"
    if name not in t.constants:
        value = _fetch(t.gm, name)
        t.constants[name] = value.detach().cpu().numpy()
        t.model.params[name] = value
    return name


def _module(t: Translator, n: fx.Node, m: nn.Module) -> None:
    source = n.args[0] if n.args else next(iter(n.kwargs.values()))
    x = t.tensor(source)
    opt = lambda a: _param(t, n, a) if getattr(m, a, None) is not None else ""  # noqa: E731
    if isinstance(m, nn.modules.conv._ConvNd):
        padding = m.padding
        if m.padding_mode != "zeros":  # the module pads first (F.pad), then convolves unpadded
            x = _pad(t, x, tuple(t.shape(source)), list(m._reversed_padding_repeated_twice),
                     PAD_MODES[m.padding_mode], out=True)
            padding = 0
        _conv(t, x, _param(t, n, "weight"), opt("bias"), m.stride, padding, m.dilation, m.groups,
              transposed=m.transposed, output_padding=m.output_padding)
    elif isinstance(m, nn.Linear):
        _linear(t, x, _param(t, n, "weight"), opt("bias"))
    elif isinstance(m, nn.modules.batchnorm._BatchNorm):
        use_stats = m.running_mean is not None
        _batch_norm(t, x, opt("weight") or None, opt("bias") or None,
                    _param(t, n, "running_mean") if use_stats else None,
                    _param(t, n, "running_var") if use_stats else None, m.eps, m.num_features)
    elif isinstance(m, nn.LayerNorm):
        inputs = [x] + [p for p in (opt("weight"), opt("bias")) if p]
        node = t.emit("LayerNormalization", inputs, axis=-len(m.normalized_shape), epsilon=float(m.eps))
        node.attrs["normalized_shape"] = list(m.normalized_shape)
    elif isinstance(m, nn.GroupNorm):
        if not m.affine:
            raise Untranslatable("GroupNorm without affine parameters (its num_groups could not follow)")
        t.emit("GroupNormalization", [x, _param(t, n, "weight"), _param(t, n, "bias")],
               num_groups=int(m.num_groups), epsilon=float(m.eps))
    elif isinstance(m, nn.RMSNorm):
        _rms_norm(t, n.args[0], len(m.normalized_shape), m.eps, opt("weight") or None)
    elif isinstance(m, nn.Embedding):
        if m.max_norm is not None:
            raise Untranslatable("embedding with max_norm renormalises rows")
        t.emit("Gather", [_param(t, n, "weight"), x], axis=0)
    elif isinstance(m, (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.Identity)):
        if m.training and not isinstance(m, nn.Identity):
            raise Untranslatable("dropout in training mode")
        t.emit("Identity", [x])
    elif isinstance(m, (nn.ReLU6, nn.Hardtanh)):
        t.emit("Clip", [x])
    elif type(m).__name__ in MODULE_UNARY:
        t.emit(MODULE_UNARY[type(m).__name__], [x])
    elif isinstance(m, (nn.Softmax, nn.LogSoftmax)):
        rank = len(_out_shape(t))
        t.emit("Softmax" if isinstance(m, nn.Softmax) else "LogSoftmax", [x], axis=(m.dim or 0) % rank)
    elif isinstance(m, (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)):
        t.emit("GlobalAveragePool" if all(s == 1 for s in _out_shape(t)[2:]) else "AveragePool", [x])
    elif isinstance(m, (nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
                        nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)):
        if getattr(m, "return_indices", False):
            raise Untranslatable("pooling indices encode channel positions")
        t.emit("MaxPool", [x])
    elif isinstance(m, (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)):
        t.emit("AveragePool", [x])
    elif isinstance(m, (nn.Flatten, nn.Unflatten)):
        _reshape(t, x)
    elif isinstance(m, nn.Upsample):
        t.emit("Resize", [x, "", "", t.constant(np.array(_out_shape(t), np.int64))], mode="linear")
    elif isinstance(m, nn.RNNBase):
        _recurrent_module(t, n, m, x)
    else:
        raise Untranslatable(f"no translation for module {type(m).__name__}")


RECURRENT_GATES = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}


def _recurrent_module(t: Translator, n: fx.Node, m: nn.RNNBase, x: str) -> None:
    """``nn.LSTM``/``nn.GRU``/``nn.RNN`` as one ``TorchRecurrent`` node over the module's own
    parameters (``weight_ih_l{k}[_reverse]``, ``weight_hh_l{k}``, biases; see the rule in
    :mod:`graphprune.channels.rules.recurrent`). Its outputs are ``(output, h_n)`` or
    ``(output, (h_n, c_n))``; an initial state, a projection or an unbatched input pins it."""
    if m.mode not in RECURRENT_GATES:
        raise Untranslatable(f"recurrent mode {m.mode}")
    if getattr(m, "proj_size", 0):
        raise Untranslatable("LSTM with proj_size")
    if len(n.args) > 1 or any(v is not None for k, v in n.kwargs.items() if k != "input"):
        raise Untranslatable("an initial state is given")
    if len(t.shape(n.args[0] if n.args else next(iter(n.kwargs.values())))) != 3:
        raise Untranslatable("unbatched input")
    if m.training and m.dropout and m.num_layers > 1:
        raise Untranslatable("dropout between layers in training mode")
    suffixes = [""] + (["_reverse"] if m.bidirectional else [])
    kinds = ["weight_ih", "weight_hh"] + (["bias_ih", "bias_hh"] if m.bias else [])
    params = [_param(t, n, f"{kind}_l{layer}{sfx}")
              for layer in range(m.num_layers) for sfx in suffixes for kind in kinds]
    info = t.info(n)
    states = info[1] if isinstance(info[1], (tuple, list)) else [info[1]]
    outputs = [t.output("0")] + ([t.output("1#0"), t.output("1#1")] if m.mode == "LSTM" else [t.output("1")])
    t.tensors[outputs[0]] = info[0]
    for name, state in zip(outputs[1:], states):
        t.tensors[name] = TensorInfo(tuple(state.shape), info[0].dtype)
    t.emit("TorchRecurrent", [x] + params, outputs, gates=RECURRENT_GATES[m.mode], layers=m.num_layers,
           directions=len(suffixes), per_direction=len(kinds), hidden_size=m.hidden_size,
           batch_first=int(m.batch_first))


@op("lstm", "gru", "rnn_tanh", "rnn_relu",
    params="input hx params has_biases num_layers dropout train bidirectional batch_first")
def recurrent_call(t, n, c):
    """``aten.lstm/gru/rnn_*.input`` (an ``nn.LSTM`` as ``torch.export`` lowers it) as the same
    ``TorchRecurrent`` node as the module, its zero initial states as extra inputs whose hidden
    axis follows the units (their size literal is rewritten). A given state, a projection or a
    packed sequence pins it."""
    name = _target_name(n)
    mode = {"lstm": "LSTM", "gru": "GRU", "rnn_tanh": "RNN_TANH", "rnn_relu": "RNN_RELU"}[name]
    x, hx, params = c.get("input"), c.get("hx"), c.get("params")
    if not t.is_tensor(x) or not isinstance(params, (list, tuple)):
        raise Untranslatable("a packed sequence")
    states = list(hx) if isinstance(hx, (list, tuple)) else [hx]
    if not all(isinstance(s, fx.Node) and s.name in t.rec.static and isinstance(t.value(s), torch.Tensor)
               and not torch.count_nonzero(t.value(s)) for s in states):
        raise Untranslatable("an initial state is given")
    if len(t.shape(x)) != 3:
        raise Untranslatable("unbatched input")
    layers, dirs = int(c.val("num_layers")), 2 if c.val("bidirectional") else 1
    if c.val("train") and c.val("dropout") and layers > 1:
        raise Untranslatable("dropout between layers in training mode")
    per = 4 if c.val("has_biases") else 2
    if len(params) != layers * dirs * per:
        raise Untranslatable("LSTM with proj_size")
    hidden = int(t.shape(params[1])[1])
    info = t.info(n)
    outputs = [t.output(str(k)) for k in range(len(info))]
    for out, value in zip(outputs, info):
        t.tensors[out] = value
    t.emit("TorchRecurrent", [t.tensor(x)] + [t.tensor(p) for p in params] + [t.tensor(s) for s in states],
           outputs, gates=RECURRENT_GATES[mode], layers=layers, directions=dirs, per_direction=per,
           hidden_size=hidden, batch_first=int(bool(c.val("batch_first"))), initial_states=len(states))


MODULE_UNARY = {
    "ReLU": "Relu", "SiLU": "Swish", "GELU": "Gelu", "Sigmoid": "Sigmoid", "Tanh": "Tanh",
    "Hardswish": "HardSwish", "Hardsigmoid": "HardSigmoid", "LeakyReLU": "LeakyRelu", "ELU": "Elu",
    "SELU": "Selu", "Mish": "Mish", "Softplus": "Softplus", "PReLU": None,
}
MODULE_UNARY = {k: v for k, v in MODULE_UNARY.items() if v}


# -- dispatch --------------------------------------------------------------------------

def handler_for(t: Translator, n: fx.Node):
    if n.name in t.rec.static:
        if isinstance(t.info(n), list):
            return _static_tuple
        return _fill_handler(t, n)  # a static tensor is a graph node only when it is a fill
    if n.op == "call_module":
        m = t.gm.get_submodule(n.target)
        return lambda t_, n_: _module(t_, n_, m)
    name = _target_name(n)
    if n.op == "call_function" and isinstance(n.target, type):
        return _pack
    entry = HANDLERS.get(name)
    if entry is None:
        return None
    fn, params = entry
    return lambda t_, n_: fn(t_, n_, Call(t_, n_, params))


FILLS = {"zeros": 0, "ones": 1, "full": None, "new_zeros": 0, "new_ones": 1, "new_full": None}


def _fill_handler(t: Translator, n: fx.Node):
    """A tensor filled with one value from literal sizes (T5's ``torch.zeros((1, self.n_heads,
    q, k))`` position bias where a layer has no relative bias) is translated as
    ``ConstantOfShape``: every axis follows its size entry, so the heads axis is pruned
    with the heads it is added to, and the literal is rewritten. Other tensors computed
    at trace time stay constants with their axes pinned (None)."""
    name = _target_name(n)
    if name not in FILLS or n.op not in ("call_function", "call_method"):
        return None
    params = (["input"] if name.startswith("new_") else []) + \
        (["size", "fill_value"] if name.endswith("full") else ["size*"])
    return lambda t_, n_: fill(t_, n_, Call(t_, n_, params))


def fill(t, n, c):
    name = _target_name(n)
    value = FILLS[name]
    if value is None:
        value = c.val("fill_value")
    if not isinstance(value, (int, float, bool)):
        raise Untranslatable("fill value computed at run time")
    out = _out_shape(t)
    sizes = _list(c.get("size"))
    if len(sizes) != len(out):
        raise Untranslatable("size given as one run-time value")
    dtype = t.info(n).dtype or np.dtype("float32")
    node = t.emit("ConstantOfShape", [t.constant(np.array(out, np.int64))], value=np.array([value], dtype))
    for j, raw in enumerate(sizes):
        if isinstance(raw, int):
            t.bind(node, 0, j, c.path("size", j), out[j])


def _static_tuple(t: Translator, n: fx.Node) -> None:
    """A tuple computed at trace time from sizes (a ``meshgrid`` of ``arange``s) needs no IR:
    whatever reads its elements is computed at trace time too and folded into a constant."""


def _pack(t: Translator, n: fx.Node) -> None:
    """A container constructor (a namedtuple of outputs): its elements alias the inputs."""
    for i, arg in enumerate(n.args):
        if t.is_tensor(arg):
            t.model.ir_name[f"{n.name}#{i}"] = t.tensor(arg)
    raise Untranslatable("container of outputs")


def likely_opaque(gm: fx.GraphModule) -> int:
    """Calls a translation will not see into, judged without running the graph.

    Leaf modules of unknown classes and Python functions outside torch and the
    ``operator`` module (``torch.fx.wrap``-ed helpers) count; torch functions
    and methods without a handler are usually size arithmetic and do not.
    """
    count = 0
    for n in gm.graph.nodes:
        if n.op == "call_module":
            m = gm.get_submodule(n.target)
            count += not isinstance(m, KNOWN_MODULES) and type(m).__name__ not in MODULE_UNARY
        elif n.op == "call_function" and not isinstance(n.target, type):
            home = getattr(n.target, "__module__", "") or ""
            known = _target_name(n) in HANDLERS or home in ("torch", "_operator", "operator", "builtins") \
                or home.startswith("torch.")
            count += not known and n.target is not getattr
    return count


KNOWN_MODULES = (nn.modules.conv._ConvNd, nn.Linear, nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.RNNBase,
                 nn.RMSNorm, nn.GroupNorm,
                 nn.Embedding, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
                 nn.Identity, nn.ReLU6, nn.Hardtanh, nn.Softmax, nn.LogSoftmax, nn.AdaptiveAvgPool1d,
                 nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d,
                 nn.AdaptiveMaxPool3d, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d,
                 nn.AvgPool3d, nn.Flatten, nn.Unflatten, nn.Upsample)


def translate(module, gm: fx.GraphModule, tracer: str, example_inputs):
    return build(module, gm, tracer, example_inputs, handler_for)


__all__ = ["HANDLERS", "translate", "operator", "F"]
