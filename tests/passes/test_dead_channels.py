"""dead-channels: exactly-zero and input-free channels go, everything else stays."""

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import graphprune
from graphprune.passes import PASSES


def edit(model, name, fn):
    tensor = next(t for t in model.graph.initializer if t.name == name)
    value = numpy_helper.to_array(tensor).copy()
    fn(value)
    tensor.CopyFrom(numpy_helper.from_array(value, name))


def conv_weights(model):
    return [(n.input[1], n.input[2]) for n in model.graph.node if n.op_type == "Conv"]


@pytest.fixture
def tiny(export):
    return onnx.load(str(export("tiny_cnn", "legacy")))


def run(model):
    graph = graphprune.load(model)
    return graph, PASSES["dead-channels"]()(graph, verify=True)


def test_dense_model_is_left_alone(tiny):
    _, result = run(tiny)
    assert not result.modified and result.params[0] == result.params[1]


def test_zero_producers_and_zero_consumers_are_removed(tiny):
    (w1, b1), (w2, b2) = conv_weights(tiny)
    for w, b in ((w1, b1), (w2, b2)):  # residual: both producers of channel 0 are zero
        edit(tiny, w, lambda a: a.__setitem__(0, 0))
        edit(tiny, b, lambda a: a.__setitem__(0, 0))
    edit(tiny, w2, lambda a: a.__setitem__((slice(None), 5), 0))  # consumer columns of channel 5
    edit(tiny, "head.2.weight", lambda a: a.__setitem__((slice(None), 5), 0))
    graph, result = run(tiny)
    assert result.modified and result.details["changed"] == 2
    assert result.verification.status == "exact"
    assert graph.constants[w1].shape[0] == 14
    _, again = run(graphprune.emit.to_onnx(graph))
    assert not again.modified  # idempotent


def test_near_misses_stay(tiny):
    (w1, b1), (w2, b2) = conv_weights(tiny)
    edit(tiny, w1, lambda a: a.__setitem__(0, 0))  # only one of the two residual producers is zero
    edit(tiny, b1, lambda a: a.__setitem__(0, 0))
    edit(tiny, w2, lambda a: a.__setitem__((slice(None), 5), 0))  # head still reads channel 5
    _, result = run(tiny)
    assert not result.modified


def test_constant_channel_folds_into_linear_bias(tiny):
    """Zero weights but a bias: the channel is a constant at the head; fold it into the bias."""
    (w1, b1), (w2, b2) = conv_weights(tiny)
    edit(tiny, w2, lambda a: a.__setitem__((slice(None), 3), 0))  # block2 conv ignores channel 3
    for w, b in ((w1, b1), (w2, b2)):
        edit(tiny, w, lambda a: a.__setitem__(3, 0))
        edit(tiny, b, lambda a: a.__setitem__(3, 0.5))  # relu(0.5) + relu(0.5) = 1 everywhere
    graph, result = run(tiny)
    assert result.modified and result.details["biases_updated"] == 1
    assert result.verification.status == "exact"


def test_constant_channel_folds_into_unpadded_conv_bias():
    """Conv(3x3, pad 1) → Relu → Conv(1x1): channel 2 has zero weights and bias 0.5, so it
    is 0.5 everywhere; the 1x1 consumer takes Σ W[:, 2]·0.5 into its bias exactly."""
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((8, 3, 3, 3)).astype(np.float32)
    b1 = rng.standard_normal(8).astype(np.float32)
    w1[2], b1[2] = 0.0, 0.5
    w2 = rng.standard_normal((4, 8, 1, 1)).astype(np.float32)
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Conv", ["x", "w1", "b1"], ["h"], pads=[1, 1, 1, 1]),
         onnx.helper.make_node("Relu", ["h"], ["r"]),
         onnx.helper.make_node("Conv", ["r", "w2"], ["y"])],
        "g", [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, 6, 6])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4, 6, 6])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(b1, "b1"),
         numpy_helper.from_array(w2, "w2")])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    graph, result = run(model)
    assert result.details["changed"] == 1 and result.details["biases_updated"] == 1
    assert result.verification.status == "exact"
    assert graph.constants["w2"].shape[1] == 7
