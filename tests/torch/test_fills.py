"""Tensors filled from literal sizes (``torch.zeros((1, self.n_heads, q, k))``) follow the heads they meet.

T5's cross-attention has no relative bias: its position bias is ``torch.zeros`` shaped by
``self.n_heads`` and added to the scores. Before fills were translated, that constant pinned the
heads of every cross-attention layer.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import graphprune


class BiasedAttention(nn.Module):
    """Multi-head attention whose scores get a filled bias of shape ``[1, heads, q, k]``."""

    def __init__(self, fill: str, dim: int = 32, heads: int = 4):
        super().__init__()
        self.fill, self.n_heads, self.head_dim = fill, heads, dim // heads
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))

    def bias(self, x, q_len, k_len):
        size = (1, self.n_heads, q_len, k_len)
        if self.fill == "zeros":
            return torch.zeros(size, dtype=x.dtype)
        if self.fill == "ones":
            return torch.ones(1, self.n_heads, q_len, k_len, dtype=x.dtype)
        if self.fill == "full":
            return torch.full(size, 0.25, dtype=x.dtype)
        return x.new_zeros(size)

    def forward(self, x):
        b, s, _ = x.shape
        split = lambda t: t.view(b, s, self.n_heads, self.head_dim).transpose(1, 2)  # noqa: E731
        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        scores = q @ k.transpose(-1, -2) + self.bias(x, s, s)
        out = scores.softmax(-1) @ v
        return self.o(out.transpose(1, 2).reshape(b, s, self.n_heads * self.head_dim))


@pytest.mark.parametrize("fill", ["zeros", "ones", "full", "new_zeros"])
def test_a_filled_bias_is_pruned_with_the_heads_and_its_literal_follows(fill):
    torch.manual_seed(0)
    model = BiasedAttention(fill).eval()
    x = torch.randn(2, 5, 32)
    reference = model(x)
    result = graphprune.prune(model, 0.5, example_inputs=(x,))
    assert result.verification.status == "exact"
    assert result.model.q.weight.shape == (16, 32)  # 2 of 4 heads removed
    assert not [g for g in result.report["pinned"] if "q.weight[axis 0]" in g["parameters"]]
    with torch.no_grad():  # the literal heads count followed: another batch and length still run
        assert result.model(torch.randn(3, 7, 32)).shape == (3, 7, 32)
        assert result.model(x).shape == reference.shape


def test_t5_cross_attention_heads_are_pruned():
    transformers = pytest.importorskip("transformers")
    from graphprune.models.hf_zoo import build_hf

    transformers.logging.set_verbosity_error()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, inputs = build_hf("t5")
        heads = model.config.num_heads
        result = graphprune.prune(model, 0.3, example_inputs=inputs)
    assert result.verification.status == "exact"
    cross = result.model.decoder.block[0].layer[1].EncDecAttention
    assert cross.n_heads < heads
    assert cross.q.weight.shape[0] == cross.n_heads * cross.key_value_proj_dim
