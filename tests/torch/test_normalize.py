"""``F.normalize`` on the torch path (timm's EdgeNeXt, SwiftFormer and XCiT use it).

``x / max(‖x‖₂, ε)`` over the pruned axis is exact: a removed channel adds
nothing to the kept channels' norm once it is zero, so the pruned model equals
the original with the removed channels zeroed, which is checked independently.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import graphprune


class Normalised(nn.Module):
    def __init__(self, dim: int, p: float = 2.0):
        super().__init__()
        self.dim, self.p = dim, p
        self.a, self.b = nn.Linear(6, 16), nn.Linear(16, 3)

    def forward(self, x):
        return self.b(F.normalize(self.a(x), p=self.p, dim=self.dim))


def test_normalising_the_pruned_axis_equals_zeroing_the_removed_channels():
    torch.manual_seed(0)
    model = Normalised(-1).eval()
    original = copy.deepcopy(model)
    result = graphprune.prune(model, 0.5, example_inputs=(torch.randn(4, 5, 6),))
    assert result.report["torch"]["untranslated_calls"] == []
    assert result.verification.status == "exact"
    kept = result.report["initializers"]["a.weight"]["0"]
    assert len(kept) == 8
    removed = sorted(set(range(16)) - set(kept))
    with torch.no_grad():
        original.a.weight[removed] = 0
        original.a.bias[removed] = 0
        x = torch.randn(2, 7, 6)
        torch.testing.assert_close(result.model(x), original(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dim", [0, 1])
def test_normalising_other_axes_leaves_the_channels_free(dim):
    torch.manual_seed(1)
    model = Normalised(dim).eval()
    result = graphprune.prune(model, 0.5, example_inputs=(torch.randn(4, 5, 6),))
    assert result.verification.status == "exact"
    assert result.model.a.weight.shape == (8, 6)
    assert result.model(torch.randn(3, 2, 6)).shape == (3, 2, 3)


def test_an_l1_normalisation_over_the_pruned_axis_keeps_it():
    torch.manual_seed(2)
    model = Normalised(-1, p=1.0).eval()
    result = graphprune.prune(model, 0.5, example_inputs=(torch.randn(4, 5, 6),))
    assert result.verification.status == "exact"
    assert result.model.a.weight.shape == (16, 6)  # L1 statistic over kept channels is not masked: pinned
