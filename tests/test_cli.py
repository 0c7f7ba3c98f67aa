"""The graphprune command: outputs, reports, exit codes and one-line errors."""

import json
import subprocess
import sys

import onnx
import pytest

from graphprune import cli
from graphprune.verify import Verification


def run(*args):
    proc = subprocess.run([sys.executable, "-m", "graphprune.cli", *map(str, args)],
                          capture_output=True, text=True)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture(scope="module")
def model(export):
    return export("tiny_cnn", "legacy")


def test_prune_writes_model_and_report(model, tmp_path):
    out, report = tmp_path / "out.onnx", tmp_path / "report.json"
    code, stdout, stderr = run("prune", model, "-o", out, "--ratio", "0.5", "--report", report)
    assert code == 0, stderr
    assert "MACs" in stdout and "verification: exact" in stdout
    onnx.checker.check_model(onnx.load(str(out)), full_check=True)
    data = json.loads(report.read_text())
    assert data["macs"][1] < data["macs"][0] and data["verification"]["status"] == "exact"


@pytest.mark.parametrize("args,needle", [
    (["prune", "missing.onnx", "-o", "x.onnx", "--ratio", "0.5"], "missing.onnx: no such file"),
    (["prune", "{bad}", "-o", "x.onnx", "--ratio", "0.5"], "not a readable ONNX model"),
    (["prune", "{model}", "-o", "x.onnx", "--ratio", "1.5"], "ratio must be in"),
    (["prune", "{model}", "-o", "x.onnx"], "exactly one of --ratio"),
    (["prune", "{model}", "-o", "{model}", "--ratio", "0.5"], "refusing to overwrite the input"),
    (["prune", "{model}", "-o", "nodir/x.onnx", "--ratio", "0.5"], "does not exist"),
    (["inspect", "missing.onnx"], "no such file"),
    (["demo", "--model", "nope"], "unknown model 'nope'"),
])
def test_bad_input_is_one_line_and_exit_2(model, tmp_path, args, needle):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    args = [a.format(model=model, bad=bad) for a in args]
    code, stdout, stderr = run(*args)
    assert code == 2
    assert needle in stderr and "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) == 1


def test_usage_error_exit_2():
    code, _, stderr = run("prune")
    assert code == 2 and "usage:" in stderr


def test_verification_failure_exits_1_and_writes_nothing(model, tmp_path, monkeypatch, capsys):
    failed = Verification("failed", message="output 'output' differs")
    monkeypatch.setattr("graphprune.api.verify_prune", lambda *a, **k: failed)
    out = tmp_path / "out.onnx"
    assert cli.main(["prune", str(model), "-o", str(out), "--ratio", "0.5"]) == 1
    assert not out.exists() and list(tmp_path.iterdir()) == []
    assert "verification failed" in capsys.readouterr().err


def test_inspect_human_and_json(model):
    code, stdout, _ = run("inspect", model)
    assert code == 0 and "prunable groups (1)" in stdout and "graph output" in stdout
    code, stdout, _ = run("inspect", model, "--json")
    info = json.loads(stdout)
    assert code == 0 and len(info["groups"]) == 1 and info["macs"] > 0 and info["layers"]


def test_help_lists_commands():
    code, stdout, _ = run("--help")
    assert code == 0 and all(c in stdout for c in ("prune", "inspect", "demo", "exit codes"))


def test_external_data_in_external_data_out(model, tmp_path):
    src = tmp_path / "ext.onnx"
    onnx.save(onnx.load(str(model)), str(src), save_as_external_data=True, location="ext.onnx.data",
              size_threshold=0)
    out = tmp_path / "out.onnx"
    code, _, stderr = run("prune", src, "-o", out, "--ratio", "0.5")
    assert code == 0, stderr
    assert (tmp_path / "out.onnx.data").exists()
    onnx.checker.check_model(str(out), full_check=True)


def test_plan_replay_and_exclusive_options(model, tmp_path):
    report = tmp_path / "r.json"
    code, _, stderr = run("prune", model, "-o", tmp_path / "a.onnx", "--ratio", "0.5", "--report", report)
    assert code == 0, stderr
    code, _, stderr = run("prune", model, "-o", tmp_path / "b.onnx", "--plan", report)
    assert code == 0, stderr
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()
    code, _, stderr = run("prune", model, "-o", tmp_path / "c.onnx", "--plan", report, "--ratio", "0.5")
    assert code == 2 and "exactly one of --ratio" in stderr
    code, _, stderr = run("prune", model, "-o", tmp_path / "c.onnx", "--plan", tmp_path / "missing.json")
    assert code == 2 and "no such plan file" in stderr


def test_gqa_heads_query_keeps_every_kv_head(tmp_path):
    from graphprune.models.llama_onnx import SHAPES, build

    shape = SHAPES["tiny"]  # 8 query heads over 2 kv heads, head_dim 32
    src = build(shape, str(tmp_path / "llama.onnx"), dtype="fp32")
    head_dim, group = shape.hidden // shape.heads, shape.heads // shape.kv_heads
    for mode in ("kv", "query"):
        report = tmp_path / f"{mode}.json"
        code, out, err = run("prune", src, "-o", tmp_path / f"{mode}.onnx", "--ratio", "0.25", "--exact",
                             "--gqa-heads", mode, "--report", report)
        assert code == 0, err
        data = json.loads(report.read_text())
        assert data["verification"]["status"] == "exact"
        sliced = data["initializers"]
        kv_pruned = any("k_proj" in name or "v_proj" in name for name in sliced)
        if mode == "kv":  # one of two kv groups is half the heads: 0.25 of 2 rounds to none
            assert not any("q_proj" in name for name in sliced) and not kv_pruned
            continue
        assert not kv_pruned
        kept_heads = sorted({i // head_dim for i in sliced["model.layers.0.self_attn.q_proj.weight"]["1"]})
        assert len(kept_heads) == shape.heads - shape.kv_heads  # one query head gone per kv group
        inner = [{h % group for h in kept_heads if h // group == kv} for kv in range(shape.kv_heads)]
        assert all(s == inner[0] for s in inner)  # the same heads inside every kv group
        replayed = tmp_path / "replayed.json"
        code, _, err = run("prune", src, "-o", tmp_path / "replayed.onnx", "--plan", report, "--exact",
                           "--gqa-heads", mode, "--report", replayed)
        assert code == 0, err
        assert json.loads(replayed.read_text())["initializers"] == sliced
    code, _, err = run("prune", src, "-o", tmp_path / "x.onnx", "--ratio", "0.25", "--gqa-heads", "rows")
    assert code == 2 and "--gqa-heads" in err
