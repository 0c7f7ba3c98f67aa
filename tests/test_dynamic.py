"""Dynamic axes end to end: small graphs for each mechanism, as exporters with dynamic axes write them.

Each test builds a graph whose batch, sequence or spatial sizes are symbolic
and checks that pruning still finds the channels, emits a model that runs at
other sizes, and that the oracle runs at sizes the model accepts and cannot
be fooled by saturating outputs.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import graphprune
from graphprune.cli import main
from graphprune.feeds import feed_plan
from graphprune.verify import compare, internal_checkpoints, oracle_model

from channels.graphs import Builder, group_at, kept


def _run(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def _prune(model, **kwargs):
    result = graphprune.prune(model, ratio=0.5, **kwargs)
    assert result.verification.status == "exact", result.verification.message
    onnx.checker.check_model(result.model, full_check=True)
    return result


def test_residual_add_of_differently_named_batches_prunes_its_channels():
    """``Add`` of two branches whose batch dims carry unrelated names (``a``, ``b``): the
    batch axis is left alone, the channel axis couples and prunes."""
    b = Builder()
    x1, x2 = b.input(["a", 3, 8, 8], "x1"), b.input(["b", 3, 8, 8], "x2")
    s = b.op("Add", b.conv(x1, 3, 8, name="left"), b.conv(x2, 3, 8, name="right"))
    y = b.conv(b.op("Relu", s), 8, 4, name="consumer")
    result = _prune(b.build(y))
    assert kept(result, "left_w", 0) == kept(result, "right_w", 0) == kept(result, "consumer_w", 1)
    assert len(kept(result, "left_w", 0)) == 4


def test_concat_along_a_symbolic_axis_keeps_channels_prunable():
    """Detectors concatenate feature maps of different (symbolic) sizes along a spatial axis:
    the concat axis is pinned, the channel axis still prunes across both branches."""
    b = Builder()
    x1, x2 = b.input([1, 3, "h1", 8], "x1"), b.input([1, 3, "h2", 8], "x2")
    c = b.op("Concat", b.conv(x1, 3, 8, name="top"), b.conv(x2, 3, 8, name="bottom"), axis=2)
    y = b.conv(c, 8, 4, name="consumer")
    result = _prune(b.build(y))
    assert kept(result, "top_w", 0) == kept(result, "bottom_w", 0) == kept(result, "consumer_w", 1)


def _attention(merge_batch: bool) -> onnx.ModelProto:
    """``x[B, S, 32]`` → 4 heads of 8 with run-time reshape targets, as HF exports write
    ``view(*x.shape[:2], -1, 8)``; with ``merge_batch`` the scores run on ``(B·H, S, D)``
    as the dynamo exporter decomposes attention."""
    b = Builder(opset=17)
    x = b.input(["batch", "seq", 32])
    shape = b.op("Shape", x)
    lead = b.op("Slice", shape, b.ints([0]), b.ints([2]))
    heads_target = b.op("Concat", lead, b.ints([-1]), b.ints([8]), axis=0)

    def heads(name):
        p = b.op("MatMul", x, b.weight(32, 32, name=f"{name}_w"), name=name)
        return b.op("Transpose", b.op("Reshape", p, heads_target), perm=[0, 2, 1, 3])  # B, H, S, D

    q, k, v = heads("q"), heads("k"), heads("v")
    if merge_batch:
        seq = b.op("Slice", shape, b.ints([1]), b.ints([2]))
        flat = b.op("Concat", b.ints([-1]), seq, b.ints([8]), axis=0)
        q, k, v = (b.op("Reshape", t, flat) for t in (q, k, v))  # B·H, S, D
    scores = b.op("Softmax", b.op("MatMul", q, b.op("Transpose", k, perm=[0, 2, 1] if merge_batch
                                                    else [0, 1, 3, 2])), axis=-1)
    out = b.op("MatMul", scores, v)
    if merge_batch:
        batch = b.op("Slice", shape, b.ints([0]), b.ints([1]))
        seq = b.op("Slice", shape, b.ints([1]), b.ints([2]))
        out = b.op("Reshape", out, b.op("Concat", batch, b.ints([4]), seq, b.ints([8]), axis=0))
    out = b.op("Transpose", out, perm=[0, 2, 1, 3])
    merged = b.op("Reshape", out, b.op("Concat", lead, b.ints([-1]), axis=0))
    y = b.op("MatMul", merged, b.weight(32, 16, name="proj_w"), name="proj")
    return b.build(y)


@pytest.mark.parametrize("merge_batch", [False, True], ids=["heads", "batch-merged-heads"])
def test_heads_behind_run_time_reshape_targets_prune_whole_heads(merge_batch):
    model = _attention(merge_batch)
    group = group_at(model, "q_w", 1)
    assert group.pinned is None and group.size == 4  # four heads, not 32 features
    result = _prune(model)
    kept_q = kept(result, "q_w", 1)
    assert len(kept_q) == 16 and kept_q == kept(result, "proj_w", 0)
    assert all(kept_q[i:i + 8] == list(range(kept_q[i], kept_q[i] + 8)) for i in range(0, 16, 8))
    for shape in ((1, 5, 32), (3, 11, 32)):  # sizes the export never saw
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        (y,) = _run(result.model, {"x": x})
        assert y.shape == (*shape[:2], 16) and np.isfinite(y).all()


def _stride_four_model() -> onnx.ModelProto:
    """Two stride-2 convs, a ×4 upsample and a concat with the full-size map: H and W must be
    multiples of 4."""
    b = Builder()
    x = b.input(["n", 3, "h", "w"])
    full = b.conv(x, 3, 8, name="stem")
    down = b.op("Conv", full, b.weight(8, 8, 3, 3, name="down1_w"), strides=[2, 2], pads=[1, 1, 1, 1])
    down = b.op("Conv", down, b.weight(8, 8, 3, 3, name="down2_w"), strides=[2, 2], pads=[1, 1, 1, 1])
    up = b.op("Resize", down, "", b.const(np.array([1, 1, 4, 4], dtype=np.float32)), mode="nearest")
    y = b.conv(b.op("Concat", full, up, axis=1), 16, 4, name="head")
    return b.build(y)


def test_model_that_cannot_run_at_size_two_is_verified_at_a_size_it_accepts():
    """The oracle tries realistic sizes until the model runs."""
    result = _prune(_stride_four_model())
    shapes = result.verification.shapes
    assert len(shapes) == 2 and all(s["x"][2] % 4 == 0 and s["x"][2] >= 32 for s in shapes)
    assert result.report["macs"][0] > result.report["macs"][1] > 0


def test_run_time_slice_and_resize_leave_the_channel_axis_prunable():
    """``x[:, :, :n]`` with ``n`` read at run time and a resize to sizes built from
    ``Shape``: only the spatial axes are pinned; the channels prune through both."""
    b = Builder()
    x = b.input(["n", 3, "h", "w"])
    h = b.conv(x, 3, 8, name="producer")
    shape = b.op("Shape", h)
    half = b.op("Div", b.op("Slice", shape, b.ints([2]), b.ints([3])), b.ints([2]))
    h = b.op("Slice", h, b.ints([0]), half, b.ints([2]))
    sizes = b.op("Concat", b.op("Slice", shape, b.ints([0]), b.ints([2])), b.ints([16, 16]), axis=0)
    h = b.op("Resize", h, "", "", sizes, mode="nearest")
    result = _prune(b.build(b.conv(h, 8, 4, name="consumer")))
    assert kept(result, "producer_w", 0) == kept(result, "consumer_w", 1)
    (y,) = _run(result.model, {"x": np.ones((2, 3, 20, 12), dtype=np.float32)})
    assert y.shape == (2, 4, 16, 16)


def _embedding_model(rows: int = 50) -> onnx.ModelProto:
    b = Builder()
    b.inputs.append(helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]))
    table = b.weight(rows, 16, name="embedding")
    h = b.op("Gather", table, "input_ids")
    h = b.op("Relu", b.op("MatMul", h, b.weight(16, 32, name="up_w"), name="up"))
    return b.build(b.op("MatMul", h, b.weight(32, 16, name="down_w"), name="down"))


def test_token_ids_are_valid_and_varied():
    model = _embedding_model(rows=50)
    plan = feed_plan(model)
    shapes = plan.assignments()[0]
    ids = plan.values(shapes, seed=0)["input_ids"]
    assert ids.shape == (1, 16) and ids.max() < 50 and len(np.unique(ids)) > 4
    other = plan.values(plan.assignments()[1], seed=1)["input_ids"]
    assert other.shape != ids.shape
    result = _prune(model)
    assert [s["input_ids"] for s in result.verification.shapes] == [[1, 16], [2, 32]]


def test_declared_input_shape_is_used_for_verification_and_macs():
    model = _embedding_model()
    result = _prune(model, input_shapes={"input_ids": (1, 128)})
    assert result.verification.shapes[0] == {"input_ids": [1, 128]}
    assert result.report["macs_at"] == {"input_ids": [1, 128]}
    at_16 = graphprune.inspect(model)["macs"]
    assert graphprune.inspect(model, input_shapes={"input_ids": (1, 128)})["macs"] == 8 * at_16 > 0


def test_macs_are_counted_at_a_real_size_when_spatial_dims_are_symbolic():
    b = Builder()
    x = b.input(["n", 3, "h", "w"])
    model = b.build(b.conv(x, 3, 8, k=3, name="c"))
    info = graphprune.inspect(model)
    assert info["macs_at"] == {"x": [1, 3, 224, 224]}
    assert info["macs"] == 224 * 224 * 8 * 3 * 9
    assert graphprune.inspect(model, input_shapes={"x": (1, 3, 64, 64)})["macs"] == 64 * 64 * 8 * 27


def test_a_wrong_slice_behind_a_saturating_output_is_caught():
    """The graph output is a sigmoid pushed far into saturation (all ≈ 0): comparing outputs
    alone passes a deliberately wrong prune; the internal checkpoint after the consumer does not."""
    b = Builder()
    x = b.input(["n", 3, 8, 8])
    h = b.op("Relu", b.conv(x, 3, 8, name="producer"))
    h = b.conv(h, 8, 4, name="consumer")
    y = b.op("Sigmoid", b.op("Sub", b.op("Mul", h, b.const(np.float32(1e-3))), b.const(np.float32(60.0))))
    source = b.build(y)
    result = _prune(source)
    broken = onnx.ModelProto()
    broken.CopyFrom(result.model)
    for init in broken.graph.initializer:
        if init.name == "consumer_w":
            w = numpy_helper.to_array(init)[:, ::-1].copy()  # consumer columns in the wrong order
            init.CopyFrom(numpy_helper.from_array(w, init.name))
    oracle = oracle_model(source, result.plan)
    assert compare(oracle, broken).status == "exact"  # the outputs are blind to it
    caught = compare(oracle, broken, internal=internal_checkpoints(result.plan))
    assert caught.status == "failed" and "consumer" in caught.message


def test_shared_zero_bias_does_not_tie_unrelated_layers():
    """Exporters merge identical initializers (every zero bias); the layers stay separate groups."""
    b = Builder()
    x = b.input(["n", 8])
    zero = b.const(np.zeros(16, dtype=np.float32), "zero_bias")
    h1 = b.op("Relu", b.op("Gemm", x, b.weight(8, 16, name="fc1_w"), zero))
    h1 = b.op("Gemm", h1, b.weight(16, 8, name="fc2_w"))
    h2 = b.op("Relu", b.op("Gemm", h1, b.weight(8, 16, name="fc3_w"), zero))
    y = b.op("Gemm", h2, b.weight(16, 8, name="fc4_w"))
    model = b.build(y)
    assert group_at(model, "fc1_w", 1).id != group_at(model, "fc3_w", 1).id
    result = _prune(model)
    assert len(kept(result, "fc1_w", 1)) == len(kept(result, "fc3_w", 1)) == 8


def test_cli_input_shape(tmp_path, capsys):
    path = tmp_path / "m.onnx"
    onnx.save(_embedding_model(), path)
    out = tmp_path / "out.onnx"
    assert main(["prune", str(path), "-o", str(out), "--ratio", "0.5", "--input-shape", "input_ids=2x64"]) == 0
    assert "verified at: input_ids=2x64" in capsys.readouterr().out
    assert main(["prune", str(path), "-o", str(out), "--ratio", "0.5", "--input-shape", "ids=2x64"]) == 2
    assert "not an input of the model" in capsys.readouterr().err
    assert main(["prune", str(path), "-o", str(out), "--ratio", "0.5", "--input-shape", "input_ids=2xq"]) == 2


def test_declared_shape_the_model_rejects_is_bad_input(tmp_path, capsys):
    path = tmp_path / "m.onnx"
    onnx.save(_stride_four_model(), path)
    out = tmp_path / "out.onnx"
    assert main(["prune", str(path), "-o", str(out), "--ratio", "0.5", "--input-shape", "x=1x3x6x6"]) == 2
    assert "does not run in onnxruntime at the input shapes tried (x=1x3x6x6)" in capsys.readouterr().err
    assert not out.exists()
