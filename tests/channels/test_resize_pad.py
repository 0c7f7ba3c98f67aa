"""Resize / Upsample and Pad: channel-wise when they leave the channel axis alone."""

import numpy as np
import pytest

from .graphs import Builder, group_at, input_value, kept, prune_ok, sandwich

F32 = np.float32


def _check_channels(result):
    channels = kept(result, "producer_w", 0)
    assert len(channels) == 4 and channels == kept(result, "consumer_w", 1)


@pytest.mark.parametrize("opset, attrs", [(8, {"scales": [1.0, 1.0, 2.0, 2.0]}), (9, {})])
def test_upsample(opset, attrs):
    def up(b, h):
        scales = [] if attrs else [b.const(np.array([1, 1, 2, 2], F32))]
        return b.op("Upsample", h, *scales, name="up", mode="nearest", **attrs)
    _check_channels(prune_ok(sandwich(up, opset=opset)))


def _resize(opset, scales=None, sizes=None, roi=None, **attrs):
    def middle(b, h):
        empty = b.const(np.zeros(0, F32)) if opset < 13 else ""
        inputs = [h, b.const(np.array(roi, F32)) if roi else empty]
        inputs.append(b.const(np.array(scales, F32)) if scales else empty)
        if sizes:
            inputs.append(b.ints(sizes, name="sizes"))
        if opset == 10:
            inputs = [h, inputs[2]]
        return b.op("Resize", *inputs, name="resize", **attrs)
    return middle


@pytest.mark.parametrize("opset, mode", [(o, m) for o in (10, 11, 13, 19)
                                         for m in ("nearest", "linear", "cubic")
                                         if (o, m) != (10, "cubic")])  # Resize-10 has no cubic
def test_resize_scales(opset, mode):
    model = sandwich(_resize(opset, scales=[1, 1, 2, 2], mode=mode), opset=opset)
    _check_channels(prune_ok(model))


@pytest.mark.parametrize("opset", [11, 13, 18])
def test_resize_sizes_are_rewritten(opset):
    model = sandwich(_resize(opset, sizes=[1, 8, 16, 16]), opset=opset)
    result = prune_ok(model)
    _check_channels(result)
    assert input_value(result.model, "resize", 3).tolist() == [1, 4, 16, 16]


@pytest.mark.parametrize("form", ["scales", "sizes"])
def test_resize_axes_without_channels(form):
    """Opset 18 ``axes=[2, 3]``: the channel axis is not resized at all."""
    arg = {"scales": [2, 2]} if form == "scales" else {"sizes": [16, 16]}
    result = prune_ok(sandwich(_resize(18, axes=[2, 3], **arg), opset=18))
    _check_channels(result)
    if form == "sizes":
        assert input_value(result.model, "resize", 3).tolist() == [16, 16]


def test_resize_axes_with_channels_rewrites_sizes():
    result = prune_ok(sandwich(_resize(18, sizes=[8, 16, 16], axes=[-3, -2, -1]), opset=18))
    _check_channels(result)
    assert input_value(result.model, "resize", 3).tolist() == [4, 16, 16]


def test_resize_sizes_keep_aspect_ratio_not_larger():
    """``not_larger`` scales every axis by the smallest ratio (1 here, set by the channel
    axis): the channel axis keeps its size and the rewritten sizes keep that ratio."""
    model = sandwich(_resize(18, sizes=[1, 8, 16, 16], keep_aspect_ratio_policy="not_larger"),
                     opset=18)
    result = prune_ok(model)
    _check_channels(result)
    assert input_value(result.model, "resize", 3).tolist() == [1, 4, 16, 16]


def test_resize_scaling_channels_is_pinned():
    b = Builder(13)
    h = b.conv(b.input([1, 3, 8, 8]), 3, 8, k=3, name="producer")
    model = b.build(b.conv(_resize(13, scales=[1, 2, 1, 1])(b, h), 16, 4, name="consumer"))
    g = group_at(model, "producer", 1)
    assert g.pinned is not None and "'resize' does not map axis 1" in g.pinned


def test_resize_crop_over_channels_is_pinned():
    """tf_crop_and_resize with an RoI over half the channels resamples channels into each
    other even though the channel count is unchanged."""
    roi = [0, 0, 0, 0, 1, 0.5, 1, 1]
    model = sandwich(_resize(13, sizes=[1, 8, 16, 16], roi=roi, mode="linear",
                             coordinate_transformation_mode="tf_crop_and_resize"), opset=13)
    g = group_at(model, "producer", 1)
    assert g.pinned is not None and "'resize' does not map axis 1" in g.pinned


def test_resize_crop_over_whole_channel_range():
    roi = [0, 0, 0, 0, 1, 1, 1, 1]
    model = sandwich(_resize(13, sizes=[1, 8, 16, 16], roi=roi, mode="linear",
                             coordinate_transformation_mode="tf_crop_and_resize"), opset=13)
    result = prune_ok(model)
    _check_channels(result)
    assert input_value(result.model, "resize", 3).tolist() == [1, 4, 16, 16]


def _pad(opset, pads, mode="constant", axes=None, value=None):
    def middle(b, h):
        if opset < 11:
            return b.op("Pad", h, name="pad", mode=mode, pads=pads)
        inputs = [h, b.ints(pads)]
        if value is not None or axes is not None:
            inputs.append(b.const(np.array(value, F32)) if value is not None else "")
        if axes is not None:
            inputs.append(b.ints(axes))
        return b.op("Pad", *inputs, name="pad", mode=mode)
    return middle


SPATIAL_PADS = [0, 0, 1, 2, 0, 0, 2, 1]


@pytest.mark.parametrize("opset, mode, value", [
    (8, "constant", None), (8, "reflect", None), (11, "constant", None), (11, "constant", 0.5),
    (13, "edge", None), (13, "reflect", None), (19, "wrap", None)])
def test_pad_spatial(opset, mode, value):
    _check_channels(prune_ok(sandwich(_pad(opset, SPATIAL_PADS, mode, value=value), opset=opset)))


@pytest.mark.parametrize("axes", [[2, 3], [-2, -1]])
def test_pad_axes_input(axes):
    _check_channels(prune_ok(sandwich(_pad(18, [1, 2, 2, 1], axes=axes), opset=18)))


@pytest.mark.parametrize("opset, pads, axes", [
    (8, [0, 1, 0, 0, 0, 1, 0, 0], None), (11, [0, 1, 0, 0, 0, 0, 0, 0], None),
    (13, [0, 0, 0, 0, 0, -1, 0, 0], None), (18, [1, 1, 0, 0], [1, 2])])
def test_pad_on_channel_axis_is_pinned(opset, pads, axes):
    b = Builder(opset)
    h = b.conv(b.input([1, 3, 8, 8]), 3, 8, k=3, name="producer")
    h = _pad(opset, pads, axes=axes)(b, h)
    cout = 8 + sum(pads[i] for i, a in enumerate(axes or range(4)) if a == 1) \
        + sum(pads[len(pads) // 2 + i] for i, a in enumerate(axes or range(4)) if a == 1)
    model = b.build(b.conv(h, cout, 4, name="consumer"))
    g = group_at(model, "producer", 1)
    assert g.pinned is not None and "'pad' does not map axis 1" in g.pinned


def test_resize_sizes_keep_aspect_ratio_not_smaller_is_pinned():
    """``not_smaller`` takes the largest ratio (2) for every axis: channels are doubled."""
    b = Builder(18)
    h = b.conv(b.input([1, 3, 8, 8]), 3, 8, k=3, name="producer")
    h = _resize(18, sizes=[1, 8, 16, 16], keep_aspect_ratio_policy="not_smaller")(b, h)
    model = b.build(b.conv(h, 16, 4, name="consumer"))
    g = group_at(model, "producer", 1)
    assert g.pinned is not None and "'resize' does not map axis 1" in g.pinned
