"""The Python API: options of prune, the oracle's teeth, saving."""

import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import graphprune
from graphprune.verify import compare, oracle_model


@pytest.fixture(scope="module")
def resnet(export):
    return export("resnet18", "dynamo")


def kept_counts(report):
    return {g["id"]: g["channels"] - g["removed"] for g in report["groups"]}


def test_prune_accepts_model_proto_and_path(resnet):
    from_path = graphprune.prune(resnet, ratio=0.3, verify=False)
    from_proto = graphprune.prune(onnx.load(str(resnet)), ratio=0.3, verify=False)
    assert from_path.report["initializers"] == from_proto.report["initializers"]
    assert from_path.verification.status == "skipped"


def test_round_to_keeps_multiples(resnet):
    report = graphprune.prune(resnet, ratio=0.5, round_to=24).report
    assert all(k % 24 == 0 for k in kept_counts(report).values())


def test_round_to_counts_head_rows_not_heads(tmp_path):
    """--round-to counts projection rows: 8 query heads of 32 rows lose heads at round-to 16
    (every kept width is a multiple of 16 anyway), where counting heads would keep all 8."""
    from graphprune.models.llama_onnx import SHAPES, build

    src = build(SHAPES["tiny"], str(tmp_path / "llama.onnx"), dtype="fp32")
    result = graphprune.prune(src, ratio=0.25, round_to=16, exact=True, gqa_heads="query")
    assert result.verification.status == "exact"
    widths = {name: len(axes["1"]) for name, axes in result.report["initializers"].items() if "1" in axes}
    assert widths["model.layers.0.self_attn.q_proj.weight"] == 6 * 32  # heads removed
    assert all(w % 16 == 0 for w in widths.values()), widths


def test_global_ranking_respects_cap_and_total(resnet):
    report = graphprune.prune(resnet, ratio=0.5, global_ranking=True, max_group_ratio=0.7).report
    removed = sum(g["removed"] for g in report["groups"])
    total = sum(g["channels"] for g in report["groups"])
    assert removed == pytest.approx(total * 0.5, abs=len(report["groups"]))
    assert all(g["removed"] <= int(g["channels"] * 0.7) for g in report["groups"])
    assert len({g["removed"] / g["channels"] for g in report["groups"]}) > 1  # not uniform
    assert report["verification"]["status"] == "exact"


def test_keep_regex_pins_matching_groups(resnet):
    report = graphprune.prune(resnet, ratio=0.5, keep=r"^layer4\.").report
    pinned = [g for g in report["pinned"] if "--keep" in g["pinned"]]
    assert pinned and all(any(p.startswith("layer4.") for p in g["parameters"]) for g in pinned)
    assert not any(n.startswith("layer4.") for n in report["initializers"])


def test_importance_criteria_rank_differently(resnet):
    l1 = graphprune.prune(resnet, ratio=0.5, importance="l1", verify=False).report
    l2 = graphprune.prune(resnet, ratio=0.5, importance="l2", verify=False).report
    assert l1["initializers"] != l2["initializers"]
    with pytest.raises(graphprune.InputError, match="unknown importance"):
        graphprune.prune(resnet, ratio=0.5, importance="fisher")
    with pytest.raises(graphprune.InputError, match="needs the PyTorch model"):
        graphprune.prune(resnet, ratio=0.5, importance="taylor")


def test_l2_removes_the_smallest_channels(export):
    """Scale one channel up: it must survive; zero another: it must go."""
    model = onnx.load(str(export("tiny_flatten", "legacy")))
    conv_w = next(t for t in model.graph.initializer if len(t.dims) == 4)
    w = numpy_helper.to_array(conv_w).copy()
    w[3] *= 100.0
    w[5] = 0.0
    conv_w.CopyFrom(numpy_helper.from_array(w, conv_w.name))
    kept = graphprune.prune(model, ratio=0.5).report["initializers"][conv_w.name]["0"]
    assert 3 in kept and 5 not in kept


@pytest.mark.parametrize("ratio", [-0.1, 1.0, 2.0])
def test_bad_ratio_is_an_input_error(resnet, ratio):
    with pytest.raises(graphprune.InputError, match="ratio"):
        graphprune.prune(resnet, ratio=ratio)


def test_oracle_detects_a_wrong_model(resnet):
    """The check has teeth: perturb one kept weight of the pruned model and it fails."""
    result = graphprune.prune(resnet, ratio=0.5)
    # a correct prune passes at the fixed tolerance: the oracle's own rounding is not even measured
    assert result.verification.noise_floor == 0.0 and result.verification.tolerance == 1e-4
    broken = onnx.ModelProto()
    broken.CopyFrom(result.model)
    name = next(iter(result.report["initializers"]))
    tensor = next(t for t in broken.graph.initializer if t.name == name)
    w = numpy_helper.to_array(tensor).copy()
    w.flat[0] += 1.0
    tensor.CopyFrom(numpy_helper.from_array(w, name))
    source = onnx.load(str(resnet))
    assert compare(oracle_model(source, result.plan), broken).status == "failed"
    # and the unmasked original is not what the pruned model computes
    assert compare(source, result.model).status == "failed"


def test_save_is_atomic_and_supports_external_data(resnet, tmp_path):
    result = graphprune.prune(resnet, ratio=0.5, verify=False)
    out = graphprune.save(result.model, tmp_path / "small.onnx", external_data=True)
    assert (tmp_path / "small.onnx.data").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["small.onnx", "small.onnx.data"]
    reloaded = graphprune.prune(out, ratio=0.0)  # loads external data, verifies, no-op prune
    assert reloaded.report["params"][0] == result.report["params"][1]
    with pytest.raises(graphprune.InputError, match="does not exist"):
        graphprune.save(result.model, tmp_path / "missing" / "x.onnx")


def test_report_is_json_serialisable(resnet):
    report = graphprune.prune(resnet, ratio=0.5).report
    decoded = json.loads(json.dumps(report))
    assert set(decoded) >= {"initializers", "params", "macs", "groups", "pinned", "verification"}


def test_replaying_a_report_reproduces_the_prune(resnet, tmp_path):
    first = graphprune.prune(resnet, ratio=0.5, importance="l1")
    path = tmp_path / "report.json"
    path.write_text(json.dumps(first.report))
    again = graphprune.prune(resnet, plan=path)
    assert again.report["initializers"] == first.report["initializers"]
    assert again.verification.status == "exact"
    assert again.model.SerializeToString() == first.model.SerializeToString()


def test_bad_plans_are_refused_with_the_tensor_named(resnet):
    report = graphprune.prune(resnet, ratio=0.5, verify=False).report
    name, axes = next(iter(report["initializers"].items()))
    axis, kept = next(iter(axes.items()))
    with pytest.raises(graphprune.PlanError, match="no channel axis"):
        graphprune.prune(resnet, plan={"initializers": {"nope": {"0": [0]}}})
    with pytest.raises(graphprune.PlanError, match="ascending"):
        graphprune.prune(resnet, plan={"initializers": {name: {axis: kept[::-1]}}})
    with pytest.raises(graphprune.PlanError, match="pinned"):
        graphprune.prune(resnet, plan={"initializers": {"fc.weight": {"0": [0, 1]}}})
    other = dict(report["initializers"])
    broken = {n: {a: (k[1:] if n != name else k) for a, k in ax.items()} for n, ax in other.items()}
    with pytest.raises(graphprune.PlanError, match="disagree"):
        graphprune.prune(resnet, plan={"initializers": broken})


def test_the_noise_floor_is_measured_only_when_the_fixed_tolerance_is_exceeded(resnet):
    """A tolerance below float32 rounding fails a correct prune at first; the oracle's own rounding
    is then measured and the tolerance widened to 16 times it, and the prune passes."""
    result = graphprune.prune(resnet, ratio=0.5, tolerance=1e-12)
    check = result.verification
    assert check.status == "exact" and 1e-9 < check.noise_floor < 1e-5
    assert check.tolerance == pytest.approx(16 * check.noise_floor) and check.max_relative_error > 1e-12


def test_the_oracle_runs_in_float64_for_its_noise_floor():
    """as_float64 widens every float32 tensor (initializers, Cast targets, declared types): the
    same function at double precision, which the ONNX oracle's noise floor is measured against
    (onnxruntime has no double Conv on CPU: CNNs fall back to a run without fusions)."""
    from onnx import TensorProto, helper

    from graphprune.verify import as_float64, session

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((64, 64)).astype(np.float32), "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Cast", ["r"], ["c"], to=TensorProto.FLOAT),
             helper.make_node("MatMul", ["c", "w"], ["y"])]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 64])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    wide = as_float64(model)
    assert all(t.data_type == TensorProto.DOUBLE for t in wide.graph.initializer)
    assert wide.graph.node[2].attribute[0].i == TensorProto.DOUBLE
    x = rng.standard_normal((4, 64)).astype(np.float32)
    narrow_out = session(model).run(None, {"x": x})[0]
    wide_out = session(wide).run(None, {"x": x.astype(np.float64)})[0]
    assert wide_out.dtype == np.float64
    assert 0 < np.abs(wide_out - narrow_out).max() < 1e-4 * np.abs(wide_out).max()
