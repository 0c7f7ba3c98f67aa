"""Pipelines: specs, TOML, nesting, fixed points, per-pass verification, CLI fold/run/passes."""

import json
import subprocess
import sys

import onnx
import pytest

import graphprune
from graphprune.passes import PASSES
from graphprune.passes.prune_channels import PruneChannels
from graphprune.pipeline import Pipeline, build_pipeline, parse_spec


def test_spec_parsing_and_errors(tmp_path):
    steps, fixed = parse_spec("dead-channels, prune-channels:ratio=0.3:importance=l1")
    assert steps == [("dead-channels", {}), ("prune-channels", {"ratio": "0.3", "importance": "l1"})]
    assert not fixed
    pipe = build_pipeline("prune-channels:ratio=0.3:round-to=8:global-ranking=true")
    (step,) = pipe.passes
    assert (step.ratio, step.round_to, step.global_ranking) == (0.3, 8, True)
    for bad, needle in (("nope", "unknown pass"), ("prune-channels:rato=1", "unknown option"),
                        ("prune-channels:ratio", "not key=value"), ("prune-channels:ratio=abc", "cannot read"),
                        ("", "empty pipeline")):
        with pytest.raises(graphprune.InputError, match=needle):
            build_pipeline(bad)


def test_toml_pipeline(tmp_path):
    spec = tmp_path / "p.toml"
    spec.write_text('fixed_point = true\n[[pass]]\nname = "dead-channels"\n'
                    '[[pass]]\nname = "prune-channels"\nratio = 0.25\n')
    pipe = build_pipeline(str(spec))
    assert pipe.fixed_point and [p.name for p in pipe.passes] == ["dead-channels", "prune-channels"]
    assert pipe.passes[1].ratio == 0.25
    spec.write_text("[[pass]]\nratio = 1\n")
    with pytest.raises(graphprune.InputError, match="has no name"):
        build_pipeline(str(spec))


def test_pipeline_is_a_pass_and_nests(export):
    graph = graphprune.load(export("tiny_cnn", "legacy"))
    inner = Pipeline([PASSES["dead-channels"]()])
    outer = Pipeline([inner, PruneChannels(ratio=0.5)])
    result = outer(graph, verify=True)
    assert result.modified and result.macs[1] < result.macs[0]
    assert [r.name for r in result.flat()] == ["dead-channels", "prune-channels"]
    assert result.flat()[1].verification.status == "exact"
    assert json.loads(json.dumps(result.to_dict()))["passes"][0]["pass"] == "pipeline"


def test_fixed_point_stops_when_nothing_changes(export):
    graph = graphprune.load(export("tiny_cnn", "legacy"))
    result = Pipeline([PASSES["dead-channels"]()], fixed_point=True, max_iterations=5)(graph)
    assert len(result.children) == 1 and not result.modified


FOLD = "fold-constants,remove-identities,fold-batchnorm,fold-channel-affine,dead-channels,dedup,dce"


@pytest.mark.parametrize("name,exporter", [("resnet18", "dynamo"), ("mha_block", "legacy")])
def test_fold_then_prune_then_fold_verifies(export, name, exporter):
    model, result = graphprune.run_pipeline(export(name, exporter),
                                            f"{FOLD},prune-channels:ratio=0.5,{FOLD}")
    assert result.macs[1] < result.macs[0]
    checked = [r for r in result.flat() if r.modified]
    assert checked and all(r.verification.status == "exact" for r in checked)
    onnx.checker.check_model(model, full_check=True)


@pytest.mark.zoo
@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_large", "efficientnet_b0", "densenet121",
                                  "googlenet", "regnet_y_400mf", "resnext50_32x4d", "vit_block"])
@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
def test_fold_zoo_is_lossless(export, name, exporter):
    model, result = graphprune.fold(export(name, exporter))
    assert result.nodes[1] <= result.nodes[0]
    if result.modified:
        assert result.verification.status == "exact"
    onnx.checker.check_model(model, full_check=True)


def run(*args):
    proc = subprocess.run([sys.executable, "-m", "graphprune.cli", *map(str, args)],
                          capture_output=True, text=True)
    return proc.returncode, proc.stdout, proc.stderr


def test_cli_passes_lists_every_pass():
    code, out, _ = run("passes")
    assert code == 0
    assert all(name in out for name in PASSES) and "graphprune fold" in out


def test_cli_run_and_fold(export, tmp_path):
    src = export("tiny_cnn", "legacy")
    out, report = tmp_path / "o.onnx", tmp_path / "r.json"
    code, stdout, stderr = run("run", src, "-o", out, "--pipeline", "prune-channels:ratio=0.5",
                               "--report", report)
    assert code == 0, stderr
    assert "prune-channels" in stdout and "exact" in stdout
    assert json.loads(report.read_text())["macs"][1] < json.loads(report.read_text())["macs"][0]
    code, stdout, stderr = run("fold", out, "-o", tmp_path / "f.onnx")
    assert code == 0, stderr and (tmp_path / "f.onnx").exists()
    code, _, stderr = run("run", src, "-o", out, "--pipeline", "nope")
    assert code == 2 and "unknown pass 'nope'" in stderr and "Traceback" not in stderr
