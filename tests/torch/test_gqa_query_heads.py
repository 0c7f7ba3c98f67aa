"""Grouped-query attention on the PyTorch path: query heads removed inside every kv group.

``gqa_heads("query")`` keeps every key/value head and removes the same number
of query heads in each kv group, below the whole-group granularity (a ratio
under 1/kv heads). The result must verify exactly, keep its Hugging Face class
with ``num_attention_heads`` and the attention's ``num_key_value_groups``
updated, run at another batch and length, generate the same with and without
its cache, and reload with plain ``from_pretrained``.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import graphprune
from graphprune.channels import gqa_heads

transformers = pytest.importorskip("transformers")

HEAD_DIM = 16


def kept(result, name: str, axis: int) -> list[int]:
    return result.report["initializers"][name][str(axis)]


def heads_of(features: list[int], head_dim: int = HEAD_DIM) -> list[int]:
    heads = sorted({i // head_dim for i in features})
    assert features == [h * head_dim + d for h in heads for d in range(head_dim)], features
    return heads


def llama(heads: int, kv_heads: int, hidden: int, attention: str):
    torch.manual_seed(0)
    config = transformers.LlamaConfig(hidden_size=hidden, num_attention_heads=heads, num_key_value_heads=kv_heads,
                                      head_dim=HEAD_DIM, intermediate_size=64, num_hidden_layers=1, vocab_size=100,
                                      max_position_embeddings=64, use_cache=False, attn_implementation=attention)
    return transformers.LlamaForCausalLM(config).eval(), torch.randint(0, 100, (1, 8))


@pytest.mark.parametrize("heads, kv_heads, hidden, ratio, attention",
                         [(8, 2, 96, 0.25, "eager"), (9, 3, 144, 0.4, "sdpa")])
def test_llama_loses_query_heads_inside_every_kv_group(heads, kv_heads, hidden, ratio, attention, tmp_path):
    model, x = llama(heads, kv_heads, hidden, attention)
    group = heads // kv_heads
    with gqa_heads("query"):
        result = graphprune.prune(model, ratio, example_inputs=(x,), exact=True)
    assert result.verification.status == "exact", result.verification
    pruned = result.model
    assert pruned is model and result.report["torch"]["returned"] == "original module"
    new_group = group - int(group * ratio)
    assert new_group < group
    for layer in range(model.config.num_hidden_layers):
        p = f"model.layers.{layer}.self_attn."
        q = heads_of(kept(result, p + "q_proj.weight", 0))
        assert len(q) == kv_heads * new_group  # every kv group keeps the same query heads
        inside = [[h % group for h in q if h // group == g] for g in range(kv_heads)]
        assert all(i == inside[0] for i in inside)
        assert kept(result, p + "o_proj.weight", 1) == kept(result, p + "q_proj.weight", 0)
        assert p + "k_proj.weight" not in result.report["initializers"]  # kv heads kept
        attn = pruned.model.layers[layer].self_attn
        assert attn.num_key_value_groups == new_group
        assert attn.k_proj.out_features == kv_heads * HEAD_DIM
    assert pruned.config.num_attention_heads == kv_heads * new_group
    assert pruned.config.num_key_value_heads == kv_heads
    assert result.report["hf"]["config_fits"], result.report["hf"]

    other = torch.randint(0, 100, (3, 11))
    with torch.no_grad():
        logits = pruned(other).logits
        assert logits.shape == (3, 11, 100)
        cached = pruned.generate(x, max_new_tokens=3, do_sample=False, use_cache=True)
        plain = pruned.generate(x, max_new_tokens=3, do_sample=False, use_cache=False)
    assert torch.equal(cached, plain)
    pruned.save_pretrained(tmp_path)
    reloaded = transformers.LlamaForCausalLM.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(other).logits, logits, rtol=1e-4, atol=1e-5)


def test_llama_with_one_kv_head_loses_query_heads():
    """Multi-query attention: one kv head, so kv groups cannot go at all; query heads can."""
    model, x = llama(4, 1, 64, "eager")
    with gqa_heads("query"):
        result = graphprune.prune(model, 0.5, example_inputs=(x,), exact=True)
    assert result.verification.status == "exact", result.verification
    assert len(heads_of(kept(result, "model.layers.0.self_attn.q_proj.weight", 0))) == 2
    assert model.config.num_attention_heads == 2 and model.model.layers[0].self_attn.num_key_value_groups == 2
    with torch.no_grad():
        assert model(torch.randint(0, 100, (2, 5))).logits.shape == (2, 5, 100)


def test_default_prunes_nothing_below_a_whole_kv_group():
    model, x = llama(8, 2, 96, "eager")
    result = graphprune.prune(model, 0.25, example_inputs=(x,), exact=True)
    assert "model.layers.0.self_attn.q_proj.weight" not in result.report["initializers"]
    assert model.config.num_attention_heads == 8


class EnableGQA(nn.Module):
    """``scaled_dot_product_attention(..., enable_gqa=True)``: the translation repeats k/v itself."""

    def __init__(self, heads=4, kv_heads=2, dim=16):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, dim // heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, self.head_dim * kv_heads)
        self.v = nn.Linear(dim, self.head_dim * kv_heads)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, _ = x.shape
        q = self.q(x).view(B, N, -1, self.head_dim).transpose(1, 2)
        k = self.k(x).view(B, N, -1, self.head_dim).transpose(1, 2)
        v = self.v(x).view(B, N, -1, self.head_dim).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
        return self.proj(out.transpose(1, 2).reshape(B, N, -1))


@pytest.mark.parametrize("mode, kv_kept, q_kept", [("query", 2, 2), ("both", 1, 1)])
def test_sdpa_enable_gqa_prunes_query_heads_inside_groups(mode, kv_kept, q_kept):
    torch.manual_seed(0)
    m, x = EnableGQA().eval(), torch.randn(2, 5, 16)
    with gqa_heads(mode):
        result = graphprune.prune(m, 0.5, example_inputs=x)
    assert result.verification.status == "exact", result.verification
    q = heads_of(kept(result, "q.weight", 0), 4)
    kv = heads_of(kept(result, "k.weight", 0), 4) if "k.weight" in result.report["initializers"] else [0, 1]
    assert len(kv) == kv_kept and len(q) == q_kept
    assert all(h // 2 in kv for h in q)  # query head h reads kv head h // 2
    assert kept(result, "proj.weight", 1) == kept(result, "q.weight", 0)
    with torch.no_grad():
        assert result.model(torch.randn(3, 7, 16)).shape == (3, 7, 16)


def test_phi3_fused_qkv_keeps_its_key_and_value_rows():
    """Phi-3 slices q, k and v out of one ``qkv_proj``: only its query rows lose heads."""
    torch.manual_seed(0)
    config = transformers.Phi3Config(hidden_size=64, num_attention_heads=8, num_key_value_heads=2,
                                     intermediate_size=64, num_hidden_layers=1, vocab_size=100,
                                     max_position_embeddings=64, use_cache=False, pad_token_id=0)
    model, x = transformers.Phi3ForCausalLM(config).eval(), torch.randint(0, 100, (1, 8))
    with gqa_heads("query"):
        result = graphprune.prune(model, 0.5, example_inputs=(x,), exact=True)
    assert result.verification.status == "exact", result.verification
    rows = kept(result, "model.layers.0.self_attn.qkv_proj.weight", 0)
    q = heads_of([i for i in rows if i < 64], 8)
    assert len(q) == 4 and [h % 4 for h in q[:2]] == [h % 4 for h in q[2:]]
    assert [i for i in rows if i >= 64] == list(range(64, 96))  # k and v rows of both kv heads
    with torch.no_grad():
        assert result.model(torch.randint(0, 100, (2, 8))).logits.shape == (2, 8, 100)


def test_calibrated_query_head_scores_come_from_activations():
    """With calibration data the query-head group is ranked by its activations like every
    other group (no fall-back to weight norms), through the gqa_heads= argument."""
    model, x = llama(8, 2, 96, "eager")
    batches = [torch.randint(0, 100, (2, 8)) for _ in range(4)]
    kv = graphprune.prune(model, 0.25, example_inputs=(x,), exact=True, calibration=batches, repair="none")
    model, x = llama(8, 2, 96, "eager")
    query = graphprune.prune(model, 0.25, example_inputs=(x,), exact=True, calibration=batches, repair="none",
                             gqa_heads="query")
    assert query.verification.status == "exact"
    assert query.report["torch"]["importance_fallbacks"] == kv.report["torch"]["importance_fallbacks"]
    assert len(heads_of(kept(query, "model.layers.0.self_attn.q_proj.weight", 0))) == 6
