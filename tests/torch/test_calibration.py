"""Calibration data on the PyTorch path: statistics, activation-aware importance, repair, BatchNorm."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import graphprune
from graphprune.activation_importance import needed_statistics
from graphprune.channels import analyse
from graphprune.errors import InputError
from graphprune.frontends.fx import trace
from graphprune.torch_calibration import collect_statistics


def _batches(n: int, shape=(16, 6), seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=g) for _ in range(n)]


class TwoLinear(nn.Module):
    def __init__(self, d_in=6, hidden=12, d_out=4, act=True):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d_in, hidden), nn.Linear(hidden, d_out)
        self.act = nn.ReLU() if act else nn.Identity()

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


def test_statistics_match_a_direct_computation():
    torch.manual_seed(0)
    model = TwoLinear().eval()
    batches = _batches(3)
    traced = trace(model, (batches[0],))
    analysis = analyse(traced.graph)
    wanted = needed_statistics(analysis)
    (key,) = [k for k in wanted if wanted[k] == 12]  # fc2's input, the hidden activation
    stats = collect_statistics(traced, [(b,) for b in batches], {key: 12}, gram={key})[key]
    hidden = torch.cat([model.act(model.fc1(b)) for b in batches]).detach().double().numpy()
    assert stats.count == 48
    np.testing.assert_allclose(stats.mean, hidden.mean(0), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(stats.variance, hidden.var(0), rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(stats.moments(centred=False), hidden.T @ hidden / 48, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(stats.moments(centred=True), np.cov(hidden.T, bias=True), rtol=1e-5, atol=1e-8)


def test_activation_importance_removes_silent_channels_that_weights_call_large():
    """Channels 0–5 carry big weights but (almost) no signal on the data: weight norms keep them,
    the activation criterion removes them."""
    torch.manual_seed(0)
    model = TwoLinear(act=False).eval()
    with torch.no_grad():
        model.fc1.weight[:6] *= 10
        model.fc1.bias.zero_()
    data = [torch.cat([torch.zeros(16, 3), torch.randn(16, 3)], 1) for _ in range(4)]
    with torch.no_grad():
        model.fc1.weight[:6, 3:] = 0  # channels 0-5 read only the silent inputs
    rows = model.fc1.weight.detach().clone()
    result = graphprune.prune(model, 0.5, example_inputs=data[0], calibration=data, repair="none")
    assert result.report["settings"]["importance"] == "activation"  # the default without a repair
    assert torch.equal(model.fc1.weight, rows[6:])


def test_least_squares_recovers_channels_that_are_combinations_of_kept_ones():
    """A linear hidden layer of rank 6 in 12 channels: any 6 independent kept channels reproduce
    the removed ones exactly, so the repaired model matches the original."""
    torch.manual_seed(0)
    model = TwoLinear(act=False).eval()
    data = _batches(8)
    x = data[0]
    with torch.no_grad():
        expected = model(x)
    result = graphprune.prune(model, 0.5, example_inputs=x, calibration=data, repair="lsq")
    calib = result.report["calibration"]
    assert result.report["verification"]["status"] == "exact"
    assert calib["output_error"]["pruned"] > 0.1
    assert calib["output_error"]["repaired"] < 5e-3  # the ridge (1e-4 of the mean variance) only
    assert model.fc1.out_features == 6
    with torch.no_grad():
        assert torch.allclose(model(x), expected, atol=5e-3)


def test_bias_compensation_is_exact_for_constant_channels():
    """Hidden channels 0–5 are constant (zero weights, a bias): their removed contribution is
    their mean, folded into fc2's bias exactly; fluctuation ranks them lowest (zero variance)."""
    torch.manual_seed(0)
    model = TwoLinear().eval()
    with torch.no_grad():
        model.fc1.weight[:6] = 0
        model.fc1.bias[:6] = torch.linspace(0.5, 2.0, 6)
    data = _batches(6)
    with torch.no_grad():
        expected = model(data[0])
    result = graphprune.prune(model, 0.5, example_inputs=data[0], calibration=data, importance="fluctuation",
                              repair="bias")
    calib = result.report["calibration"]
    assert calib["repair"]["repaired"] == ["fc2.weight (bias compensation)"]
    assert calib["output_error"]["pruned"] > 0.1 and calib["output_error"]["repaired"] < 1e-6
    with torch.no_grad():
        assert torch.allclose(model(data[0]), expected, atol=1e-5)


class ConvBN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.conv2, self.bn2 = nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.fc(x.mean((2, 3)))


def test_batchnorm_statistics_are_re_estimated_on_the_pruned_network():
    torch.manual_seed(0)
    model = ConvBN().eval()
    data = _batches(4, (8, 3, 8, 8))
    result = graphprune.prune(model, 0.5, example_inputs=data[0], calibration=data, repair="none")
    calib = result.report["calibration"]
    assert calib.get("bn_recalibrated") == 2 or calib.get("bn_undone")
    if calib.get("bn_recalibrated"):  # bn2's running mean is the mean of conv2's output on the fit batches
        fit = data[:calib["statistics_from"]]
        with torch.no_grad():
            conv2_out = torch.cat([model.conv2(torch.relu(model.bn1(model.conv1(b)))) for b in fit])
        torch.testing.assert_close(model.bn2.running_mean, conv2_out.mean((0, 2, 3)), rtol=1e-4, atol=1e-5)


def test_calibration_samples_as_loader_batches_and_dicts():
    torch.manual_seed(0)
    model = TwoLinear().eval()
    data = _batches(4)
    labelled = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.cat(data), torch.zeros(64)),
                                           batch_size=16)
    result = graphprune.prune(model, 0.25, example_inputs=data[0], calibration=labelled, calibration_samples=40)
    assert result.report["calibration"]["samples"] == 40 and result.report["calibration"]["batches"] == 3
    model = TwoLinear().eval()
    result = graphprune.prune(model, 0.25, example_inputs=data[0], calibration=[{"x": b} for b in data])
    assert result.report["calibration"]["samples"] == 64 and result.report["calibration"]["held_out"] == 1


def test_calibration_mistakes_are_input_errors():
    model = TwoLinear().eval()
    x = torch.randn(2, 6)
    with pytest.raises(InputError, match="needs calibration data"):
        graphprune.prune(model, 0.5, example_inputs=x, importance="activation")
    with pytest.raises(InputError, match="needs calibration data"):
        graphprune.prune(model, 0.5, example_inputs=x, repair="lsq")
    with pytest.raises(InputError, match="does not take"):
        graphprune.prune(model, 0.5, example_inputs=x, calibration=[{"y": x}])
    with pytest.raises(InputError, match="rank"):
        graphprune.prune(model, 0.5, example_inputs=x, calibration=[torch.randn(6)])
    with pytest.raises(InputError, match="empty"):
        graphprune.prune(model, 0.5, example_inputs=x, calibration=[])


def test_reconstruction_importance_removes_the_channel_others_predict():
    """Hidden channels 0 and 1 are copies (large), the rest independent (small): the
    reconstruction criterion (OBS, 1/Σ⁻¹_jj) removes a copy, which least squares then restores;
    the activation criterion removes the smallest channel instead."""
    torch.manual_seed(0)
    data = [torch.randn(64, 12) for _ in range(4)]
    copy_row = 3 * torch.eye(12)[0]
    outcome = {}
    for criterion in ("reconstruction", "activation"):
        model = nn.Sequential(nn.Linear(12, 12), nn.Linear(12, 4)).eval()
        with torch.no_grad():
            model[0].weight.copy_(torch.eye(12) * torch.linspace(0.2, 1.0, 12)[:, None])
            model[0].weight[0] = model[0].weight[1] = copy_row
            model[0].bias.zero_()
            model[1].weight.fill_(0.5)  # every column the same size: activation ranks by the input alone
        result = graphprune.prune(model, 1 / 12, example_inputs=data[0], calibration=data, importance=criterion,
                                  repair="lsq")
        copies = sum(torch.equal(r, copy_row) for r in model[0].weight)
        smallest = torch.eye(12)[2] * torch.linspace(0.2, 1.0, 12)[2]
        smallest_kept = any(torch.allclose(r, smallest) for r in model[0].weight)
        outcome[criterion] = (copies, smallest_kept, result.report["calibration"]["output_error"])
    copies, smallest_kept, errors = outcome["reconstruction"]
    assert copies == 1 and smallest_kept
    assert errors["repaired"] < 1e-3  # the removed copy is restored from its twin
    copies, smallest_kept, _ = outcome["activation"]
    assert copies == 2 and not smallest_kept


class ThreeLinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(6, 16), nn.Linear(16, 16), nn.Linear(16, 4)

    def forward(self, x):
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


def test_sequential_refit_fits_the_pruned_models_own_inputs():
    """One-shot least squares refits fc3 for fc2's *original* outputs; the sequential refit
    sees what the pruned fc1/fc2 now give it, so it must end closer to the original."""
    from graphprune.torch_sequential import sequential_refit

    torch.manual_seed(0)
    model = ThreeLinear().eval()
    batches = _batches(12, shape=(256, 6))
    result = graphprune.prune(model, ratio=0.5, example_inputs=(batches[0],), calibration=batches)
    errors = result.report["calibration"]["output_error"]
    assert errors["sequential_refit"] < errors["repaired"] < errors["pruned"]
    assert result.report["calibration"]["sequential_refit"] == 3
    # the refit itself: a linear whose pruned input still spans the original one is fitted exactly
    original = nn.Sequential(nn.Linear(4, 3)).eval()
    pruned = nn.Sequential(nn.Linear(4, 3)).eval()  # another function of the same inputs
    names, undo = sequential_refit(pruned, original, [(torch.randn(64, 4),) for _ in range(4)], {})
    assert names == ["0"]
    x = torch.randn(32, 4)
    torch.testing.assert_close(pruned(x), original(x), rtol=1e-3, atol=1e-3)
    undo[0]()
    assert not torch.allclose(pruned(x), original(x), atol=1e-3)
