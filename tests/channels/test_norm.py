"""BatchNormalization, InstanceNormalization (per channel) and LayerNormalization (approximate)."""

import onnx
import pytest
from onnx import numpy_helper

from .graphs import Builder, group_at, kept, prune_ok, sandwich


def _bn(b, h, **attrs):
    params = [b.weight(8, name=f"bn_{p}") for p in ("scale", "bias", "mean")]
    var = b.const((b.rng.random(8) + 0.5).astype("float32"), name="bn_var")
    return b.op("BatchNormalization", h, *params, var, name="bn", epsilon=1e-3, **attrs)


@pytest.mark.parametrize("opset, attrs", [(9, {}), (14, {}), (15, {"training_mode": 0})])
def test_batch_norm(opset, attrs):
    result = prune_ok(sandwich(lambda b, h: _bn(b, h, **attrs), opset=opset))
    channels = kept(result, "producer_w", 0)
    assert len(channels) == 4 and channels == kept(result, "consumer_w", 1)
    for p in ("scale", "bias", "mean", "var"):
        assert kept(result, f"bn_{p}", 0) == channels


def test_batch_norm_statistics_are_not_importance():
    """Huge running statistics on a removed channel must not save it."""
    model = sandwich(_bn)
    before = kept(prune_ok(model), "producer_w", 0)
    removed = min(set(range(8)) - set(before))
    for init in model.graph.initializer:
        if init.name in ("bn_mean", "bn_var"):
            value = numpy_helper.to_array(init).copy()
            value[removed] = 1e6
            init.CopyFrom(numpy_helper.from_array(value, init.name))
    assert kept(prune_ok(model), "producer_w", 0) == before


def test_training_mode_batch_norm_is_pinned():
    b = Builder(opset=15)
    x = b.input([1, 3, 8, 8])
    h = b.conv(x, 3, 8, k=3, name="producer")
    params = [b.weight(8, name=f"bn_{p}") for p in ("scale", "bias", "mean", "var")]
    y, mean, var = b.op("BatchNormalization", h, *params, outputs=3, name="bn", training_mode=1)
    model = b.build(b.conv(y, 8, 4, name="consumer"), mean, var)
    g = group_at(model, "producer", 1)
    assert g.pinned is not None and "training-mode" in g.pinned


@pytest.mark.parametrize("spatial", [1, 2])
def test_instance_norm(spatial):
    def inorm(b, h):
        return b.op("InstanceNormalization", h, b.weight(8, name="in_scale"),
                    b.weight(8, name="in_bias"), name="in", epsilon=1e-3)
    result = prune_ok(sandwich(inorm, spatial=spatial))
    channels = kept(result, "producer_w", 0)
    assert channels == kept(result, "in_scale", 0) == kept(result, "in_bias", 0)
    assert channels == kept(result, "consumer_w", 1)


@pytest.mark.parametrize("bias", [True, False])
def test_layer_norm_over_features_is_approximate_yet_verified_exactly(bias):
    """The group is approximate (the statistic changes), and the oracle takes LayerNorm's mean
    and variance over the kept features (onnx_masked_norms), so the prune is still checked exactly."""
    b = Builder(opset=17)
    x = b.input([1, 5, 8])
    h = b.op("MatMul", x, b.weight(8, 16, name="mm1_w"), name="mm1")
    extra = [b.weight(16, name="ln_bias")] if bias else []
    h = b.op("LayerNormalization", h, b.weight(16, name="ln_scale"), *extra, name="ln", axis=-1)
    model = b.build(b.op("MatMul", h, b.weight(16, 4, name="mm2_w"), name="mm2"))
    g = group_at(model, "ln", 2)
    assert g.pinned is None and "LayerNormalization 'ln'" in g.approximate
    result = prune_ok(model)
    assert "normalisation statistics taken over the kept channels" in result.verification.message
    features = kept(result, "mm1_w", 1)
    assert features == kept(result, "ln_scale", 0) == kept(result, "mm2_w", 0)
    if bias:
        assert kept(result, "ln_bias", 0) == features


def test_layer_norm_over_other_axes_keeps_channels_exact():
    """LayerNorm over the last (spatial) axis is channel-wise: exact, scale untouched."""
    def ln(b, h):
        return b.op("LayerNormalization", h, b.weight(6, name="ln_scale"), name="ln", axis=-1)
    model = sandwich(ln, size=6)
    assert group_at(model, "ln", 1).approximate is None
    result = prune_ok(model)
    assert kept(result, "producer_w", 0) == kept(result, "consumer_w", 1)
    assert "ln_scale" not in result.report["initializers"]


def test_layer_norm_from_channel_axis_is_approximate():
    """axis=1 on NCHW normalises over C, H, W: the channel group is approximate."""
    def ln(b, h):
        return b.op("LayerNormalization", h, b.weight(8, 1, 1, name="ln_scale"), name="ln", axis=1)
    model = sandwich(ln)
    assert group_at(model, "ln", 1).approximate is not None
    result = prune_ok(model, status="approximate")
    assert kept(result, "ln_scale", 0) == kept(result, "producer_w", 0)


def _rms_norm_model(opset):
    import numpy as np

    """RMSNorm as exporters write it: Pow, ReduceMean over the last axis, Add, Sqrt, Div, Mul."""
    b = Builder(opset=opset)
    x = b.input([2, 5, 8])
    h = b.op("MatMul", x, b.weight(8, 16, name="mm1_w"), name="mm1")
    sq = b.op("Mul", h, h, name="sq")
    if opset >= 18:
        mean = b.op("ReduceMean", sq, b.ints([-1], name="axes"), name="mean", keepdims=1)
    else:
        mean = b.op("ReduceMean", sq, name="mean", axes=[-1], keepdims=1)
    rms = b.op("Sqrt", b.op("Add", mean, b.const(np.float32(1e-6), name="eps"), name="add_eps"), name="sqrt")
    n = b.op("Mul", b.op("Div", h, rms, name="div"), b.weight(16, name="rms_scale"), name="scale")
    return b.build(b.op("MatMul", n, b.weight(16, 4, name="mm2_w"), name="mm2"))


@pytest.mark.parametrize("opset", [13, 18])
def test_rms_norm_prune_is_verified_exactly_and_a_wrong_scale_slice_fails(opset):
    import numpy as np

    from graphprune import verify

    model = _rms_norm_model(opset)
    result = prune_ok(model)
    assert "1 normalisation statistics" in result.verification.message
    wrong = onnx.ModelProto()
    wrong.CopyFrom(result.model)
    for t in wrong.graph.initializer:
        if t.name == "rms_scale":  # the kept scales in the wrong order
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t)[::-1].copy(), t.name))
    assert not np.array_equal(numpy_helper.to_array(next(t for t in wrong.graph.initializer
                                                          if t.name == "rms_scale")),
                              numpy_helper.to_array(next(t for t in result.model.graph.initializer
                                                         if t.name == "rms_scale")))
    check = verify.verify_prune(model, wrong, result.plan)
    assert check.status == "failed", check
