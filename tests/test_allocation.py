"""How the global ranking compares groups: ``allocation="normalised"`` vs ``"cost"`` (graphprune.selection)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

import graphprune
from graphprune.channels import analyse
from graphprune.errors import InputError
from graphprune.frontends.fx import trace
from graphprune.selection import parameters_per_channel, select


class ThreeLinear(nn.Module):
    """Two hidden groups: 12 channels of 6 + 1 + 24 = 31 parameters, 24 channels of 12 + 1 + 4 = 17."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(6, 12), nn.Linear(12, 24), nn.Linear(24, 4)

    def forward(self, x):
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


class TwoBranches(nn.Module):
    """``y = quiet(x) + loud(x)``: the quiet branch's output is scaled by 1e-2, so its hidden
    channels barely reach the output."""

    def __init__(self):
        super().__init__()
        self.quiet_in, self.quiet_out = nn.Linear(8, 32), nn.Linear(32, 8)
        self.loud_in, self.loud_out = nn.Linear(8, 32), nn.Linear(32, 8)
        with torch.no_grad():
            self.quiet_out.weight.mul_(1e-2)

    def forward(self, x):
        return self.quiet_out(torch.relu(self.quiet_in(x))) + self.loud_out(torch.relu(self.loud_in(x)))


def _hidden_groups(model, example):
    analysis = analyse(trace(model, (example,)).graph)
    groups = sorted(analysis.prunable_groups(), key=lambda g: g.size)
    return analysis, groups


def test_parameters_per_channel_counts_every_slice_a_channel_owns():
    analysis, (first, second) = _hidden_groups(ThreeLinear().eval(), torch.randn(2, 6))
    assert (first.size, second.size) == (12, 24)
    assert parameters_per_channel(analysis, first) == 31
    assert parameters_per_channel(analysis, second) == 17


def test_cost_removes_the_cheapest_error_per_parameter_first():
    """Equal scores inside each group: normalised sees a tie, cost sees 1²/31 < 2²/17 and takes
    every removal from the first group (up to ``max_group_ratio``)."""
    analysis, (first, second) = _hidden_groups(ThreeLinear().eval(), torch.randn(2, 6))
    scores = {first.id: np.ones(12), second.id: np.full(24, 2.0)}
    plan = select(analysis, scores, 6 / 36, global_ranking=True, allocation="cost")
    assert plan.removed[first.id].sum() == 6 and plan.removed[second.id].sum() == 0
    scores = {first.id: np.full(12, 3.0), second.id: np.full(24, 2.0)}  # 9/31 > 4/17: now the second
    plan = select(analysis, scores, 6 / 36, global_ranking=True, allocation="cost")
    assert plan.removed[first.id].sum() == 0 and plan.removed[second.id].sum() == 6
    plan = select(analysis, scores, 30 / 36, global_ranking=True, max_group_ratio=0.5, allocation="cost")
    assert plan.removed[first.id].sum() <= 6 and plan.removed[second.id].sum() <= 12  # the cap holds


def test_unknown_allocation_is_an_input_error():
    analysis, groups = _hidden_groups(ThreeLinear().eval(), torch.randn(2, 6))
    with pytest.raises(InputError, match="unknown allocation 'biggest'"):
        select(analysis, {g.id: np.ones(g.size) for g in groups}, 0.3, True, allocation="biggest")
    with pytest.raises(InputError, match="unknown allocation"):
        graphprune.prune(ThreeLinear().eval(), 0.3, example_inputs=torch.randn(2, 6), allocation="biggest")


def _output_error(model, pruned, data) -> float:
    with torch.no_grad():
        return float(sum(((model(x) - pruned(x)) ** 2).sum() for x in data))


def test_cost_allocation_prunes_the_branch_that_matters_less_and_errs_less():
    """With calibrated scores, cost allocation takes the quiet branch's channels and leaves a
    smaller output error than ranking each group against its own mean, at the same budget."""
    torch.manual_seed(0)
    model = TwoBranches().eval()
    data = [torch.randn(32, 8) for _ in range(4)]
    results = {}
    for allocation in ("normalised", "cost"):
        result = graphprune.prune(copy.deepcopy(model), example_inputs=data[0], calibration=data,
                                  importance="activation", repair="none", target_params=0.6, allocation=allocation)
        assert result.report["verification"]["status"] == "exact"
        assert result.report["budget"]["achieved"] <= 0.6
        assert result.report["settings"]["allocation"] == allocation
        results[allocation] = result
    quiet = {a: r.model.quiet_in.out_features for a, r in results.items()}
    loud = {a: r.model.loud_in.out_features for a, r in results.items()}
    assert quiet["cost"] < quiet["normalised"] and loud["cost"] > loud["normalised"]
    held_out = [torch.randn(32, 8) for _ in range(4)]
    errors = {a: _output_error(model, r.model, held_out) for a, r in results.items()}
    assert errors["cost"] < 0.5 * errors["normalised"]


def test_onnx_path_and_cli_take_the_allocation(tmp_path):
    from graphprune.cli import main

    model = ThreeLinear().eval()
    path = tmp_path / "mlp.onnx"
    torch.onnx.export(model, (torch.randn(2, 6),), str(path), input_names=["x"], dynamo=False)
    result = graphprune.prune(str(path), ratio=0.3, global_ranking=True, allocation="cost")
    assert result.report["settings"]["allocation"] == "cost"
    assert result.report["verification"]["status"] == "exact"
    out = tmp_path / "small.onnx"
    assert main(["prune", str(path), "-o", str(out), "--ratio", "0.3", "--global", "--allocation", "cost"]) == 0
    assert out.exists()
    with pytest.raises(SystemExit) as exc:
        main(["prune", str(path), "-o", str(out), "--ratio", "0.3", "--allocation", "biggest"])
    assert exc.value.code == 2


class WideThenNarrow(nn.Module):
    """conv 3→8 at 32×32, pool to 8×8, conv 8→16, linear 16→4: a first-group channel costs
    3·9 + 1 + 16·9 = 172 parameters and 32·32·27 + 8·8·144 = 36,864 MACs; a second-group one
    8·9 + 1 + 4 = 77 parameters and 8·8·72 + 4 = 4,612 MACs."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 16, 3, padding=1)
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        x = nn.functional.max_pool2d(torch.relu(self.conv1(x)), 4)
        return self.head(torch.relu(self.conv2(x)).mean((2, 3)))


def test_a_macs_budget_prices_channels_in_macs():
    from graphprune.budget import Budget, PlanCost, marginal_costs, select_for_budget

    analysis, (first, second) = _hidden_groups(WideThenNarrow().eval(), torch.randn(1, 3, 32, 32))
    cost = PlanCost(analysis)
    full = cost(graphprune.selection.Plan(analysis))
    saved = marginal_costs(analysis, {first.id: 0, second.id: 0}, cost, full["macs"], "macs")
    assert saved == {first.id: 32 * 32 * 27 + 8 * 8 * 144, second.id: 8 * 8 * 72 + 4}
    saved = marginal_costs(analysis, {first.id: 0, second.id: 0}, cost, full["params"], "params")
    assert saved == {first.id: 172, second.id: 77}
    # errors 2 and 1: per parameter 4/172 > 1/77, so the second group goes first; per MAC
    # 4/36,864 < 1/4,612, so the first does
    scores = {first.id: np.full(8, 2.0), second.id: np.ones(16)}
    by_macs, _ = select_for_budget(analysis, scores, Budget("macs", 0.8), allocation="cost")
    by_params, _ = select_for_budget(analysis, scores, Budget("params", 0.8), allocation="cost")
    assert by_macs.removed[first.id].sum() > 0 and by_macs.removed[second.id].sum() == 0
    assert by_params.removed[second.id].sum() > 0 and by_params.removed[first.id].sum() == 0
