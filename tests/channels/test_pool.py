"""Pooling, reductions and softmax: channel-wise along the axes they leave alone."""

import numpy as np
import pytest

import graphprune

from .graphs import Builder, group_at, kept, prune_ok, sandwich

POOLS = [
    ("MaxPool", {"kernel_shape": [2, 2], "strides": [2, 2]}),
    ("MaxPool", {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "dilations": [1, 1], "ceil_mode": 1}),
    ("AveragePool", {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "count_include_pad": 1}),
    ("LpPool", {"kernel_shape": [2, 2], "p": 2}),
    ("GlobalAveragePool", {}),
    ("GlobalMaxPool", {}),
    ("GlobalLpPool", {"p": 3}),
]


@pytest.mark.parametrize("op, attrs", POOLS, ids=[f"{p[0]}-{i}" for i, p in enumerate(POOLS)])
@pytest.mark.parametrize("opset", [11, 18])
def test_pool(op, attrs, opset):
    result = prune_ok(sandwich(lambda b, h: b.op(op, h, name="pool", **attrs), opset=opset))
    channels = kept(result, "producer_w", 0)
    assert len(channels) == 4 and channels == kept(result, "consumer_w", 1)


def test_maxpool_indices_pin_channels():
    """MaxPool's Indices are flat offsets over C·H·W: pruning channels changes their values."""
    b = Builder()
    x = b.input([1, 3, 8, 8])
    h = b.conv(x, 3, 8, k=3, name="producer")
    y, idx = b.op("MaxPool", h, outputs=2, name="pool", kernel_shape=[2, 2], strides=[2, 2])
    model = b.build(b.conv(y, 8, 4, name="consumer"), idx)
    g = group_at(model, "producer", 1)
    assert g.pinned is not None and "MaxPool node 'pool'" in g.pinned


def test_max_roi_pool():
    """MaxRoiPool's output batch axis is the RoI axis, not the input batch: only channels map."""
    def roi(b, h):
        rois = b.const(np.array([[0, 0, 0, 5, 5], [0, 2, 2, 7, 7]], np.float32))
        return b.op("MaxRoiPool", h, rois, name="roi", pooled_shape=[2, 2])
    model = sandwich(roi)
    assert group_at(model, "roi", 1).pinned is None
    result = prune_ok(model)
    assert kept(result, "producer_w", 0) == kept(result, "consumer_w", 1)


def _reduce(op, axes, keepdims, opset, noop=None):
    """x -> producer -> Reduce(axes) -> consumer (Conv when keepdims, MatMul otherwise)."""
    b = Builder(opset)
    x = b.input([1, 3, 8, 8])
    h = b.conv(x, 3, 8, k=3, name="producer")
    takes_input = opset >= (13 if op == "ReduceSum" else 18)
    attrs = {"keepdims": keepdims}
    if noop is not None:
        attrs["noop_with_empty_axes"] = noop
    if axes is not None and takes_input:
        inputs = [b.ints(axes)]
    else:
        inputs = []
        if axes is not None:
            attrs["axes"] = axes
    h = b.op(op, h, *inputs, name="reduce", **attrs)
    if keepdims:
        y = b.conv(h, 8, 4, name="consumer")
    else:
        y = b.op("MatMul", h, b.weight(8, 4, name="consumer_w"), name="consumer")
    return b.build(y)


@pytest.mark.parametrize("op, opset", [("ReduceSum", 11), ("ReduceSum", 13), ("ReduceMean", 17),
                                       ("ReduceMean", 18), ("ReduceMax", 17), ("ReduceMax", 18),
                                       ("ReduceL2", 13), ("ReduceLogSumExp", 18)])
@pytest.mark.parametrize("keepdims", [0, 1])
@pytest.mark.parametrize("axes", [[2, 3], [-1, -2]])
def test_reduce_spatial(op, opset, keepdims, axes):
    result = prune_ok(_reduce(op, axes, keepdims, opset))
    consumer_axis = 1 if keepdims else 0
    channels = kept(result, "producer_w", 0)
    assert len(channels) == 4 and channels == kept(result, "consumer_w", consumer_axis)


@pytest.mark.parametrize("op, opset", [("ReduceSum", 11), ("ReduceSum", 13), ("ReduceMean", 18)])
@pytest.mark.parametrize("axes", [[1], [1, 2, 3], None])
def test_reduce_over_channels_is_pinned(op, opset, axes):
    model = _reduce(op, axes, 1, opset) if axes else _reduce_all(op, opset)
    g = group_at(model, "producer", 1)
    assert g.pinned is not None and "'reduce' does not map axis 1" in g.pinned


def _reduce_all(op, opset):
    """No axes: every axis is reduced -> [1,1,1,1] -> Flatten -> output."""
    b = Builder(opset)
    x = b.input([1, 3, 8, 8])
    h = b.conv(x, 3, 8, k=3, name="producer")
    return b.build(b.op("Relu", b.op(op, h, name="reduce")))


@pytest.mark.parametrize("op, opset", [("ReduceSum", 13), ("ReduceMean", 18)])
def test_reduce_noop_with_empty_axes_is_identity(op, opset):
    model = _reduce(op, None, 1, opset, noop=1)
    assert group_at(model, "reduce", 1).pinned is None
    result = prune_ok(model)
    assert kept(result, "producer_w", 0) == kept(result, "consumer_w", 1)


SOFTMAX_FREE = [  # (op, opset, axis): channels are prunable
    ("Softmax", 13, -1), ("Softmax", 13, 2), ("Softmax", 11, 2), ("Softmax", 11, -1),
    ("LogSoftmax", 13, 3), ("LogSoftmax", 11, 2), ("Hardmax", 13, -1),
]
SOFTMAX_CHANNEL = [  # channels are mixed: pinned
    ("Softmax", 13, 1), ("Softmax", 13, -3), ("Softmax", 11, 1), ("Softmax", 11, None),
    ("Softmax", 11, 0), ("LogSoftmax", 11, None), ("Hardmax", 13, 1),
]


@pytest.mark.parametrize("op, opset, axis", SOFTMAX_FREE)
def test_softmax_over_other_axis(op, opset, axis):
    model = sandwich(lambda b, h: b.op(op, h, name="softmax", axis=axis), opset=opset)
    result = prune_ok(model)
    assert kept(result, "producer_w", 0) == kept(result, "consumer_w", 1)


@pytest.mark.parametrize("op, opset, axis", SOFTMAX_CHANNEL)
def test_softmax_over_channel_axis_is_pinned(op, opset, axis):
    attrs = {} if axis is None else {"axis": axis}
    model = sandwich(lambda b, h: b.op(op, h, name="softmax", **attrs), opset=opset)
    g = group_at(model, "producer", 1)
    assert g.pinned is not None and "'softmax' does not map axis 1" in g.pinned
    assert not graphprune.analyse_model(model).group_of_dim("softmax", 1).prunable
