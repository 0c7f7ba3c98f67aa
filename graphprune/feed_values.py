"""The values an input must take, read from the ops that consume it.

Random values are the oracle's strength, but many inputs are not data: a
``Resize``'s ``sizes``, a ``Split``'s part sizes, ``Unsqueeze`` axes, an NMS
IoU threshold, a ``Gather``'s indices, a ``Col2Im`` image shape, an integer
divisor. Random values there make the *original* model fail in onnxruntime
(or read out of range), so the oracle would refuse a valid model. Each rule
below states what one op needs at one input position and returns a valid
value of the requested shape and dtype, or None when it cannot tell (the
input then gets the default: standard normal floats, zero integers).

Rules are keyed by op type, one small function each (``@rule("Resize")``);
:func:`constrained_value` walks an input's consumers through ops that keep
its values (``Cast``, ``Identity``, ...) and asks their rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import onnx
from onnx import helper

VALUE_PATH_OPS = ("Cast", "Identity", "CastLike")  # keep shape and values: structural rules still apply
INDEX_PATH_OPS = VALUE_PATH_OPS + ("Unsqueeze", "Squeeze", "Reshape", "Flatten", "Expand", "Slice")
ARITHMETIC = ("Add", "Sub", "Mul", "Max", "Min", "Abs", "Neg", "Sum", "Mean", "Equal", "Less", "Greater",
              "LessOrEqual", "GreaterOrEqual", "BitwiseAnd", "BitwiseOr", "BitwiseXor", "BitwiseNot",
              "Sign", "Clip", "ReduceSum", "ReduceMax", "ReduceMin", "CumSum", "Pow")


@dataclass
class Use:
    """Input ``index`` of ``node`` reads the input (``direct``: through value-preserving ops only)."""

    node: onnx.NodeProto
    index: int
    direct: bool


class ModelView:
    """What rules may look up: static shapes and constant values of tensors."""

    def __init__(self, model: onnx.ModelProto):
        g = model.graph
        self.static: dict[str, tuple] = {}
        self.constants: dict[str, onnx.TensorProto] = {t.name: t for t in g.initializer}
        for n in g.node:
            if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
                self.constants[n.output[0]] = n.attribute[0].t
        for name, t in self.constants.items():
            self.static[name] = tuple(t.dims)
        for vi in (*g.value_info, *g.input, *g.output):
            tt = vi.type.tensor_type
            if tt.HasField("shape") and all(d.HasField("dim_value") for d in tt.shape.dim):
                self.static.setdefault(vi.name, tuple(int(d.dim_value) for d in tt.shape.dim))
        self._model = model
        self._inferred: Optional[dict] = None
        self.users: dict[str, list[onnx.NodeProto]] = {}
        for n in g.node:
            for t in n.input:
                self.users.setdefault(t, []).append(n)
        self.shapes: dict[str, tuple] = {}  # concrete graph-input shapes of the current draw

    def shape(self, name: str) -> Optional[tuple]:
        """Static shape: a graph input's in this draw, an initializer's, declared or inferred."""
        known = self.shapes.get(name) or self.static.get(name)
        if known is not None:
            return known
        return self.inferred().get(name)

    def inferred(self) -> dict:
        """Static shapes ONNX shape inference finds at the model's declared input shapes
        (run once, on the weightless skeleton, only when a rule needs an intermediate shape)."""
        if self._inferred is None:
            self._inferred = {}
            try:
                from .frontends.onnx import _skeleton

                graph = onnx.shape_inference.infer_shapes(_skeleton(self._model), data_prop=True).graph
            except Exception:  # inference is a hint here; a rule without a shape has no opinion
                return self._inferred
            for vi in graph.value_info:
                tt = vi.type.tensor_type
                if tt.HasField("shape") and all(d.HasField("dim_value") for d in tt.shape.dim):
                    self._inferred[vi.name] = tuple(int(d.dim_value) for d in tt.shape.dim)
        return self._inferred

    def constant(self, name: str) -> Optional[np.ndarray]:
        t = self.constants.get(name)
        if t is None or int(np.prod(t.dims)) > 64:
            return None
        from .weights import tensor_array

        return tensor_array(t)

    def uses(self, name: str) -> list[Use]:
        """Every (node, input position) the tensor reaches, through ops that keep its values."""
        out, frontier, seen = [], [(name, True)], {name}
        while frontier:
            t, direct = frontier.pop()
            for n in self.users.get(t, []):
                for k, i in enumerate(n.input):
                    if i != t:
                        continue
                    out.append(Use(n, k, direct))
                    if n.op_type in INDEX_PATH_OPS and k == 0:
                        for o in n.output:
                            if o and o not in seen:
                                seen.add(o)
                                frontier.append((o, direct and n.op_type in VALUE_PATH_OPS))
        return out


Rule = Callable[[Use, ModelView, tuple, np.dtype, np.random.Generator], Optional[np.ndarray]]
RULES: dict[str, Rule] = {}


def rule(*ops: str):
    def register(fn: Rule) -> Rule:
        for op in ops:
            RULES[op] = fn
        return fn
    return register


def _attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _fill(values, shape, dtype) -> Optional[np.ndarray]:
    values = np.asarray(values)
    if int(np.prod(shape)) != values.size:
        return None
    return values.reshape(shape).astype(dtype)


def _axis_size(use: Use, view: ModelView, data_index: int = 0, axis_attr: str = "axis", default=0):
    shape = view.shape(use.node.input[data_index]) if len(use.node.input) > data_index else None
    if not shape:
        return None, None
    axis = _attr(use.node, axis_attr, default)
    if not -len(shape) <= axis < len(shape):
        return None, None
    return shape, shape[axis]


@rule("Gather", "GatherElements")
def _gather_indices(use, view, shape, dtype, rng):
    if use.index != 1:
        return None
    _, rows = _axis_size(use, view)
    if not rows or dtype.kind not in "iu":
        return None
    return rng.integers(0, rows, size=shape).astype(dtype)


@rule("GatherND")
def _gather_nd_indices(use, view, shape, dtype, rng):
    data = view.shape(use.node.input[0])
    batch = _attr(use.node, "batch_dims", 0)
    if use.index != 1 or not data or not shape or dtype.kind not in "iu" or batch + shape[-1] > len(data):
        return None
    cols = [rng.integers(0, data[batch + j], size=shape[:-1]) for j in range(shape[-1])]
    return np.stack(cols, axis=-1).astype(dtype) if cols else np.zeros(shape, dtype)


@rule("Resize", "Upsample")
def _resize(use, view, shape, dtype, rng):
    n = int(np.prod(shape))
    if use.node.op_type == "Upsample" or (use.index == 2 and use.node.op_type == "Resize"):
        return np.ones(shape, dtype)  # scales: the identity
    if use.index == 1:  # roi: the whole input, as [starts..., ends...]
        return _fill([0.0] * (n // 2) + [1.0] * (n - n // 2), shape, dtype)
    if use.index == 3:  # sizes: the input's own sizes on the resized axes
        x = view.shape(use.node.input[0])
        axes = _attr(use.node, "axes")
        if x is None:
            return None
        return _fill([x[a] for a in axes] if axes else list(x), shape, dtype)
    return None


@rule("Split")
def _split_sizes(use, view, shape, dtype, rng):
    _, size = _axis_size(use, view)
    if use.index != 1 or size is None or len(shape) != 1 or not shape[0]:
        return None
    parts = shape[0]
    sizes = [size // parts] * parts
    sizes[-1] += size - sum(sizes)
    return np.array(sizes, dtype)


@rule("Tile", "Expand")
def _ones(use, view, shape, dtype, rng):
    return np.ones(shape, dtype) if use.index == 1 and use.direct else None


@rule("TopK")
def _top_k(use, view, shape, dtype, rng):
    return np.ones(shape, dtype) if use.index == 1 else None


@rule("Unsqueeze", "ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
      "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare")
def _distinct_axes(use, view, shape, dtype, rng):
    if use.index != 1 or not use.direct:
        return None
    n = int(np.prod(shape))
    x = view.shape(use.node.input[0])
    if use.node.op_type != "Unsqueeze" and (x is None or n > len(x)):
        return None
    return _fill(np.arange(n), shape, dtype)


@rule("Squeeze")
def _squeeze_axes(use, view, shape, dtype, rng):
    x = view.shape(use.node.input[0])
    if use.index != 1 or x is None:
        return None
    ones = [a for a, d in enumerate(x) if d == 1]
    n = int(np.prod(shape))
    return _fill(ones[:n], shape, dtype) if len(ones) >= n else None


@rule("Slice")
def _slice(use, view, shape, dtype, rng):
    if not use.direct or dtype.kind not in "iu":
        return None
    n = int(np.prod(shape))
    if use.index == 1:
        return np.zeros(shape, dtype)
    if use.index == 2:
        return np.full(shape, np.iinfo(dtype).max, dtype)
    if use.index == 3:
        return _fill(np.arange(n), shape, dtype)
    if use.index == 4:
        return np.ones(shape, dtype)
    return None


@rule("Reshape")
def _reshape(use, view, shape, dtype, rng):
    if use.index != 1 or not use.direct:
        return None
    n = int(np.prod(shape))
    return _fill([-1] + [1] * (n - 1), shape, dtype) if n else None


@rule("ConstantOfShape")
def _constant_of_shape(use, view, shape, dtype, rng):
    return np.full(shape, 2, dtype) if use.direct else None


@rule("Range")
def _range(use, view, shape, dtype, rng):
    return np.full(shape, (0, 5, 1)[use.index], dtype) if use.direct else None


@rule("OneHot")
def _one_hot(use, view, shape, dtype, rng):
    if use.index == 1:
        return np.full(shape, 5, dtype)
    if use.index == 0 and dtype.kind in "iuf":
        depth = view.constant(use.node.input[1]) if len(use.node.input) > 1 else None
        high = int(np.asarray(depth).reshape(-1)[0]) if depth is not None else 5
        return rng.integers(0, max(high, 1), size=shape).astype(dtype)
    return None


@rule("Pad")
def _pad(use, view, shape, dtype, rng):
    if use.index == 1:
        return np.zeros(shape, dtype)
    if use.index == 3:
        return _fill(np.arange(int(np.prod(shape))), shape, dtype)
    return None


@rule("Col2Im")
def _col2im(use, view, shape, dtype, rng):
    """Block size 1 everywhere, and an image shape whose block count is the input's L."""
    x = view.shape(use.node.input[0])
    if x is None or len(x) != 3 or use.index not in (1, 2):
        return None
    k = int(np.prod(shape))
    if use.index == 2:
        return np.ones(shape, dtype)
    strides = _attr(use.node, "strides") or [1] * k
    pads = _attr(use.node, "pads") or [0] * (2 * k)
    blocks = [x[2]] + [1] * (k - 1)
    image = [(b - 1) * s + 1 - pads[i] - pads[i + k] for i, (b, s) in enumerate(zip(blocks, strides))]
    return np.array(image, dtype) if all(d >= 1 for d in image) else None


@rule("AffineGrid")
def _affine_grid(use, view, shape, dtype, rng):
    theta = view.shape(use.node.input[0])
    if use.index != 1 or theta is None or len(theta) != 3:
        return None
    spatial = theta[1]  # 2 for 2-D grids, 3 for 3-D
    return _fill([theta[0], 1] + [3] * spatial, shape, dtype)


@rule("NonMaxSuppression")
def _nms(use, view, shape, dtype, rng):
    if use.index == 0 and len(shape) == 3 and shape[-1] == 4:
        lo = rng.uniform(0, 1, shape[:-1] + (2,))
        size = rng.uniform(0.1, 1, shape[:-1] + (2,))
        if _attr(use.node, "center_point_box", 0):
            return np.concatenate([lo + size / 2, size], axis=-1).astype(dtype)
        return np.concatenate([lo, lo + size], axis=-1).astype(dtype)
    if use.index == 1:
        return rng.uniform(0, 1, shape).astype(dtype)
    return np.full(shape, {2: 3, 3: 0.5, 4: 0.0}[use.index], dtype) if use.index in (2, 3, 4) else None


@rule("RoiAlign")
def _roi_align(use, view, shape, dtype, rng):
    x = view.shape(use.node.input[0])
    if x is None or len(x) != 4:
        return None
    if use.index == 2:
        return rng.integers(0, x[0], size=shape).astype(dtype)
    if use.index == 1 and shape and shape[-1] == 4:
        lo = rng.uniform(0, 0.5, shape[:-1] + (2,)) * np.array([x[3], x[2]])
        hi = lo + rng.uniform(0.1, 0.5, shape[:-1] + (2,)) * np.array([x[3], x[2]])
        return np.concatenate([lo, hi], axis=-1).astype(dtype)
    return None


@rule("Div", "Mod")
def _divisor(use, view, shape, dtype, rng):
    if use.index != 1 or dtype.kind not in "iu":
        return None
    return rng.integers(1, 5, size=shape).astype(dtype)  # an integer divisor is never 0


@rule("BitShift")
def _shift(use, view, shape, dtype, rng):
    return rng.integers(0, 3, size=shape).astype(dtype) if use.index == 1 else None


@rule("CumSum", "Trilu")
def _axis_or_k(use, view, shape, dtype, rng):
    return np.zeros(shape, dtype) if use.index == 1 else None


@rule("Bernoulli")
def _probability(use, view, shape, dtype, rng):
    return rng.uniform(0, 1, shape).astype(dtype)


@rule("CenterCropPad")
def _crop_shape(use, view, shape, dtype, rng):
    x = view.shape(use.node.input[0])
    axes = _attr(use.node, "axes")
    if use.index != 1 or x is None:
        return None
    return _fill([x[a] for a in axes] if axes else list(x), shape, dtype)


@rule("Loop")
def _trip_count(use, view, shape, dtype, rng):
    if use.index == 0:
        return np.full(shape, 3, dtype)
    if use.index == 1:
        return np.ones(shape, dtype)
    return None


def constrained_value(name: str, view: ModelView, shape: tuple, dtype: np.dtype,
                      rng: np.random.Generator) -> Optional[np.ndarray]:
    """A valid value for graph input ``name`` from the first consumer rule that knows one."""
    for use in view.uses(name):
        fn = RULES.get(use.node.op_type) if use.node.domain in ("", "ai.onnx") else None
        if fn is None:
            continue
        try:
            value = fn(use, view, tuple(shape), dtype, rng)
        except (ValueError, TypeError, IndexError, KeyError, OverflowError):
            value = None  # a rule that cannot read this node has no opinion
        if value is not None and value.shape == tuple(shape):
            return value
    return None


def arithmetic_only(name: str, view: ModelView) -> bool:
    """Does the input only reach elementwise arithmetic (so any small integer is valid)?"""
    uses = view.uses(name)
    return bool(uses) and all(u.node.op_type in ARITHMETIC + VALUE_PATH_OPS for u in uses)
