"""The model zoo builds reproducibly, runs, and exports ONNX that matches torch."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.fx

try:
    from graphprune import models as zoo
except ImportError:  # package not installed yet: use the source tree
    import models as zoo

QUICK_MODELS = zoo.CORE_MODELS + list(zoo.SMALL_MODELS) + ["vit_block"]
EXPORT_MODELS = ["tiny_cnn", "mha_block"]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("onnx_cache")


def run_onnx(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {zoo.MODEL_INPUT_NAME: x.numpy()})[0]


def assert_export_matches(name, path):
    model = onnx.load(str(path), load_external_data=False)
    onnx.checker.check_model(model)
    assert [i.name for i in model.graph.input] == [zoo.MODEL_INPUT_NAME]
    assert [o.name for o in model.graph.output] == [zoo.MODEL_OUTPUT_NAME]
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    x = zoo.example_input(name)
    with torch.no_grad():
        expected = zoo.build(name)(x).numpy()
    # Deep random nets (resnet50) reach outputs in the hundreds: scale atol with them.
    atol = 1e-4 * max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(run_onnx(path, x), expected, rtol=1e-3, atol=atol)


@pytest.mark.parametrize("name", QUICK_MODELS)
def test_builds_and_runs(name):
    model = zoo.build(name)
    assert not model.training
    with torch.no_grad():
        y = model(zoo.example_input(name))
    assert torch.isfinite(y).all()
    assert y.shape[0] == 1


def test_build_is_reproducible_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    a, b = zoo.build("tiny_cnn"), zoo.build("tiny_cnn")
    assert torch.rand(1) == expected_next
    for (key, ta), tb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(ta, tb), key
    assert torch.equal(zoo.example_input("tiny_cnn"), zoo.example_input("tiny_cnn"))


def test_batchnorms_are_not_identities():
    bns = [m for m in zoo.build("resnet18").modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns
    for bn in bns:
        assert (bn.running_var >= 0.5).all() and (bn.running_var <= 1.5).all()
        assert not torch.equal(bn.running_mean, torch.zeros_like(bn.running_mean))
        assert not torch.equal(bn.weight, torch.ones_like(bn.weight))


def test_other_torchvision_models_build():
    model = zoo.build("squeezenet1_1")
    with torch.no_grad():
        assert model(zoo.example_input("squeezenet1_1")).shape == (1, 1000)
    assert "squeezenet1_1" in zoo.available_models()


def test_unknown_names_are_rejected():
    with pytest.raises(ValueError, match="unknown model"):
        zoo.build("resnet19")
    with pytest.raises(ValueError, match="exporter"):
        zoo.export_onnx("tiny_cnn", exporter="jit")


@pytest.mark.parametrize("name", ["mha_block", "vit_block"])
def test_attention_blocks_trace_with_fx(name):
    model, x = zoo.build(name), zoo.example_input(name)
    traced = torch.fx.symbolic_trace(model)
    ops = {node.target for node in traced.graph.nodes if node.op == "call_method"}
    assert {"reshape", "transpose", "softmax"} <= ops
    torch.testing.assert_close(traced(x), model(x))


@pytest.mark.parametrize("exporter", zoo.EXPORTERS)
@pytest.mark.parametrize("name", EXPORT_MODELS)
def test_export_matches_torch(name, exporter, cache_dir):
    path = zoo.export_onnx(name, exporter, cache_dir=cache_dir)
    assert path.parent == cache_dir and path.suffix == ".onnx"
    assert_export_matches(name, path)
    if exporter == "legacy":
        assert onnx.load(str(path), load_external_data=False).opset_import[0].version == zoo.LEGACY_OPSET


def test_export_leaves_only_finished_files(cache_dir):
    zoo.export_onnx("tiny_cnn", "dynamo", cache_dir=cache_dir)
    assert all(p.suffix == ".onnx" for p in cache_dir.iterdir())


@pytest.mark.parametrize("exporter", zoo.EXPORTERS)
def test_cache_hit_does_not_reexport(exporter, cache_dir, monkeypatch):
    path = zoo.export_onnx("tiny_cnn", exporter, cache_dir=cache_dir)
    mtime = path.stat().st_mtime_ns

    def fail(*args, **kwargs):
        raise AssertionError("cache hit must not export again")

    monkeypatch.setattr(torch.onnx, "export", fail)
    assert zoo.export_onnx("tiny_cnn", exporter, cache_dir=cache_dir) == path
    assert path.stat().st_mtime_ns == mtime


def test_cache_location_follows_env_and_key(tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPHPRUNE_CACHE", str(tmp_path))
    legacy = zoo.cache_path("tiny_cnn", "legacy")
    assert legacy.parent == tmp_path
    others = {zoo.cache_path("tiny_cnn", "legacy", opset=18), zoo.cache_path("tiny_cnn", "dynamo")}
    assert len({legacy} | others) == 3
    assert torch.__version__ in legacy.name


def test_unreachable_opset_is_refused(tmp_path):
    with pytest.raises(ValueError, match="opset 17"):
        zoo.export_onnx("tiny_cnn", "dynamo", opset=17, cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_failed_export_cleans_up(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("exporter crashed")

    monkeypatch.setattr(torch.onnx, "export", broken)
    with pytest.raises(RuntimeError, match="exporter crashed"):
        zoo.export_onnx("tiny_cnn", cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.zoo
@pytest.mark.parametrize("exporter", zoo.EXPORTERS)
@pytest.mark.parametrize("name", zoo.CORE_MODELS + ["vit_block"] + list(zoo.SMALL_MODELS))
def test_zoo_export_matches_torch(name, exporter):
    assert_export_matches(name, zoo.export_onnx(name, exporter))
