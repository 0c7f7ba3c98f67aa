"""Calibration, repair and budgets on the ONNX path and the CLI."""

from __future__ import annotations

import io
import json

import numpy as np
import onnx
import pytest
import torch
from torch import nn

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

import graphprune
from graphprune.activation_importance import needed_statistics
from graphprune.cli import main
from graphprune.errors import InputError
from graphprune.onnx_calibration import collect_onnx_statistics
from graphprune.verify import session


class TwoLinear(nn.Module):
    def __init__(self, act=True):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(6, 12), nn.Linear(12, 4)
        self.act = nn.ReLU() if act else nn.Identity()

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


def _onnx(module: nn.Module) -> onnx.ModelProto:
    buffer = io.BytesIO()
    torch.onnx.export(module.eval(), (torch.randn(2, 6),), buffer, dynamo=False, input_names=["x"],
                      output_names=["y"], dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
    return onnx.load_from_string(buffer.getvalue())


def _feeds(n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((16, 6)).astype(np.float32)} for _ in range(n)]


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    return session(model).run(None, {"x": x})[0]


def test_onnx_statistics_match_a_direct_computation():
    torch.manual_seed(0)
    module = TwoLinear()
    model = _onnx(module)
    analysis = graphprune.analyse_model(model)
    wanted = needed_statistics(analysis)
    (key,) = [k for k, size in wanted.items() if size == 12]
    batches = _feeds(3)
    stats = collect_onnx_statistics(model, batches, {key: 12}, gram={key})[key]
    with torch.no_grad():
        hidden = torch.cat([module.act(module.fc1(torch.from_numpy(b["x"]))) for b in batches]).double().numpy()
    assert stats.count == 48
    np.testing.assert_allclose(stats.mean, hidden.mean(0), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(stats.moments(centred=True), np.cov(hidden.T, bias=True), rtol=1e-4, atol=1e-6)


def test_onnx_least_squares_recovers_combinations_of_kept_channels():
    torch.manual_seed(0)
    model = _onnx(TwoLinear(act=False))
    data = _feeds(8)
    result = graphprune.prune(model, 0.5, calibration=data, repair="lsq")
    calib = result.report["calibration"]
    assert result.report["verification"]["status"] == "exact"
    assert result.report["settings"]["importance"] == "activation"  # the ONNX default with lsq
    assert calib["held_out"] == 2 and calib["output_error"]["pruned"] > 0.1
    assert calib["output_error"]["repaired"] < 5e-3  # the ridge (1e-4 of the mean variance) only
    x = data[0]["x"]
    np.testing.assert_allclose(_run(result.model, x), _run(model, x), atol=5e-3)


def test_onnx_bias_compensation_is_exact_for_constant_channels():
    torch.manual_seed(0)
    module = TwoLinear()
    with torch.no_grad():
        module.fc1.weight[:6] = 0
        module.fc1.bias[:6] = torch.linspace(0.5, 2.0, 6)
    model = _onnx(module)
    data = _feeds(6)
    result = graphprune.prune(model, 0.5, calibration=data, importance="fluctuation", repair="bias")
    calib = result.report["calibration"]
    assert len(calib["repair"]["repaired"]) == 1 and "bias compensation" in calib["repair"]["repaired"][0]
    assert calib["output_error"]["pruned"] > 0.1 and calib["output_error"]["repaired"] < 1e-6
    np.testing.assert_allclose(_run(result.model, data[0]["x"]), _run(model, data[0]["x"]), atol=1e-5)


@pytest.mark.parametrize("metric", ["macs", "params"])
def test_budget_is_met_with_the_least_pruning(metric):
    torch.manual_seed(0)
    model = _onnx(TwoLinear())
    result = graphprune.prune(model, **{f"target_{metric}": 0.5})
    budget = result.report["budget"]
    before, after = result.report[metric]
    assert budget["met"] and budget["metric"] == metric
    assert after / before <= 0.5 and budget["achieved"] == pytest.approx(after / before, rel=0.02)
    assert after / before > 0.3  # the least pruning that meets it, not everything
    with pytest.raises(InputError, match="fraction"):
        graphprune.prune(model, target_macs=1.5)
    with pytest.raises(InputError, match="not both"):
        graphprune.prune(model, target_macs=0.5, target_params=0.5)


def test_torch_budget_and_calibration_together():
    torch.manual_seed(0)
    module = TwoLinear()
    data = [torch.randn(16, 6) for _ in range(4)]
    result = graphprune.prune(module, example_inputs=data[0], calibration=data, target_params=0.6)
    before, after = result.report["params"]
    assert result.report["budget"]["met"] and after / before <= 0.6
    assert result.report["settings"]["target_params"] == 0.6 and "calibration" in result.report


def test_cli_calibration_and_budget(tmp_path, capsys):
    torch.manual_seed(0)
    src = tmp_path / "m.onnx"
    onnx.save(_onnx(TwoLinear()), src)
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=np.random.default_rng(0).standard_normal((96, 6)).astype(np.float32))
    out, report = tmp_path / "p.onnx", tmp_path / "r.json"
    code = main(["prune", str(src), "-o", str(out), "--target-macs", "0.5", "--calibration", str(calib),
                 "--calibration-samples", "80", "--report", str(report)])
    assert code == 0 and out.exists()
    data = json.loads(report.read_text())
    assert data["budget"]["met"] and data["calibration"]["samples"] == 80
    assert data["calibration"]["batches"] == 3  # cut into batches of 32: two fit, one held out
    assert "calibration: 80 samples" in capsys.readouterr().out
    bad = tmp_path / "bad.npz"
    np.savez(bad, y=np.zeros((4, 6), np.float32))
    out2 = tmp_path / "q.onnx"
    assert main(["prune", str(src), "-o", str(out2), "--ratio", "0.5", "--calibration", str(bad)]) == 2
    assert "bad.npz" in capsys.readouterr().err and not out2.exists()
    assert main(["prune", str(src), "-o", str(out2), "--ratio", "0.5", "--target-macs", "0.5"]) == 2
    assert main(["prune", str(src), "-o", str(out2), "--ratio", "0.5", "--importance", "activation"]) == 2
    assert main(["prune", str(src), "-o", str(out2), "--ratio", "0.5", "--calibration", str(calib),
                 "--calibration-samples", "0"]) == 2
    assert not out2.exists()


def test_latency_budget_searches_a_macs_budget_and_verifies(monkeypatch):
    import graphprune.latency as latency

    monkeypatch.setattr(latency, "MEASURE_SECONDS", 0.02)
    monkeypatch.setattr(latency, "MIN_RUNS", 3)
    torch.manual_seed(0)
    model = _onnx(TwoLinear())
    result = graphprune.prune(model, target_latency=0.8)
    budget = result.report["budget"]
    assert budget["metric"] == "latency" and budget["search"] and budget["measured_at"] == {"x": [1, 6]}
    assert result.report["macs"][1] <= budget["target_macs"] * result.report["macs"][0] * 1.01
    assert result.report["verification"]["status"] == "exact"
    assert result.report["settings"]["target_latency"] == 0.8
    with pytest.raises(InputError, match="onnxruntime"):
        graphprune.prune(TwoLinear(), example_inputs=torch.randn(2, 6), target_latency=0.5)
    with pytest.raises(InputError, match="one budget"):
        graphprune.prune(model, target_latency=0.5, target_macs=0.5)


def _tiny_llama_onnx(low_rank: int | None = None) -> onnx.ModelProto:
    """A 2-layer LLaMA with tied embeddings exported with dynamic batch and length; with
    ``low_rank``, every writer of the residual stream projected onto one subspace of that size."""
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
                                      use_cache=False)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
        if low_rank:
            basis, _ = torch.linalg.qr(torch.randn(64, low_rank))
            projector = basis @ basis.T
            model.model.embed_tokens.weight.copy_(model.model.embed_tokens.weight @ projector)
            for layer in model.model.layers:
                for linear in (layer.self_attn.o_proj, layer.mlp.down_proj):
                    linear.weight.copy_(projector @ linear.weight)

    class Logits(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, ids):
            return self.inner(input_ids=ids).logits

    buffer = io.BytesIO()
    torch.onnx.export(Logits(model).eval(), (torch.randint(0, 128, (2, 16)),), buffer, dynamo=True, input_names=["ids"],
                      output_names=["logits"], dynamic_axes={"ids": {0: "b", 1: "s"}, "logits": {0: "b", 1: "s"}})
    return onnx.load_from_string(buffer.getvalue())


def _token_feeds(n: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [{"ids": rng.integers(0, 128, (4, 16))} for _ in range(n)]


def test_onnx_rotation_makes_pruning_a_low_rank_stream_lossless():
    """The ONNX rotation finds the stream's subspace: keeping it loses (almost) nothing, while
    the same cut of the unrotated stream loses a large part of the output."""
    model = _tiny_llama_onnx(low_rank=48)
    names = {i.name for i in model.graph.initializer}
    (final_norm,) = [n for n in names if n.endswith("model.norm.weight")]
    plan = {"initializers": {final_norm: {"0": list(range(48))}}}
    checks = _token_feeds(2, seed=5)
    reference = [session(model).run(None, f)[0] for f in checks]
    errors = {}
    for rotate in (True, False):
        result = graphprune.prune(model, plan=plan, calibration=_token_feeds(8, seed=1), rotate=rotate)
        pruned = session(result.model)
        errors[rotate] = max(float(np.linalg.norm(pruned.run(None, f)[0] - r) / np.linalg.norm(r))
                             for f, r in zip(checks, reference))
        if rotate:
            (rotated,) = result.report["rotation"]["rotated"]
            assert rotated["output_change"] < 1e-4 and rotated["folded_norm_scales"] == 5
        assert result.verification.status in ("exact", "approximate")
    assert errors[True] < 1e-2
    assert errors[False] > 10 * errors[True]


def test_onnx_rotation_needs_calibration():
    with pytest.raises(InputError, match="calibration"):
        graphprune.prune(_onnx(TwoLinear()), rotate=True)


def test_cli_rotate(tmp_path, capsys):
    """``--rotate`` on the CLI: the report names the rotated stream; without calibration, exit 2."""
    src, out, report = tmp_path / "llama.onnx", tmp_path / "p.onnx", tmp_path / "r.json"
    onnx.save(_tiny_llama_onnx(low_rank=48), src)
    calib = tmp_path / "ids.npz"
    np.savez(calib, ids=np.random.default_rng(1).integers(0, 128, (32, 16)))
    assert main(["prune", str(src), "-o", str(out), "--ratio", "0.25", "--calibration", str(calib),
                 "--rotate", "--report", str(report), "--quiet"]) == 0
    (rotated,) = json.loads(report.read_text())["rotation"]["rotated"]
    assert rotated["output_change"] < 1e-4
    assert main(["prune", str(src), "-o", str(tmp_path / "q.onnx"), "--ratio", "0.25", "--rotate"]) == 2
    assert "calibration" in capsys.readouterr().err and not (tmp_path / "q.onnx").exists()


class ConvBN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.fc = nn.Linear(6, 4)

    def forward(self, x):
        y = torch.relu(self.bn(self.conv2(torch.relu(self.conv1(x)))))
        return self.fc(y.mean((2, 3)))


def _conv_bn_onnx() -> onnx.ModelProto:
    torch.manual_seed(0)
    model = ConvBN().eval()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-1, 1)
        model.bn.running_var.uniform_(0.5, 2)
    buffer = io.BytesIO()  # constant folding off: the BatchNormalization node stays
    torch.onnx.export(model, (torch.randn(2, 3, 8, 8),), buffer, dynamo=False, input_names=["x"],
                      output_names=["y"], dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
                      do_constant_folding=False, training=torch.onnx.TrainingMode.PRESERVE)
    return onnx.load_from_string(buffer.getvalue())


def test_onnx_batchnorm_statistics_are_re_estimated_on_the_pruned_model():
    from graphprune.onnx_calibration import recalibrate_onnx_batchnorm

    model = _conv_bn_onnx()
    (bn,) = [n for n in model.graph.node if n.op_type == "BatchNormalization"]
    rng = np.random.default_rng(0)
    batches = [{"x": rng.standard_normal((8, 3, 8, 8)).astype(np.float32)} for _ in range(3)]
    pruned = graphprune.prune(model, ratio=0.5, repair="none").model
    recalibrated, count = recalibrate_onnx_batchnorm(pruned, batches)
    assert count == 1
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in recalibrated.graph.initializer}
    kept = len(inits[bn.input[3]])
    assert kept < 6
    values = collect_onnx_statistics(pruned, batches, {(bn.input[0], 1): kept})[(bn.input[0], 1)]
    np.testing.assert_allclose(inits[bn.input[3]], values.mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(inits[bn.input[4]], values.variance, rtol=1e-4, atol=1e-6)
    before = {i.name: onnx.numpy_helper.to_array(i) for i in pruned.graph.initializer}
    assert not np.allclose(before[bn.input[3]], inits[bn.input[3]])  # the loaded statistics were replaced
    result = graphprune.prune(model, ratio=0.5, calibration=batches + batches[:1])
    assert "bn_recalibrated" in result.report["calibration"]["output_error"] or \
        result.report["calibration"].get("bn_undone")
