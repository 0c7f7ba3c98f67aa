"""nn.MultiheadAttention traced as its math (graphprune.frontends.attention_trace)."""

from __future__ import annotations

import itertools

import pytest
import torch
import torchvision
from torch import nn

import graphprune
from graphprune.frontends.attention_trace import symbolic_trace


class SelfAttention(nn.Module):
    def __init__(self, batch_first=True, bias=True, need_weights=False, average=True, **kwargs):
        super().__init__()
        self.inp = nn.Linear(16, 32)
        self.attn = nn.MultiheadAttention(32, 4, bias=bias, batch_first=batch_first, **kwargs)
        self.out = nn.Linear(32, 8)
        self.need_weights, self.average = need_weights, average

    def forward(self, x):
        h = self.inp(x)
        y, w = self.attn(h, h, h, need_weights=self.need_weights, average_attn_weights=self.average)
        return (self.out(y), w) if w is not None else self.out(y)


class CrossAttention(SelfAttention):
    def forward(self, x):
        h = self.inp(x)
        return self.out(self.attn(h, h.flip(-2), h.flip(-2), need_weights=False)[0])


class MaskedAttention(SelfAttention):
    def forward(self, x):
        h = self.inp(x)
        mask = torch.ones(6, 6, dtype=torch.bool).triu(1)
        return self.out(self.attn(h, h, h, attn_mask=mask, need_weights=False)[0])


def _leaves(gm) -> int:
    return sum(n.op == "call_module" and isinstance(gm.get_submodule(n.target), nn.MultiheadAttention)
               for n in gm.graph.nodes)


@pytest.mark.parametrize("batch_first, bias, need_weights, average",
                         list(itertools.product([True, False], repeat=4)))
def test_traced_attention_computes_what_the_module_computes(batch_first, bias, need_weights, average):
    torch.manual_seed(0)
    model = SelfAttention(batch_first, bias, need_weights, average).eval()
    gm = symbolic_trace(model)
    assert _leaves(gm) == 0
    for shape in [(3, 5, 16), (5, 16)]:  # batched and unbatched
        x = torch.randn(shape)
        want, got = model(x), gm(x)
        want, got = (want, got) if isinstance(want, tuple) else ((want,), (got,))
        assert len(want) == len(got)
        for a, b in zip(want, got):
            assert a.shape == b.shape
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)


class DefaultCall(SelfAttention):
    def forward(self, x):
        h = self.inp(x)
        return self.out(self.attn(h, h, h)[0])  # need_weights=True by default, weights dropped


def test_weights_nothing_reads_leave_no_nodes():
    model = DefaultCall().eval()
    gm = symbolic_trace(model)
    assert _leaves(gm) == 0
    targets = [n.target for n in gm.graph.nodes]
    assert torch.softmax not in targets and "mean" not in targets
    assert torch.nn.functional.scaled_dot_product_attention in targets


@pytest.mark.parametrize("cls, kwargs", [(CrossAttention, {}), (MaskedAttention, {}),
                                         (SelfAttention, {"dropout": 0.1}), (SelfAttention, {"add_bias_kv": True}),
                                         (SelfAttention, {"add_zero_attn": True})],
                         ids=["cross", "mask", "dropout", "bias_kv", "zero_attn"])
def test_what_the_math_does_not_state_stays_a_leaf(cls, kwargs):
    model = cls(**kwargs).eval()
    assert _leaves(symbolic_trace(model)) == 1


def test_torchvision_vit_prunes_on_the_symbolic_trace():
    """No torch.export: heads, MLP and the stream pruned; the GraphModule runs at another batch and trains."""
    torch.manual_seed(0)
    model = torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=4,
                                                 hidden_dim=64, mlp_dim=128, num_classes=10).eval()
    x = torch.randn(1, 3, 32, 32)
    result = graphprune.prune(model, 0.5, example_inputs=x)
    assert result.report["torch"]["tracer"] == "symbolic_trace"
    assert result.verification.ok
    heads = [g for g in result.report["groups"] if g["channels"] == 4]
    assert len(heads) == 2 and all(g["removed"] == 2 for g in heads)
    assert result.report["params"][1] < 0.5 * result.report["params"][0]
    pruned = result.model
    pruned.train()
    pruned.eval()
    assert pruned(torch.randn(3, 3, 32, 32)).shape == (3, 10)
    pruned.train()
    pruned(torch.randn(2, 3, 32, 32)).sum().backward()
    assert all(p.grad is not None for p in pruned.parameters() if p.requires_grad)


@pytest.mark.parametrize("batch_first", [True, False])
def test_weights_the_model_returns_pin_the_heads(batch_first):
    """Averaged weights are a mean over heads: pruning a head would change them."""
    torch.manual_seed(0)
    model = SelfAttention(batch_first, need_weights=True).eval()
    result = graphprune.prune(model, 0.5, example_inputs=torch.randn(2, 6, 16))
    assert result.verification.ok
    assert not any(g["channels"] == 4 and g["removed"] for g in result.report["groups"])
