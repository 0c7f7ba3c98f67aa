"""graphprune's Olive passes in a real Olive workflow (skipped without olive-ai)."""

import importlib.util
import json
import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

# Olive takes seconds to import: only the tests that run import it (not collection).
pytestmark = pytest.mark.skipif(importlib.util.find_spec("olive") is None, reason="olive-ai not installed")


@pytest.fixture(scope="module")
def gpolive():
    os.environ.setdefault("OLIVE_DISABLE_TELEMETRY", "1")  # tests send nothing anywhere
    from graphprune.integrations import olive

    return olive


def conv_bn_net(path):
    """x[1,3,16,16] -> Conv 3->16 -> BatchNormalization -> Relu -> Conv 16->16 -> GAP -> Flatten -> Gemm 16->10."""
    rng = np.random.default_rng(0)

    def init(name, *shape, low=None):
        data = rng.uniform(0.5, 1.5, shape) if low else rng.standard_normal(shape) * 0.3
        return numpy_helper.from_array(data.astype(np.float32), name)

    inits = [init("w1", 16, 3, 3, 3), init("scale", 16, low=True), init("bias", 16), init("mean", 16),
             init("var", 16, low=True), init("w2", 16, 16, 3, 3), init("b2", 16), init("fc", 10, 16), init("fcb", 10)]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c1", "scale", "bias", "mean", "var"], ["bn"]),
             helper.make_node("Relu", ["bn"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
             helper.make_node("GlobalAveragePool", ["c2"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "fc", "fcb"], ["y"], transB=1)]
    graph = helper.make_graph(nodes, "conv_bn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def outputs(path, x):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def workflow(model_path, tmp_path, passes):
    return {"input_model": {"type": "ONNXModel", "model_path": str(model_path)},
            "systems": {"local": {"type": "LocalSystem"}},
            "passes": passes, "engine": {"log_severity_level": 3},
            "output_dir": str(tmp_path / "out"), "cache_dir": str(tmp_path / "cache")}


def test_fold_then_prune_workflow(gpolive, tmp_path):
    src = conv_bn_net(tmp_path / "conv_bn.onnx")  # a BatchNormalization: fold has work to do
    before = onnx.load(str(src))
    passes = {"fold": {"type": "GraphpruneFold"},
              "prune": {"type": "GraphprunePrune", "ratio": 0.5, "round_to": 4}}
    gpolive.run_workflow(workflow(src, tmp_path, passes))
    out = tmp_path / "out" / "model.onnx"
    after = onnx.load(str(out))
    onnx.checker.check_model(after, full_check=True)
    size = lambda m: sum(int(np.prod(t.dims)) for t in m.graph.initializer)  # noqa: E731
    assert size(after) < 0.5 * size(before)
    assert not any(n.op_type == "BatchNormalization" for n in after.graph.node)
    y = outputs(out, np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32))
    assert y.shape == (1, 10) and np.isfinite(y).all()
    config = json.loads((tmp_path / "out" / "model_config.json").read_text())
    fold, prune = config["config"]["model_attributes"]["graphprune"]
    assert fold["pass"] == "GraphpruneFold" and fold["nodes"][1] < fold["nodes"][0]
    assert "exact" in fold["verification"].values()  # end to end against the input
    assert prune["pass"] == "GraphprunePrune" and prune["macs"][1] < prune["macs"][0]
    assert prune["verification"]["prune-channels"] == "exact"


def test_prune_options_follow_the_pass(gpolive):
    options = gpolive.prune_options()
    assert {"ratio", "importance", "global_ranking", "round_to", "keep", "max_group_ratio",
            "target_macs"} <= set(options)
    assert options["ratio"] == (float, 0.5) and options["round_to"] == (int, 1)
    assert "calibration" not in options and "replay" not in options
    from olive.hardware import DEFAULT_CPU_ACCELERATOR

    config = gpolive.GraphprunePrune.default_config(DEFAULT_CPU_ACCELERATOR)
    assert set(options) | {"verify", "input_shapes"} <= set(config)


def test_package_config_adds_our_passes_and_keeps_olives(gpolive, tmp_path):
    from olive.package_config import OlivePackageConfig

    path = tmp_path / "pkg.json"
    assert gpolive.main(["package-config", "-o", str(path)]) == 0  # for `olive run --package-config`
    config = OlivePackageConfig.parse_file_or_obj(str(path))
    for name in gpolive.PASS_NAMES:
        assert config.import_pass_module(name.lower()) is getattr(gpolive, name)
    assert "onnxpeepholeoptimizer" in config.passes  # Olive's own passes are still there


def test_pipeline_pass_runs_a_spec(gpolive, export, tmp_path):
    src = export("tiny_cnn", "legacy")
    passes = {"run": {"type": "GraphprunePipeline", "pipeline": "prune-channels:ratio=0.25,dce"}}
    gpolive.run_workflow(workflow(src, tmp_path, passes))
    after = onnx.load(str(tmp_path / "out" / "model.onnx"))
    conv = next(t for t in after.graph.initializer if len(t.dims) == 4)
    assert conv.dims[0] == 12  # 16 channels, a quarter removed
