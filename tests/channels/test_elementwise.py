"""Channel-wise ops: activations (unary) and broadcasting arithmetic."""

import numpy as np
import pytest
from onnx import TensorProto, helper

from .graphs import Builder, group_at, input_value, kept, prune_ok, sandwich

# (op, opset, attrs, extra constant inputs as (values, dtype) or "" for an absent optional)
ACTIVATIONS = [
    ("Relu", 17, {}, []),
    ("LeakyRelu", 17, {"alpha": 0.1}, []),
    ("Clip", 8, {"min": -0.5, "max": 0.5}, []),  # Clip-6: bounds as attributes
    ("Clip", 10, {"min": -0.5, "max": 0.5}, []),
    ("Clip", 11, {}, [-0.5, 0.5]),
    ("Clip", 13, {}, ["", 0.5]),
    ("Sigmoid", 17, {}, []),
    ("HardSigmoid", 17, {"alpha": 0.3, "beta": 0.4}, []),
    ("HardSwish", 14, {}, []),
    ("Tanh", 17, {}, []),
    ("Elu", 17, {"alpha": 0.7}, []),
    ("Selu", 17, {}, []),
    ("Celu", 17, {"alpha": 0.5}, []),
    ("Softplus", 17, {}, []),
    ("Softsign", 17, {}, []),
    ("ThresholdedRelu", 17, {"alpha": 0.2}, []),
    ("Gelu", 20, {}, []),
    ("Gelu", 20, {"approximate": "tanh"}, []),
    ("Erf", 17, {}, []),
    ("Mish", 18, {}, []),
    ("Abs", 17, {}, []),
    ("Neg", 17, {}, []),
    ("Identity", 17, {}, []),
    ("Dropout", 7, {"ratio": 0.3}, []),
    ("Dropout", 10, {"ratio": 0.3}, []),
    ("Dropout", 13, {}, [0.3]),
    ("Cast", 17, {"to": TensorProto.FLOAT}, []),
]


@pytest.mark.parametrize("op, opset, attrs, extra", ACTIVATIONS,
                         ids=[f"{a[0]}-{a[1]}-{i}" for i, a in enumerate(ACTIVATIONS)])
def test_activation(op, opset, attrs, extra):
    def middle(b, h):
        inputs = ["" if v == "" else b.const(np.array(v, dtype=np.float32)) for v in extra]
        return b.op(op, h, *inputs, name="act", **attrs)
    result = prune_ok(sandwich(middle, opset=opset))
    channels = kept(result, "producer_w", 0)
    assert len(channels) == 4 and channels == kept(result, "consumer_w", 1)


def test_dropout_mask_output():
    """Dropout's optional mask has the input's shape; both outputs follow the channels."""
    b = Builder(opset=13)
    x = b.input([1, 3, 8, 8])
    h = b.conv(x, 3, 8, k=3, name="producer")
    y, mask = b.op("Dropout", h, outputs=2, name="drop")
    model = b.build(b.conv(y, 8, 4, name="consumer"))
    g = group_at(model, "drop_1", 1)
    assert g.pinned is None and g is not None
    result = prune_ok(model)
    assert kept(result, "producer_w", 0) == kept(result, "consumer_w", 1)


@pytest.mark.parametrize("slope_shape", [(8, 1, 1), (1,), ()])
def test_prelu(slope_shape):
    def middle(b, h):
        return b.op("PRelu", h, b.weight(*slope_shape, name="slope"), name="prelu")
    result = prune_ok(sandwich(middle))
    channels = kept(result, "producer_w", 0)
    assert channels == kept(result, "consumer_w", 1)
    if slope_shape == (8, 1, 1):
        assert kept(result, "slope", 0) == channels
    else:
        assert "slope" not in result.report["initializers"]


BINARY = ["Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean"]


def _safe(b, op, a, c):
    """Keep Pow's base positive and Div's divisor away from zero, so outputs stay finite."""
    if op == "Pow":  # base in (0.5, 1.5), exponent in (-1, 1)
        return b.op("Add", b.op("Sigmoid", a), b.const(np.float32(0.5))), b.op("Tanh", c)
    if op == "Div":
        return a, b.op("Add", b.op("Sigmoid", c), b.const(np.float32(0.5)))
    return a, c


@pytest.mark.parametrize("op", BINARY)
def test_binary_two_activations(op):
    """A residual-like join: producer and 'mid' conv outputs are one group."""
    def middle(b, h):
        mid = b.conv(h, 8, 8, name="mid")
        return b.op(op, *_safe(b, op, h, mid), name="join")
    result = prune_ok(sandwich(middle))
    channels = kept(result, "producer_w", 0)
    assert len(channels) == 4
    assert channels == kept(result, "mid_w", 0) == kept(result, "mid_w", 1)
    assert channels == kept(result, "mid_b", 0) == kept(result, "consumer_w", 1)


CONSTANT_SHAPES = {"per-channel": (8, 1, 1), "per-channel-4d": (1, 8, 1, 1), "scalar": (),
                   "one": (1,), "per-column": (8,)}


@pytest.mark.parametrize("op", BINARY)
@pytest.mark.parametrize("shape", sorted(CONSTANT_SHAPES))
@pytest.mark.parametrize("constant_first", [False, True])
def test_binary_with_constant(op, shape, constant_first):
    dims = CONSTANT_SHAPES[shape]

    def middle(b, h):
        value = b.rng.standard_normal(dims).astype(np.float32)
        if op in ("Pow", "Div"):  # positive base / integer exponent / divisor away from 0
            value = np.round(np.abs(value)) + 1
        c = b.const(value, name="c")
        if not constant_first:
            return b.op(op, h, c, name="join")
        divisor = _safe(b, op, c, h)[1] if op == "Div" else h
        return b.op(op, c, divisor, name="join")
    result = prune_ok(sandwich(middle))
    channels = kept(result, "producer_w", 0)
    assert channels == kept(result, "consumer_w", 1)
    if shape.startswith("per-channel"):
        assert kept(result, "c", len(dims) - 3) == channels
    else:  # scalars and per-column (W axis) constants are not channel parameters
        assert "c" not in result.report["initializers"]


@pytest.mark.parametrize("op", ["Sum", "Mean", "Max", "Min"])
def test_variadic_three_inputs(op):
    def middle(b, h):
        mid = b.conv(h, 8, 8, name="mid")
        return b.op(op, h, mid, b.weight(8, 1, 1, name="c"), name="join")
    result = prune_ok(sandwich(middle))
    channels = kept(result, "producer_w", 0)
    assert channels == kept(result, "mid_w", 0) == kept(result, "c", 0)


def test_where_with_channel_condition():
    def middle(b, h):
        cond = b.op("Greater", h, b.const(np.zeros((8, 1, 1), np.float32), name="thr"))
        return b.op("Where", cond, h, b.weight(8, 1, 1, name="other"), name="where")
    result = prune_ok(sandwich(middle))
    channels = kept(result, "producer_w", 0)
    assert channels == kept(result, "thr", 0) == kept(result, "other", 0)


def test_broadcast_from_single_channel():
    """Add(x[1,1,H,W], h[1,8,H,W]): the one-channel operand is broadcast, not pruned."""
    b = Builder()
    x = b.input([1, 3, 8, 8])
    h = b.conv(x, 3, 8, k=3, name="producer")
    one = b.conv(x, 3, 1, name="single")
    model = b.build(b.conv(b.op("Add", one, h), 8, 4, name="consumer"))
    assert group_at(model, "single", 1).pinned is not None  # size-1 axis is not mapped
    result = prune_ok(model)
    assert kept(result, "producer_w", 0) == kept(result, "consumer_w", 1)
    assert "single_w" not in result.report["initializers"]


def test_cast_like_reads_only_the_dtype_of_its_target():
    """CastLike(h, other): 'other' only lends its dtype, so its channels stay prunable."""
    b = Builder(opset=15)
    x = b.input([1, 3, 8, 8])
    h = b.conv(x, 3, 8, k=3, name="producer")
    other = b.op("Relu", b.conv(x, 3, 6, name="other"))
    h = b.op("CastLike", h, other, name="castlike")
    model = b.build(b.conv(h, 8, 4, name="consumer"), b.conv(other, 6, 4, name="side"))
    result = prune_ok(model)
    assert kept(result, "producer_w", 0) == kept(result, "consumer_w", 1)
    assert kept(result, "other_w", 0) == kept(result, "side_w", 1)
    assert len(kept(result, "other_w", 0)) == 3


@pytest.mark.parametrize("target", [[1, 8, 8, 8], [2, 8, 8, 8], [8, 1, 1], [1, 1, 8, 8]])
def test_expand_carries_equal_axes(target):
    """Expand broadcasts: the channel axis carries through and the target is rewritten."""
    def middle(b, h):
        out = b.op("Expand", h, b.ints(target, name="target"), name="expand")
        if target[0] == 2:  # fold the new batch copies back so the graph output keeps batch 1
            out = b.op("ReduceSum", out, b.ints([0]), keepdims=1)
        return out
    result = prune_ok(sandwich(middle))
    channels = kept(result, "producer_w", 0)
    assert channels == kept(result, "consumer_w", 1)
    new_target = input_value(result.model, "expand", 1).tolist()
    lead = 4 - len(target)
    expected = [4 if (i + lead == 1 and t > 1) else t for i, t in enumerate(target)]
    assert new_target == expected


def test_expand_to_its_own_run_time_shape_prunes():
    """``Expand(h, Shape(h))``: the target is h's own size, read at run time, so it follows
    the prune of h's channels; the group prunes exactly and the Expand is left as is."""
    def middle(b, h):
        return b.op("Expand", h, b.op("Shape", h), name="expand")
    result = prune_ok(sandwich(middle))
    assert kept(result, "producer_w", 0) == kept(result, "consumer_w", 1)


def test_expand_with_a_run_time_size_of_another_tensor_pins():
    """A target entry read at run time from a graph input cannot follow the prune: pinned.
    (With a fully static ``aux`` the Shape folds and the constant is rewritten instead.)"""
    def middle(b, h):
        b.inputs.append(helper.make_tensor_value_info("aux", TensorProto.FLOAT, ["n", 8, 1, 1]))
        return b.op("Expand", h, b.op("Shape", "aux"), name="expand")
    group = group_at(sandwich(middle), "producer_w", 0)
    assert group.pinned