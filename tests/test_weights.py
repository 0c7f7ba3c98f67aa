"""Weights on disk (graphprune.weights): mapped external data, spill, streamed writing."""

from __future__ import annotations

import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import graphprune
from graphprune import weights
from graphprune.errors import InputError
from graphprune.frontends.onnx import load_onnx


def _mlp(dtype=np.float32, hidden=1024, width=512) -> onnx.ModelProto:  # pruned weights over SPILL_MIN_BYTES
    rng = np.random.default_rng(0)
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    inits = [numpy_helper.from_array(rng.standard_normal((width, hidden)).astype(dtype), "w1"),
             numpy_helper.from_array(rng.standard_normal(hidden).astype(dtype), "b1"),
             numpy_helper.from_array(rng.standard_normal((hidden, width)).astype(dtype), "w2")]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Add", ["h", "b1"], ["hb"]),
             helper.make_node("Relu", ["hb"], ["r"]), helper.make_node("MatMul", ["r", "w2"], ["y"])]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", elem, ["batch", width])],
                              [helper.make_tensor_value_info("y", elem, ["batch", width])], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _save_external(model: onnx.ModelProto, path) -> None:
    onnx.save(model, str(path), save_as_external_data=True, location=path.name + ".data", size_threshold=0)


def _run(path, x):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def test_external_weights_are_mapped_not_read(tmp_path):
    src = tmp_path / "mlp.onnx"
    _save_external(_mlp(), src)
    graph = load_onnx(src)
    assert weights.is_mapped(graph.constants["w1"]) and weights.is_mapped(graph.constants["w2"])
    expected = numpy_helper.to_array(onnx.load(str(src)).graph.initializer[0])
    np.testing.assert_array_equal(np.asarray(graph.constants["w1"]), expected)
    assert graph.spill is not None  # results of slicing go to disk too


def test_pruned_disk_backed_model_streams_to_aligned_external_data(tmp_path):
    src = tmp_path / "mlp.onnx"
    _save_external(_mlp(), src)
    before = {p: p.read_bytes() for p in tmp_path.iterdir()}
    result = graphprune.prune(src, ratio=0.5)
    assert result.verification.status == "exact"
    assert weights.has_references(result.model)  # the result names file ranges, holds no weight bytes
    assert result.model.ByteSize() < 4096
    out = tmp_path / "out.onnx"
    graphprune.save(result.model, out)
    assert {p: p.read_bytes() for p in before} == before  # the input is untouched
    written = onnx.load(str(out), load_external_data=False)
    for t in written.graph.initializer:
        if t.data_location == TensorProto.EXTERNAL:
            entries = {e.key: e.value for e in t.external_data}
            assert entries["location"] == "out.onnx.data" and int(entries["offset"]) % weights.ALIGNMENT == 0
    loaded = onnx.load(str(out))
    w1 = next(numpy_helper.to_array(t) for t in loaded.graph.initializer if t.name == "w1")
    assert w1.shape == (512, 512)
    x = np.random.default_rng(1).standard_normal((3, 512)).astype(np.float32)
    kept = result.report["initializers"]["w1"]["1"]
    np.testing.assert_array_equal(w1, numpy_helper.to_array(_mlp().graph.initializer[0])[:, kept])
    assert np.isfinite(_run(out, x)).all()


def test_spilled_and_referenced_tensors_are_written_exactly(tmp_path):
    spill = weights.Spill(tmp_path)
    value = np.arange(weights.SPILL_MIN_BYTES // 4 + 7, dtype=np.float32)
    stored = spill.put(value)
    assert weights.is_mapped(stored)
    np.testing.assert_array_equal(stored, value)
    path, offset, nbytes = weights.file_range(stored)
    assert path == spill.path and offset % weights.ALIGNMENT == 0 and nbytes == value.nbytes
    view = stored[8:]
    assert weights.file_range(view)[1] == offset + 32  # a view of a mapping names its own bytes
    directory = spill.directory
    spill.close()
    assert not directory.exists()


def test_bfloat16_external_weights_match_onnx_loader(tmp_path):
    import ml_dtypes

    value = np.random.default_rng(0).standard_normal((128, 256)).astype(ml_dtypes.bfloat16)
    tensor = numpy_helper.from_array(value, "w")
    graph = helper.make_graph([helper.make_node("Identity", ["w"], ["y"])], "g", [],
                              [helper.make_tensor_value_info("y", TensorProto.BFLOAT16, [128, 256])],
                              initializer=[tensor])
    src = tmp_path / "bf.onnx"
    _save_external(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), src)
    mapped = load_onnx(src).constants["w"]
    assert weights.is_mapped(mapped) and mapped.dtype == value.dtype
    np.testing.assert_array_equal(np.asarray(mapped).view(np.uint16), value.view(np.uint16))


def test_release_drops_resident_pages(tmp_path):
    path = tmp_path / "big.bin"
    size = 64 << 20
    with open(path, "wb") as f:
        f.truncate(size)
    mapped = np.memmap(path, dtype=np.uint8, mode="r", shape=(size,))

    def rss_file_kb() -> int:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("RssFile:"))

    base = rss_file_kb()
    assert int(mapped[::4096].sum()) == 0  # touches every page
    touched = rss_file_kb()
    weights.release(mapped)
    assert touched - base > 48 << 10  # the pages were resident...
    assert rss_file_kb() - base < 8 << 10  # ...and are no longer
    assert int(mapped[::4096].sum()) == 0  # still readable after release


@pytest.mark.parametrize("damage", ["truncate", "missing", "escape"])
def test_broken_external_reference_is_a_clear_error(tmp_path, damage):
    src = tmp_path / "mlp.onnx"
    _save_external(_mlp(), src)
    data = tmp_path / "mlp.onnx.data"
    if damage == "truncate":
        with open(data, "r+b") as f:
            f.truncate(data.stat().st_size // 2)
    elif damage == "missing":
        data.unlink()
    else:
        model = onnx.load(str(src), load_external_data=False)
        for t in model.graph.initializer:
            for e in t.external_data:
                if e.key == "location":
                    e.value = "../elsewhere.data"
        onnx.save(model, str(src))
    with pytest.raises(InputError) as info:
        load_onnx(src)
    message = str(info.value)
    assert str(src) in message and ("w1" in message or "b1" in message or "w2" in message)


def test_save_inline_on_request_reads_references(tmp_path):
    src = tmp_path / "mlp.onnx"
    _save_external(_mlp(), src)
    result = graphprune.prune(src, ratio=0.25)
    out = tmp_path / "inline.onnx"
    graphprune.save(result.model, out, external_data=False)
    assert not (tmp_path / "inline.onnx.data").exists()
    assert not weights.has_references(onnx.load(str(out), load_external_data=False))
    x = np.ones((2, 512), np.float32)
    streamed = tmp_path / "streamed.onnx"
    graphprune.save(result.model, streamed)
    np.testing.assert_array_equal(_run(out, x), _run(streamed, x))
    assert oct(os.stat(tmp_path / "streamed.onnx.data").st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_external_data_spread_over_several_files(tmp_path):
    src = tmp_path / "split.onnx"
    onnx.save(_mlp(), str(src), save_as_external_data=True, all_tensors_to_one_file=False, size_threshold=0)
    assert len([p for p in tmp_path.iterdir() if p != src]) == 3  # one file per tensor
    result = graphprune.prune(src, ratio=0.5)
    assert result.verification.status == "exact"
    out = tmp_path / "out" / "pruned.onnx"
    out.parent.mkdir()
    graphprune.save(result.model, out)
    assert sorted(p.name for p in out.parent.iterdir()) == ["pruned.onnx", "pruned.onnx.data"]
    x = np.random.default_rng(2).standard_normal((2, 512)).astype(np.float32)
    reference = graphprune.prune(onnx.load(str(src)), ratio=0.5)  # the same prune, weights in memory
    inline = tmp_path / "inline.onnx"
    graphprune.save(reference.model, inline)
    np.testing.assert_array_equal(_run(out, x), _run(inline, x))


def test_sharded_external_data(tmp_path):
    src = tmp_path / "mlp.onnx"
    _save_external(_mlp(), src)
    result = graphprune.prune(src, ratio=0.25)
    out = tmp_path / "out" / "sharded.onnx"
    out.parent.mkdir()
    shard = 3 << 20  # w1 and w2 are 1.5 MB each after pruning: two per file would not fit
    graphprune.save(result.model, out, shard_bytes=shard)
    files = sorted(p.name for p in out.parent.iterdir())
    assert files == ["sharded.onnx", "sharded.onnx.data", "sharded.onnx.data.1"]
    assert all((out.parent / f).stat().st_size <= shard for f in files)
    whole = tmp_path / "whole.onnx"
    graphprune.save(result.model, whole)
    x = np.random.default_rng(3).standard_normal((2, 512)).astype(np.float32)
    np.testing.assert_array_equal(_run(out, x), _run(whole, x))
    with pytest.raises(InputError, match="positive"):
        graphprune.save(result.model, tmp_path / "bad.onnx", shard_bytes=0)


def test_cli_shard_size(tmp_path):
    import subprocess
    import sys

    src = tmp_path / "mlp.onnx"
    onnx.save(_mlp(), str(src))  # inline weights in, sharded external data out
    out = tmp_path / "o.onnx"
    run = lambda *a: subprocess.run([sys.executable, "-m", "graphprune.cli", *map(str, a)],  # noqa: E731
                                    capture_output=True, text=True)
    done = run("prune", src, "-o", out, "--ratio", "0.5", "--shard-size", "1.2MB")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "o.onnx.data").exists() and (tmp_path / "o.onnx.data.1").exists()
    bad = run("prune", src, "-o", tmp_path / "b.onnx", "--ratio", "0.5", "--shard-size", "lots")
    assert bad.returncode == 2 and "--shard-size" in bad.stderr and not (tmp_path / "b.onnx").exists()


def test_shape_constants_in_external_data_are_read_inline(tmp_path):
    """Exports saved with size_threshold=0 keep Reshape targets and axes in external data too;
    shape inference (ours and onnxruntime's) only sees inline tensors, so small ones are read."""
    from graphprune.models.llama_onnx import SHAPES, build

    built = build(SHAPES["tiny"], str(tmp_path / "built.onnx"), dtype="fp32")
    src = tmp_path / "everything_external.onnx"
    model = onnx.load(built)
    for t in model.graph.initializer:  # raw data, as exporters write it: every tensor can go external
        t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t), t.name))
    onnx.save(model, str(src), save_as_external_data=True, location="all.data", size_threshold=0)
    assert all(t.data_location == TensorProto.EXTERNAL for t in onnx.load(str(src), load_external_data=False)
               .graph.initializer)
    model = graphprune.api.read_model(src)
    shapes = {t.name: t.data_location for t in model.graph.initializer}
    assert shapes["heads_shape"] == TensorProto.DEFAULT  # read into the protobuf
    assert shapes["model.embed_tokens.weight"] == TensorProto.EXTERNAL  # a weight: still a reference
    result = graphprune.prune(src, ratio=0.25, exact=True)
    assert result.verification.status == "exact" and result.report["params"][1] < result.report["params"][0]
    out = tmp_path / "pruned.onnx"
    graphprune.save(result.model, out)
    ids = np.arange(12, dtype=np.int64).reshape(2, 6)
    logits = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"input_ids": ids})[0]
    assert logits.shape == (2, 6, SHAPES["tiny"].vocab)
