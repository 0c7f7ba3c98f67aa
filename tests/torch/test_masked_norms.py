"""Hidden-size prunes through norms are verified exactly (graphprune/masked_norms.py).

The oracle takes every normalisation statistic over a pruned axis over the
kept channels only; the pruned model must then match it to float rounding.
The negative tests show the check is not vacuous: an oracle with the plain
(unmasked) statistic, or a pruned model whose norm scale is sliced with the
wrong indices, fails.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import graphprune
import graphprune.masked_norms as masked_norms
from graphprune.errors import VerificationError


class RMSNorm(nn.Module):
    def __init__(self, width, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.rand(width) + 0.5)
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class Residual(nn.Module):
    """embed → (norm → FFN → +residual) × 2 → norm → head: the hidden size is one group through norms."""

    def __init__(self, norm: str, width=32, ffn=64):
        super().__init__()
        make = (lambda: nn.LayerNorm(width)) if norm == "layer" else (lambda: RMSNorm(width))
        self.embed = nn.Linear(8, width)
        self.norms = nn.ModuleList([make() for _ in range(2)])
        self.up = nn.ModuleList([nn.Linear(width, ffn) for _ in range(2)])
        self.down = nn.ModuleList([nn.Linear(ffn, width) for _ in range(2)])
        self.final = make()
        self.head = nn.Linear(width, 4)

    def forward(self, x):
        h = self.embed(x)
        for norm, up, down in zip(self.norms, self.up, self.down):
            h = h + down(torch.relu(up(norm(h))))
        return self.head(self.final(h))


def _model(norm):
    torch.manual_seed(0)
    model = Residual(norm).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_()
    return model, torch.randn(2, 5, 8)


@pytest.mark.parametrize("norm", ["layer", "rms"])
def test_hidden_size_through_norms_verifies_exactly(norm):
    model, x = _model(norm)
    result = graphprune.prune(model, 0.5, example_inputs=x)
    assert result.verification.status == "exact", result.verification
    assert result.model.embed.weight.shape[0] == 16 and result.model.head.weight.shape[1] == 16
    assert result.verification.max_relative_error < 1e-5


@pytest.mark.parametrize("norm", ["layer", "rms"])
def test_the_plain_statistic_would_not_match(norm, monkeypatch):
    """Were the oracle's statistic over all channels, the (correct) prune would differ from it."""
    model, x = _model(norm)
    def every_channel(keep, t, axis):
        return torch.ones([1] * (t.dim() - 1) + [keep.numel()], dtype=t.dtype)

    monkeypatch.setattr(masked_norms, "_mask_like", every_channel)
    with pytest.raises(VerificationError):
        graphprune.prune(model, 0.5, example_inputs=x)


def test_a_norm_scale_sliced_with_wrong_indices_fails(monkeypatch):
    import graphprune.emit.torch as emit

    model, x = _model("layer")
    original = emit._slice_tensor

    def shuffled(traced, name, axes, emission, slots):
        if name == "final.weight":
            axes = {a: kept[::-1].copy() for a, kept in axes.items()}
        return original(traced, name, axes, emission, slots)

    monkeypatch.setattr(emit, "_slice_tensor", shuffled)
    monkeypatch.setattr(emit, "_already_sliced", lambda *_: None)  # slice in torch, with the wrong indices
    with pytest.raises(VerificationError):
        graphprune.prune(model, 0.5, example_inputs=x)
    assert model.final.weight.shape == (32,)  # rolled back


def test_a_statistic_over_several_axes_stays_approximate():
    class TwoAxisNorm(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(8, 16)
            self.norm = nn.LayerNorm([5, 16])
            self.b = nn.Linear(16, 4)

        def forward(self, x):
            return self.b(self.norm(self.a(x)))

    torch.manual_seed(0)
    result = graphprune.prune(TwoAxisNorm().eval(), 0.5, example_inputs=torch.randn(2, 5, 8))
    assert result.model.norm.weight.shape == (5, 8)
    assert result.verification.status == "approximate", result.verification
