"""Sizes computed at run time from a pruned axis (``C // self.num_heads``) become literals.

timm's CaiT, CoaT, PVT-v2, VOLO and relative-position ViT split heads with
``qkv.reshape(B, N, 3, self.num_heads, C // self.num_heads)`` where ``C`` is read
from the input's shape. When the hidden size is pruned, ``C // num_heads`` no
longer equals the kept head size even though the head size itself did not
change, so the bound size must be replaced although its value is the same;
sizes read from axes the prune left alone (``B``, ``N``) stay run-time values.
"""

from __future__ import annotations

import torch
from torch import nn

import graphprune


class HeadsFromHidden(nn.Module):
    """A residual attention block whose head size is derived from the input's hidden size."""

    def __init__(self, dim: int = 48, heads: int = 3):
        super().__init__()
        self.num_heads = heads
        self.embed = nn.Linear(12, dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.head = nn.Linear(dim, 5)

    def forward(self, tokens):
        x = self.embed(tokens)
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attn = (q @ k.transpose(-2, -1)).softmax(-1)
        x = x + self.proj((attn @ v).transpose(1, 2).reshape(B, N, -1))
        return self.head(x)


def test_head_size_derived_from_a_pruned_hidden_size_is_rewritten():
    torch.manual_seed(0)
    model = HeadsFromHidden().eval()
    x = torch.randn(2, 6, 12)
    result = graphprune.prune(model, 0.5, example_inputs=(x,))
    assert result.verification.status == "exact"
    assert result.model.embed.weight.shape[0] < 48  # the hidden size was pruned
    assert any("->" in rewrite for rewrite in result.report["torch"]["rewritten_literals"])
    with torch.no_grad():  # B and N were not frozen: other batches and lengths still run
        assert result.model(torch.randn(3, 9, 12)).shape == (3, 9, 5)


def test_run_time_sizes_of_untouched_axes_stay_run_time():
    torch.manual_seed(0)
    model = HeadsFromHidden().eval()
    x = torch.randn(2, 6, 12)
    result = graphprune.prune(model, 0.5, example_inputs=(x,), keep="embed.weight")  # hidden kept
    assert result.verification.status == "exact"
    with torch.no_grad():
        assert result.model(torch.randn(1, 11, 12)).shape == (1, 11, 5)


class HaloBlock(nn.Module):
    """conv → timm's HaloAttn → conv: heads merged with the batch (``B * self.num_heads``),
    windows cut by ``Tensor.unfold``, open-ended slices over the merged axis."""

    def __init__(self):
        super().__init__()
        from timm.layers.halo_attn import HaloAttn

        self.a = nn.Conv2d(3, 32, 3, padding=1)
        self.halo = HaloAttn(32, 64, block_size=8, halo_size=2, num_heads=4)
        self.b = nn.Conv2d(64, 8, 1)

    def forward(self, x):
        return self.b(self.halo(self.a(x)))


def test_sizes_merging_the_batch_with_pruned_heads_keep_following_the_batch():
    """``B * self.num_heads`` with heads 4 → 2 becomes ``B * 2``, not the example's literal,
    and ``x_pad[:, ...]`` over the merged axis keeps its open end: the pruned model runs at
    every batch (before, verification at a second batch failed)."""
    torch.manual_seed(0)
    model = HaloBlock().eval()
    result = graphprune.prune(model, 0.5, example_inputs=(torch.randn(1, 3, 16, 16),))
    assert result.verification.status == "exact"
    assert result.model.halo.q.weight.shape[0] == 32  # heads pruned 4 → 2
    literals = result.report["torch"]["rewritten_literals"]
    assert any("literal factor rescaled" in line for line in literals)
    with torch.no_grad():
        for batch in (1, 3):
            assert result.model(torch.randn(batch, 3, 16, 16)).shape == (batch, 8, 16, 16)
