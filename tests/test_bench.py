"""``graphprune bench`` and ``--bench``: measurements, the before/after table, exit codes."""

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import graphprune
from graphprune import bench
from graphprune.latency import run_times


def run(*args):
    proc = subprocess.run([sys.executable, "-m", "graphprune.cli", *map(str, args)],
                          capture_output=True, text=True)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture(scope="module")
def pair(export, tmp_path_factory):
    """tiny_cnn and its prune at 0.5."""
    src = export("tiny_cnn", "legacy")
    out = tmp_path_factory.mktemp("bench") / "pruned.onnx"
    graphprune.save(graphprune.prune(src, ratio=0.5).model, out)
    return src, out


def mlp(batch="batch") -> onnx.ModelProto:
    """x[batch, 8] -> MatMul 8x64 -> Relu -> MatMul 64x4, dynamic batch."""
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((8, 64)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((64, 4)).astype(np.float32), "w2")
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "w2"], ["y"])]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 4])], [w1, w2])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_bench_measures_both_models_at_the_same_inputs(pair):
    src, pruned = pair
    result = bench.bench([src, pruned], threads=1, warmup=1, repeats=7, openvino=False)
    base, small = result["models"]
    assert base["shapes"] == small["shapes"] == {"input": [1, 3, 32, 32]}
    for m in (base, small):
        t = m["onnxruntime"]
        assert t["runs"] == 7
        assert 0 < t["min_ms"] <= t["q1_ms"] <= t["median_ms"] <= t["q3_ms"] <= t["max_ms"]
        assert m["openvino"] is None
        assert m["file_bytes"] > 0 and m["onnxruntime_peak_memory_mb"] is not None
    report = graphprune.prune(src, ratio=0.5).report
    assert (base["macs"], small["macs"]) == tuple(report["macs"])  # graphprune's own counts
    assert (base["params"], small["params"]) == tuple(report["params"])
    assert small["macs_ratio"] == pytest.approx(small["macs"] / base["macs"], abs=1e-4)
    assert small["file_bytes"] < base["file_bytes"]
    speedup = base["onnxruntime"]["median_ms"] / small["onnxruntime"]["median_ms"]
    assert small["onnxruntime_speedup"] == pytest.approx(speedup, rel=1e-3)
    assert small["onnxruntime_efficiency"] == pytest.approx(speedup * small["macs_ratio"], rel=1e-2)
    assert result["settings"]["threads"] == 1 and "RSS" in result["settings"]["memory"]
    assert base["onnxruntime_peak_memory_mb"] < 16  # a 13 KB model: no one-time library cost counted


def test_batch_sets_dynamic_axes_and_macs_follow(tmp_path):
    path = tmp_path / "mlp.onnx"
    onnx.save(mlp(), path)
    one = bench.bench([path], warmup=0, repeats=2, openvino=False)["models"][0]
    four = bench.bench([path], batch=4, warmup=0, repeats=2, openvino=False)["models"][0]
    assert one["shapes"] == {"x": [1, 8]} and four["shapes"] == {"x": [4, 8]}
    assert one["macs"] == 8 * 64 + 64 * 4 and four["macs"] == 4 * one["macs"]
    declared = bench.bench([path], input_shapes={"x": (3, 8)}, batch=4, warmup=0, repeats=2, openvino=False)
    assert declared["models"][0]["shapes"] == {"x": [3, 8]}  # --input-shape wins over --batch


def test_file_bytes_counts_external_data(tmp_path):
    path = tmp_path / "ext.onnx"
    onnx.save(mlp(), path, save_as_external_data=True, location="ext.data", size_threshold=0)
    assert bench.file_bytes(path) == path.stat().st_size + (tmp_path / "ext.data").stat().st_size
    assert (tmp_path / "ext.data").stat().st_size >= (8 * 64 + 64 * 4) * 4


def test_run_times_counts_runs():
    calls = []
    times = run_times(lambda: calls.append(1), warmup=3, min_runs=5, max_runs=5)
    assert len(times) == 5 and len(calls) == 8 and all(t >= 0 for t in times)


def test_table_has_speedup_and_macs_ratio(pair, capsys):
    src, pruned = pair
    bench.print_bench(bench.bench([src, pruned], warmup=0, repeats=3, openvino=False))
    out = capsys.readouterr().out
    header, rule, first, second = out.splitlines()[:4]
    assert "ORT speed-up" in header and "MACs ratio" in header and "OV" not in header
    assert first.split()[0] == src.name and "1.00x" in first
    assert second.split()[0] == pruned.name and "x" in second.split()[-2]
    assert "efficiency" in out


def test_cli_bench_json(pair):
    src, pruned = pair
    code, stdout, stderr = run("bench", src, pruned, "--no-openvino", "--repeats", "3", "--warmup", "0",
                               "--threads", "1", "--json")
    assert code == 0, stderr
    data = json.loads(stdout)
    assert [m["path"] for m in data["models"]] == [str(src), str(pruned)]
    assert data["models"][1]["macs_ratio"] < 0.6


@pytest.mark.parametrize("args,needle", [
    (["bench", "missing.onnx"], "missing.onnx: no such file"),
    (["bench", "{model}", "other_missing.onnx"], "other_missing.onnx: no such file"),
    (["bench", "{model}", "--input-shape", "input=3x"], "--input-shape 'input=3x'"),
    (["bench", "{model}", "--input-shape", "input=1x3"], "does not fit"),
    (["bench", "{model}", "--batch", "4"], "fixed batch of 1"),
    (["bench", "{model}", "--repeats", "0"], "--repeats"),
])
def test_bad_input_exits_2_naming_the_file(pair, args, needle, capsys):
    from graphprune import cli

    src, _ = pair
    code = cli.main([a.format(model=src) for a in args] + ["--no-openvino"])
    stderr = capsys.readouterr().err
    assert code == 2, stderr
    assert needle in stderr and "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("command", ["prune", "fold"])
def test_bench_after_writing(export, tmp_path, command):
    src = export("tiny_cnn", "legacy")
    out = tmp_path / "out.onnx"
    extra = ["--ratio", "0.5"] if command == "prune" else []
    code, stdout, stderr = run(command, src, "-o", out, *extra, "--bench", "--bench-repeats", "3",
                               "--bench-warmup", "0", "--bench-no-openvino")
    assert code == 0, stderr
    after = stdout[stdout.index(f"wrote {out}"):]
    rows = [line.split()[0] for line in after.splitlines()[1:] if line.strip()]
    assert src.name in rows and out.name in rows and "ORT speed-up" in after


def test_openvino_agrees_with_onnxruntime(pair):
    pytest.importorskip("openvino")
    src, pruned = pair
    for path in (src, pruned):
        check = bench.compare_openvino(path)
        assert check["ok"], check["message"]
        assert check["max_rel_error"] < 1e-4


def test_openvino_agrees_on_a_dynamic_batch(tmp_path):
    pytest.importorskip("openvino")
    path = tmp_path / "mlp.onnx"
    onnx.save(mlp(), path)
    feeds = {"x": np.random.default_rng(1).standard_normal((3, 8)).astype(np.float32)}
    check = bench.compare_openvino(path, feeds=feeds)
    assert check["ok"], check["message"]
    assert check["outputs"][0]["shape"] == [3, 4]  # reshaped to the feeds, not the symbolic batch


def test_openvino_comparison_reports_differences(pair, monkeypatch):
    src, _ = pair
    real = bench.openvino_outputs if bench.openvino_available() else None
    if real is None:
        pytest.skip("openvino not installed")
    monkeypatch.setattr(bench, "openvino_outputs", lambda path, feeds, threads=0: [o + 0.1 for o in real(path, feeds)])
    check = bench.compare_openvino(src)
    assert not check["ok"] and "values differ" in check["message"]


def test_bench_in_openvino(pair):
    pytest.importorskip("openvino")
    src, pruned = pair
    result = bench.bench([src, pruned], threads=1, warmup=1, repeats=3)
    assert all(m["openvino"]["runs"] == 3 for m in result["models"])
    assert result["models"][1]["openvino_speedup"] > 0
    assert "f32" in result["settings"]["openvino_config"]
    assert result["models"][0]["openvino_peak_memory_mb"] < 16  # the plugin's loading is not counted
