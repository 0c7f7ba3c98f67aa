"""``rms_norm`` (``nn.RMSNorm``, ``F.rms_norm``, ``aten.rms_norm``) and ``clamp`` by tensor bounds.

timm's Gemma-4 ViT uses both; on the torch.export path they were untranslated
(337 calls), which pinned every group. RMSNorm is decomposed as Hugging Face's
is traced (``x / √(mean x² + ε) · γ``), so a pruned hidden size is verified
exactly with the statistic over the kept channels; clamp by tensors is
``Min(Max(x, lo), hi)``.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import graphprune


class NormThenClamp(nn.Module):
    def __init__(self, norm: str, force_export: bool):
        super().__init__()
        self.norm, self.force_export = norm, force_export
        self.embed = nn.Linear(8, 32)
        self.rms = nn.RMSNorm(32)
        self.scale = nn.Parameter(torch.rand(32) + 0.5)
        self.mix = nn.Linear(32, 32)
        self.head = nn.Linear(32, 4)
        self.register_buffer("limit", torch.tensor(0.7))

    def forward(self, x):
        h = self.embed(x)
        if self.force_export and x.size(-1) != 8:  # control flow on a size: symbolic tracing fails
            return h
        if self.norm == "module":
            y = self.rms(h)
        elif self.norm == "functional":
            y = F.rms_norm(h, (32,), self.scale, 1e-6)
        else:
            y = F.rms_norm(h, (32,))  # no scale, ε the dtype's epsilon
        return self.head(h + torch.clamp(self.mix(y), -self.limit, self.limit))


@pytest.mark.parametrize("force_export", [False, "concrete", "torch.export"])
@pytest.mark.parametrize("norm", ["module", "functional", "no_weight"])
def test_hidden_size_pruned_through_rms_norm_and_tensor_clamp_exactly(norm, force_export, tracer_used):
    torch.manual_seed(0)
    model = NormThenClamp(norm, force_export).eval()
    x = torch.randn(2, 5, 8)
    result = graphprune.prune(model, 0.5, example_inputs=(x,))
    assert result.report["torch"]["tracer"] == tracer_used(force_export or "symbolic_trace", result.report)
    assert result.report["torch"]["untranslated_calls"] == []
    assert result.verification.status == "exact"  # the RMS statistic was taken over the kept channels
    assert result.model.embed.weight.shape == (16, 8)  # the hidden size went through the norm
    if norm == "module":
        assert model.rms.normalized_shape == (16,)
    with torch.no_grad():
        assert result.model(torch.randn(3, 7, 8)).shape == (3, 7, 4)


def test_clamp_by_one_tensor_bound():
    class OneSided(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(6, 16), nn.Linear(16, 3)
            self.register_buffer("floor", torch.full((16,), -0.2))

        def forward(self, x):
            return self.b(torch.clamp_min(self.a(x), self.floor))

    torch.manual_seed(0)
    model = OneSided().eval()
    result = graphprune.prune(model, 0.5, example_inputs=(torch.randn(4, 6),))
    assert result.verification.status == "exact"
    assert result.model.a.weight.shape == (8, 6)
    assert result.model.floor.shape == (8,)  # the per-channel bound followed its channels
