"""Conv and ConvTranspose: plain, grouped and depthwise, 1D/2D/3D, with and without bias."""

import numpy as np
import pytest
from onnx import TensorProto, helper

from .graphs import Builder, attr, group_at, kept, prune_ok, sandwich


def whole_blocks(indices, block):
    """True when ``indices`` is a union of whole blocks ``[k*block, (k+1)*block)``."""
    blocks = {i // block for i in indices}
    return sorted(indices) == [k * block + j for k in sorted(blocks) for j in range(block)]


@pytest.mark.parametrize("spatial", [1, 2, 3])
@pytest.mark.parametrize("bias", [True, False])
def test_conv_dense(spatial, bias):
    def mid(b, h):
        return b.conv(h, 8, 8, k=3, bias=bias, spatial=spatial, name="mid")
    model = sandwich(mid, spatial=spatial, size=8 if spatial < 3 else 4)
    result = prune_ok(model)
    # producer rows <-> mid's input columns; mid's rows (and bias) <-> consumer's columns
    assert kept(result, "producer_w", 0) == kept(result, "mid_w", 1)
    assert len(kept(result, "producer_w", 0)) == 4
    assert kept(result, "mid_w", 0) == kept(result, "consumer_w", 1)
    if bias:
        assert kept(result, "mid_b", 0) == kept(result, "mid_w", 0)
    else:
        assert "mid_b" not in result.report["initializers"]


@pytest.mark.parametrize("spatial", [1, 2, 3])
@pytest.mark.parametrize("cout, group", [(8, 4), (16, 4), (8, 2)])
def test_conv_grouped_removes_whole_groups(spatial, cout, group):
    model = _grouped_model(cout, group, spatial)
    g = group_at(model, "mid", 1)
    assert g.pinned is None and g.size == group  # one channel per conv group
    result = prune_ok(model)
    cin_g, cout_g = 8 // group, cout // group
    producer = kept(result, "producer_w", 0)
    assert whole_blocks(producer, cin_g) and len(producer) == 8 // 2
    rows = kept(result, "mid_w", 0)
    assert whole_blocks(rows, cout_g)
    assert {i // cin_g for i in producer} == {o // cout_g for o in rows}  # same groups kept
    assert rows == kept(result, "consumer_w", 1) == kept(result, "mid_b", 0)
    assert "1" not in result.report["initializers"]["mid_w"]  # in-group weight axis untouched
    assert attr(result.model, "mid", "group") == group // 2


def _grouped_model(cout, group, spatial, bias=True):
    b = Builder()
    x = b.input([1, 3, *[8 if spatial < 3 else 4] * spatial])
    h = b.conv(x, 3, 8, k=3, spatial=spatial, name="producer")
    h = b.conv(h, 8, cout, k=3, group=group, bias=bias, spatial=spatial, name="mid")
    return b.build(b.conv(h, cout, 4, spatial=spatial, name="consumer"))


@pytest.mark.parametrize("multiplier", [1, 2])
@pytest.mark.parametrize("bias", [True, False])
def test_depthwise(multiplier, bias):
    result = prune_ok(_grouped_model(8 * multiplier, 8, 2, bias))
    producer = kept(result, "producer_w", 0)
    rows = kept(result, "mid_w", 0)
    # depthwise: input channel c owns output rows c*m .. c*m+m-1
    assert rows == [c * multiplier + j for c in producer for j in range(multiplier)]
    assert rows == kept(result, "consumer_w", 1)
    assert attr(result.model, "mid", "group") == len(producer) == 4


def test_grouped_conv_on_graph_input_is_pinned():
    b = Builder()
    x = b.input([1, 8, 8, 8])
    h = b.conv(x, 8, 8, k=3, group=8, name="dw")
    model = b.build(b.conv(h, 8, 4, name="consumer"))
    g = group_at(model, "dw", 1)
    assert g.pinned is not None and "graph input 'x'" in g.pinned


def _conv_transpose_model(cout, group, bias=True, spatial=2):
    b = Builder()
    x = b.input([1, 3, *[6] * spatial])
    h = b.conv(x, 3, 8, k=3, spatial=spatial, name="producer")
    w = b.weight(8, cout // group, *[3] * spatial, name="mid_w")
    extra = [b.weight(cout, name="mid_b")] if bias else []
    h = b.op("ConvTranspose", h, w, *extra, name="mid", group=group, strides=[2] * spatial,
             pads=[1] * 2 * spatial, output_padding=[1] * spatial)
    return b.build(b.conv(h, cout, 4, spatial=spatial, name="consumer"))


@pytest.mark.parametrize("spatial", [1, 2])
@pytest.mark.parametrize("bias", [True, False])
def test_conv_transpose_dense(spatial, bias):
    result = prune_ok(_conv_transpose_model(8, 1, bias, spatial))
    # ConvTranspose W[Cin, Cout/g, k]: input channels are axis 0, outputs axis 1
    assert kept(result, "producer_w", 0) == kept(result, "mid_w", 0)
    assert kept(result, "mid_w", 1) == kept(result, "consumer_w", 1)
    if bias:
        assert kept(result, "mid_b", 0) == kept(result, "mid_w", 1)


@pytest.mark.parametrize("cout, group", [(8, 4), (8, 8), (16, 8)])
def test_conv_transpose_grouped(cout, group):
    result = prune_ok(_conv_transpose_model(cout, group))
    cin_g, cout_g = 8 // group, cout // group
    producer = kept(result, "producer_w", 0)
    assert producer == kept(result, "mid_w", 0) and whole_blocks(producer, cin_g)
    groups_kept = sorted({c // cin_g for c in producer})
    consumer = kept(result, "consumer_w", 1)
    assert consumer == [g * cout_g + j for g in groups_kept for j in range(cout_g)]
    assert consumer == kept(result, "mid_b", 0)
    assert "1" not in result.report["initializers"]["mid_w"]
    assert attr(result.model, "mid", "group") == len(groups_kept) == group // 2


def test_conv_weight_rows_follow_output_not_input():
    """A 1x1 conv whose input is pinned still prunes its output rows."""
    b = Builder()
    x = b.input([1, 3, 8, 8])
    h = b.op("Relu", b.conv(x, 3, 8, name="producer"))
    model = b.build(b.conv(h, 8, 4, name="consumer"))
    assert group_at(model, "x", 1).pinned is not None
    result = prune_ok(model)
    assert "1" not in result.report["initializers"]["producer_w"]
    assert np.array_equal(kept(result, "producer_w", 0), kept(result, "consumer_w", 1))


def test_grouped_conv_without_static_channels_is_pinned():
    """After a run-time Reshape the channel count is unknown: pruning the grouped conv's
    rows alone would silently re-assign its groups, so the rule must refuse."""
    b = Builder()
    h = b.conv(b.input([1, 3, 8, 8]), 3, 8, k=3, name="producer")
    b.inputs.append(helper.make_tensor_value_info("target", TensorProto.INT64, [4]))
    h = b.op("Reshape", h, "target", name="reshape")
    h = b.conv(h, 8, 8, group=4, name="mid")
    model = b.build(b.conv(h, 8, 4, name="consumer"))
    g = group_at(model, "mid", 1)
    assert g.pinned is not None and "grouped conv input 'reshape' has no static" in g.pinned


def test_chained_grouped_convs_merge_their_groups():
    """g=4 then g=2 over the same 8 channels: a channel is removed only with every
    group it belongs to, so the components are the two halves {0..3} and {4..7}."""
    b = Builder()
    h = b.conv(b.input([1, 3, 8, 8]), 3, 8, k=3, name="producer")
    h = b.conv(h, 8, 8, k=3, group=4, name="g4")
    h = b.conv(h, 8, 8, k=3, group=2, name="g2")
    model = b.build(b.conv(h, 8, 4, name="consumer"))
    assert group_at(model, "g4", 1).size == 2
    result = prune_ok(model)
    half = kept(result, "g4_w", 0)
    assert half in ([0, 1, 2, 3], [4, 5, 6, 7]) and kept(result, "producer_w", 0) == half
    assert attr(result.model, "g4", "group") == 2 and attr(result.model, "g2", "group") == 1
