"""Concat, Split, Slice, Transpose and the reshape family (Flatten, Reshape, Squeeze, Unsqueeze)."""

import numpy as np
import pytest
from onnx import TensorProto, helper

import graphprune

from .graphs import Builder, attr, group_at, input_value, kept, prune_ok, sandwich

BIG = np.iinfo(np.int64).max


def _producer(opset=17, spatial=8):
    b = Builder(opset)
    return b, b.conv(b.input([1, 3, spatial, spatial]), 3, 8, k=3, name="producer")


# -- Concat ------------------------------------------------------------------
@pytest.mark.parametrize("axis", [1, -3])
def test_concat_channel_axis(axis):
    b = Builder()
    x = b.input([1, 3, 8, 8])
    h = b.op("Concat", b.conv(x, 3, 8, k=3, name="left"), b.conv(x, 3, 6, k=3, name="right"),
             name="cat", axis=axis)
    result = prune_ok(b.build(b.conv(h, 14, 4, name="consumer")))
    left, right = kept(result, "left_w", 0), kept(result, "right_w", 0)
    assert len(left) < 8 and len(right) < 6 and len(left) + len(right) == 7
    assert kept(result, "consumer_w", 1) == left + [8 + c for c in right]


def test_concat_with_constant_part():
    """A constant concatenated on the channel axis is a parameter of the group: sliced too."""
    b = Builder()
    x = b.input([1, 3, 8, 8])
    const = b.weight(1, 4, 8, 8, name="fixed")
    h = b.op("Concat", b.conv(x, 3, 8, k=3, name="left"), const, name="cat", axis=1)
    result = prune_ok(b.build(b.conv(h, 12, 4, name="consumer")))
    left, fixed = kept(result, "left_w", 0), kept(result, "fixed", 1)
    assert kept(result, "consumer_w", 1) == left + [8 + c for c in fixed]


def test_concat_non_channel_axis():
    b = Builder()
    x = b.input([1, 3, 8, 8])
    h = b.op("Concat", b.conv(x, 3, 8, k=3, name="left"), b.conv(x, 3, 8, k=3, name="right"),
             name="cat", axis=2)
    result = prune_ok(b.build(b.conv(h, 8, 4, name="consumer")))
    assert kept(result, "left_w", 0) == kept(result, "right_w", 0) == kept(result, "consumer_w", 1)


# -- Split -------------------------------------------------------------------
SPLITS = [  # (opset, sizes, form)
    (11, [3, 5], "attr"), (11, [4, 4], "equal"), (13, [3, 5], "input"), (13, [4, 4], "equal"),
    (18, [3, 5], "input"), (18, [4, 4], "num_outputs"), (18, [3, 3, 2], "num_outputs"),
]


def _split_model(opset, sizes, form, axis=1):
    b, h = _producer(opset)
    attrs, inputs = {"axis": axis}, [h]
    if form == "attr":
        attrs["split"] = sizes
    elif form == "input":
        inputs.append(b.ints(sizes))
    elif form == "num_outputs":
        attrs["num_outputs"] = len(sizes)
    parts = b.op("Split", *inputs, outputs=len(sizes), name="split", **attrs)
    width = (lambda s: s) if axis == 1 else (lambda s: 8)
    outs = [b.conv(p, width(s), 4, name=f"c{i}") for i, (p, s) in enumerate(zip(parts, sizes))]
    if axis != 1:
        outs = [b.op("ReduceMean", o, axes=[2, 3]) if opset < 18 else
                b.op("ReduceMean", o, b.ints([2, 3])) for o in outs]
    return b.build(b.op("Sum", *outs))


def _emitted_split(model, opset):
    if opset >= 13:
        return input_value(model, "split", 1).tolist()
    return attr(model, "split", "split")


@pytest.mark.parametrize("opset, sizes, form", SPLITS)
def test_split_channel_axis(opset, sizes, form):
    result = prune_ok(_split_model(opset, sizes, form))
    parts = [kept(result, f"c{i}_w", 1) for i in range(len(sizes))]
    offsets = np.cumsum([0] + sizes[:-1])
    assert kept(result, "producer_w", 0) == [o + c for o, p in zip(offsets, parts) for c in p]
    assert _emitted_split(result.model, opset) == [len(p) for p in parts]


@pytest.mark.parametrize("opset, form", [(11, "attr"), (13, "input")])
def test_split_non_channel_axis(opset, form):
    result = prune_ok(_split_model(opset, [3, 5], form, axis=2))
    channels = kept(result, "producer_w", 0)
    assert channels == kept(result, "c0_w", 1) == kept(result, "c1_w", 1)
    assert _emitted_split(result.model, opset) == [3, 5]  # spatial sizes unchanged


# -- Slice -------------------------------------------------------------------
SLICES = [  # (opset, starts, ends, axes, steps, index dtype); all select channels 2..6
    (9, [2], [7], [1], None, np.int64),
    (10, [2], [7], [1], None, np.int64),
    (13, [2], [7], [1], [1], np.int64),
    (13, [-6], [-1], [-3], None, np.int64),
    (13, [2], [7], [1], [1], np.int32),
    (13, [0, 2, 1], [1, 7, BIG], [0, 1, 2], None, np.int64),
    (13, [0, 2, 0, 0], [BIG, 7, BIG, BIG], None, None, np.int64),
    (13, [2, 2], [7, 7], [1, 3], [1, 1], np.int64),
]


def _slice_model(opset, starts, ends, axes, steps, dtype, width=5):
    b, h = _producer(opset)
    if opset < 10:
        h = b.op("Slice", h, name="slice", starts=starts, ends=ends, axes=axes)
    else:
        inputs = [h, b.ints(starts, dtype=dtype), b.ints(ends, dtype=dtype)]
        if axes is not None or steps is not None:
            inputs.append(b.ints(axes, dtype=dtype) if axes is not None else "")
        if steps is not None:
            inputs.append(b.ints(steps, dtype=dtype))
        h = b.op("Slice", *inputs, name="slice")
    return b.build(b.conv(h, width, 4, name="consumer"))


@pytest.mark.parametrize("opset, starts, ends, axes, steps, dtype", SLICES)
def test_slice_channel_axis(opset, starts, ends, axes, steps, dtype):
    result = prune_ok(_slice_model(opset, starts, ends, axes, steps, dtype))
    producer = kept(result, "producer_w", 0)
    consumer = kept(result, "consumer_w", 1)
    assert consumer == [c - 2 for c in producer if 2 <= c < 7]
    i = 1 if axes is None else [a % 4 for a in axes].index(1)  # position of the channel axis
    if opset < 10:
        new_starts, new_ends = attr(result.model, "slice", "starts"), attr(result.model, "slice", "ends")
    else:
        new_starts = input_value(result.model, "slice", 1).tolist()
        new_ends = input_value(result.model, "slice", 2).tolist()
        assert input_value(result.model, "slice", 1).dtype == dtype
        assert input_value(result.model, "slice", 2).dtype == dtype
    begin = sum(c < 2 for c in producer)
    assert (new_starts[i], new_ends[i]) == (begin, begin + len(consumer))


@pytest.mark.parametrize("end", [BIG, 8])
def test_slice_to_the_end_of_the_channel_axis_stays_open(end):
    """``x[:, 2:]`` as exporters write it (end INT64_MAX) keeps its open end, so an axis that
    also carries a merged run-time size (a batch folded into the heads) still varies; a literal
    end equal to the size is rewritten to the new size."""
    b, h = _producer(13)
    h = b.op("Slice", h, b.ints([2]), b.ints([end]), b.ints([1]), name="slice")
    b.conv(h, 6, 4, name="consumer")
    result = prune_ok(b.build("consumer"))
    consumer = kept(result, "consumer_w", 1)
    begin = sum(c < 2 for c in kept(result, "producer_w", 0))
    assert input_value(result.model, "slice", 1).tolist() == [begin]
    assert input_value(result.model, "slice", 2).tolist() == [BIG if end == BIG else begin + len(consumer)]


@pytest.mark.parametrize("starts, ends, steps, width", [([0], [8], [2], 4), ([7], [-BIG], [-1], 8),
                                                        ([1], [8], [3], 3)])
def test_strided_slice_on_channel_axis_is_pinned(starts, ends, steps, width):
    model = _slice_model(13, starts, ends, [1], steps, np.int64, width)
    g = group_at(model, "producer", 1)
    assert g.pinned is not None and "'slice' does not map axis 1" in g.pinned


def test_slice_spatial_axis_keeps_channels():
    result = prune_ok(_slice_model(13, [1], [7], [2], [2], np.int64, width=8))
    assert kept(result, "producer_w", 0) == kept(result, "consumer_w", 1)
    assert input_value(result.model, "slice", 1).tolist() == [1]


# -- Flatten and Reshape -------------------------------------------------------
def _head(b, h, features, name="fc"):
    bias = [b.weight(4, name=f"{name}_b")] if b.opset < 11 else []  # C is optional from opset 11
    return b.op("Gemm", h, b.weight(4, features, name=f"{name}_w"), *bias, name=name, transB=1)


@pytest.mark.parametrize("opset", [9, 13])
@pytest.mark.parametrize("pooled", [True, False])
def test_flatten(opset, pooled):
    b, h = _producer(opset, spatial=4)
    if pooled:
        h = b.op("GlobalAveragePool", h)
    result = prune_ok(b.build(_head(b, b.op("Flatten", h, axis=1), 8 if pooled else 128)))
    channels = kept(result, "producer_w", 0)
    block = 1 if pooled else 16  # each channel owns H*W features
    assert kept(result, "fc_w", 1) == [c * block + j for c in channels for j in range(block)]


@pytest.mark.parametrize("target, pooled, emitted", [
    ([1, 8], True, [1, 4]), ([1, -1], True, [1, -1]), ([0, -1], True, [0, -1]),
    ([1, 128], False, [1, 64]), ([1, -1], False, [1, -1]), ([-1, 128], False, [-1, 64])])
def test_reshape_to_features(target, pooled, emitted):
    b, h = _producer(spatial=4)
    if pooled:
        h = b.op("GlobalAveragePool", h)
    h = b.op("Reshape", h, b.ints(target), name="reshape")
    result = prune_ok(b.build(_head(b, h, 8 if pooled else 128)))
    block = 1 if pooled else 16
    channels = kept(result, "producer_w", 0)
    assert kept(result, "fc_w", 1) == [c * block + j for c in channels for j in range(block)]
    assert input_value(result.model, "reshape", 1).tolist() == emitted


def test_reshape_features_into_heads():
    """[1,5,16] -> [1,5,4,4] (4 heads of 4) -> Relu -> [1,5,16]: whole heads go."""
    b = Builder()
    x = b.input([1, 5, 8])
    h = b.op("MatMul", x, b.weight(8, 16, name="mm1_w"), name="mm1")
    h = b.op("Relu", b.op("Reshape", h, b.ints([1, 5, 4, 4]), name="split_heads"))
    h = b.op("Reshape", h, b.ints([1, 5, 16]), name="merge_heads")
    model = b.build(b.op("MatMul", h, b.weight(16, 4, name="mm2_w"), name="mm2"))
    g = group_at(model, "split_heads", 2)
    assert g.pinned is None and g.size == 4
    assert group_at(model, "split_heads", 3).pinned is not None  # head dim stays
    result = prune_ok(model)
    features = kept(result, "mm1_w", 1)
    heads = sorted({f // 4 for f in features})
    assert features == [hd * 4 + d for hd in heads for d in range(4)] == kept(result, "mm2_w", 0)
    assert input_value(result.model, "split_heads", 1).tolist() == [1, 5, 2, 4]
    assert input_value(result.model, "merge_heads", 1).tolist() == [1, 5, 8]


def test_reshape_target_from_shape_arithmetic():
    """A target computed from Shape(h) is folded, then rewritten like a constant one."""
    b, h = _producer(spatial=4)
    shape = b.op("Shape", h)
    lead = b.op("Slice", shape, b.ints([0]), b.ints([2]))
    target = b.op("Concat", lead, b.ints([-1]), axis=0)
    h = b.op("Reshape", h, target, name="reshape")  # [1, 8, 16]
    h = b.op("Transpose", h, perm=[0, 2, 1])
    result = prune_ok(b.build(b.op("MatMul", h, b.weight(8, 4, name="mm_w"), name="mm")))
    assert kept(result, "producer_w", 0) == kept(result, "mm_w", 0)
    assert input_value(result.model, "reshape", 1).tolist() == [1, 4, -1]


def test_reshape_runtime_target_is_pinned():
    b, h = _producer(spatial=4)
    b.inputs.append(helper.make_tensor_value_info("target", TensorProto.INT64, [2]))
    h = b.op("Reshape", h, "target", name="reshape")
    model = b.build(b.op("Relu", h))
    g = group_at(model, "producer", 1)
    assert g.pinned is not None and "Reshape target ('target') is computed at run time" in g.pinned


@pytest.mark.parametrize("opset", [11, 13])
def test_squeeze_unsqueeze(opset):
    b, h = _producer(opset)
    h = b.op("GlobalAveragePool", h)
    if opset < 13:
        h = b.op("Unsqueeze", b.op("Squeeze", h, axes=[2, 3]), axes=[2, 3])
    else:
        h = b.op("Unsqueeze", b.op("Squeeze", h, b.ints([-1, 2])), b.ints([2, -1]))
    result = prune_ok(b.build(b.conv(h, 8, 4, name="consumer")))
    assert kept(result, "producer_w", 0) == kept(result, "consumer_w", 1)


def test_squeeze_all_unit_axes():
    b, h = _producer()
    h = b.op("Squeeze", b.op("GlobalMaxPool", h))  # [1,8,1,1] -> [8]
    result = prune_ok(b.build(b.op("MatMul", h, b.weight(8, 4, name="mm_w"), name="mm")))
    assert kept(result, "producer_w", 0) == kept(result, "mm_w", 0)


# -- Transpose -----------------------------------------------------------------
def test_transpose_to_channels_last():
    b, h = _producer()
    h = b.op("Transpose", h, perm=[0, 2, 3, 1])
    result = prune_ok(b.build(b.op("MatMul", h, b.weight(8, 4, name="mm_w"), name="mm")))
    assert kept(result, "producer_w", 0) == kept(result, "mm_w", 0)


@pytest.mark.parametrize("perms", [([0, 2, 3, 1], [0, 3, 1, 2]), (None, None), ([1, 0, 3, 2], [1, 0, 3, 2])])
def test_transpose_round_trip(perms):
    def middle(b, h):
        for perm in perms:
            h = b.op("Transpose", h, **({} if perm is None else {"perm": perm}))
        return h
    result = prune_ok(sandwich(middle))
    assert kept(result, "producer_w", 0) == kept(result, "consumer_w", 1)


# -- ops without a rule ----------------------------------------------------------
def test_op_without_rule_pins():
    model = sandwich(lambda b, h: b.op("LRN", h, name="mystery", size=3))
    for tensor in ("producer", "mystery"):
        g = group_at(model, tensor, 1)
        assert g.pinned == "LRN node 'mystery': no rule for op LRN"


def test_gather_on_the_channel_axis():
    """Gather's index values refer to the data's channel axis, which stays pinned; the
    output channels follow the index tensor, so removing one drops that index entry."""
    model = sandwich(lambda b, h: b.op("Gather", h, b.ints([7, 6, 5, 4, 3, 2, 1, 0], name="idx"),
                                       name="mystery", axis=1))
    assert "does not map axis 1" in group_at(model, "producer", 1).pinned
    assert group_at(model, "mystery", 1).prunable
    result = prune_ok(model)
    assert len(kept(result, "idx", 0)) == 4


def test_emitters_skip_nodes_with_run_time_inputs():
    """Reshape/Slice/Resize whose target, bounds or sizes are computed at run time are
    pinned by their rules; pruning elsewhere must leave them alone (not crash)."""
    b, h = _producer(13)
    c = b.conv(b.op("Relu", h), 8, 4, name="consumer")
    b.inputs.append(helper.make_tensor_value_info("aux", TensorProto.FLOAT, [1, 4, "h", "w"]))
    shape = b.op("Shape", "aux")
    target = b.op("Concat", b.op("Slice", shape, b.ints([0]), b.ints([2])), b.ints([-1]), axis=0)
    reshaped = b.op("Reshape", c, target, name="reshape")
    sliced = b.op("Slice", c, b.ints([0]), b.op("Slice", shape, b.ints([2]), b.ints([3])),
                  b.ints([2]), name="slice")
    resized = b.op("Resize", c, "", "", shape, name="resize")
    model = b.build(reshaped, sliced, resized, shapes={"reshape": [1, 4, "n"]})
    # pinned: the reshape target reads the graph input's size for this axis
    assert group_at(model, "consumer", 1).pinned
    result = prune_ok(model)
    assert kept(result, "producer_w", 0) == kept(result, "consumer_w", 1)


@pytest.mark.parametrize("op", ["Split", "Slice"])
def test_empty_part_holds_no_channel(op):
    """A zero-size Split part / Slice carries no channel: it neither pins nor joins the group."""
    b, h = _producer(13)
    if op == "Split":
        main, empty = b.op("Split", h, b.ints([8, 0]), outputs=2, axis=1, name="split")
    else:
        main, empty = h, b.op("Slice", h, b.ints([5]), b.ints([5]), b.ints([1]), name="slice")
    c = b.conv(main, 8, 4, name="consumer")
    z = b.op("MatMul", b.op("ReduceMean", empty, axes=[2, 3], keepdims=0), b.weight(0, 4))
    z = b.op("Unsqueeze", z, b.ints([2, 3]))
    result = prune_ok(b.build(b.op("Add", c, z)))
    assert kept(result, "producer_w", 0) == kept(result, "consumer_w", 1)
    if op == "Split":
        assert input_value(result.model, "split", 1).tolist() == [4, 0]
    else:
        assert input_value(result.model, "slice", 1).tolist() == input_value(result.model, "slice", 2).tolist()


# -- Tile --------------------------------------------------------------------
@pytest.mark.parametrize("opset", [8, 13])
def test_tile_copies_the_channel_axis_in_whole_blocks(opset):
    """``Tile([1, 2, 1, 1])``: consumer column ``o·8 + j`` reads channel ``j``; the repeats
    are multipliers, so nothing is rewritten."""
    b, h = _producer(opset)
    h = b.op("Tile", h, b.ints([1, 2, 1, 1], name="repeats"), name="tile")
    b.conv(h, 16, 4, name="consumer")
    result = prune_ok(b.build("consumer"))
    channels = kept(result, "producer_w", 0)
    assert len(channels) == 4
    assert kept(result, "consumer_w", 1) == channels + [8 + c for c in channels]
    assert input_value(result.model, "tile", 1).tolist() == [1, 2, 1, 1]


def test_tile_of_a_size_one_axis_is_a_new_axis_and_stays_pinned():
    """``[1, 8, 1, 1] → [1, 8, 1, 4]``: the tiled axis holds copies, not channels."""
    b, h = _producer()
    h = b.op("GlobalAveragePool", h, name="pool")
    h = b.op("Tile", h, b.ints([1, 1, 1, 4]), name="tile")
    b.conv(h, 8, 4, name="consumer")
    model = b.build("consumer")
    analysis = graphprune.analyse_model(model)
    assert group_at(analysis, "tile", 3).pinned
    assert not group_at(analysis, "producer", 1).pinned
    assert len(kept(prune_ok(model), "consumer_w", 1)) == 4


def test_tile_with_run_time_repeats_pins():
    b, h = _producer()
    shape = b.op("Shape", h, name="shape")
    h = b.op("Tile", h, b.op("Div", shape, shape, name="ones"), name="tile")
    b.conv(h, 8, 4, name="consumer")
    analysis = graphprune.analyse_model(b.build("consumer"))
    assert group_at(analysis, "producer", 1).pinned
