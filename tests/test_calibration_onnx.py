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
