"""Translations of the ops Hugging Face transformers and timm models are made of, on the models themselves.

Tiny configurations with random weights (nothing is downloaded). Each test prunes at 0.5 and checks
the report against the model's own structure: Hugging Face exports through ``torch.export`` (ATen
``embedding``, ``addmm``, ``pow``), timm traces symbolically (``scaled_dot_product_attention`` with
``attn_mask``/``is_causal`` placeholders, attention biases gathered by an index buffer, ``addcmul``).
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch

import graphprune

transformers = pytest.importorskip("transformers")
timm = pytest.importorskip("timm")


def kept(result, name: str, axis: int) -> list[int]:
    return result.report["initializers"][name][str(axis)]


def heads_of(keep: list[int], head_dim: int) -> list[int]:
    """The whole heads a kept feature list is made of (every kept head keeps all its dims)."""
    heads = sorted({i // head_dim for i in keep})
    assert keep == [h * head_dim + d for h in heads for d in range(head_dim)], keep
    return heads


def group_of(result, parameter: str) -> list[str]:
    """The parameter slices of the (pruned or pinned) group holding ``parameter``."""
    for g in result.report["groups"] + result.report["pinned"]:
        if parameter in g["parameters"]:
            return g["parameters"]
    raise AssertionError(f"{parameter} is in no group")


def leaves(out) -> list[torch.Tensor]:
    return [t for t in torch.utils._pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]


@pytest.fixture(autouse=True)
def _quiet():
    transformers.logging.set_verbosity_error()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


# -- Hugging Face (torch.export: aten.embedding, aten.addmm, aten.pow) ----------------------------

EMBED, HEADS, INNER = 128, 4, 256


def _gpt2():
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_embd=EMBED, n_head=HEADS, n_inner=INNER, n_layer=1, vocab_size=1000,
                                     n_positions=64, use_cache=False, bos_token_id=0, eos_token_id=0)
    return transformers.GPT2LMHeadModel(config).eval()


def test_gpt2_conv1d_addmm_prunes_heads_and_mlp_exactly():
    """GPT-2's ``Conv1D`` is ``addmm(bias, x, weight[in, out])``; c_attn is a fused q|k|v ``[E, 3E]``."""
    model, ids = _gpt2(), torch.randint(0, 1000, (1, 12))
    original = copy.deepcopy(model)
    # the residual stream runs through every LayerNorm (approximate): pin it, prune heads and MLP
    result = graphprune.prune(model, 0.5, example_inputs=(ids,), keep=r"ln_")
    info = result.report["torch"]
    assert info["tracer"] == "torch.export" and info["untranslated_calls"] == []
    assert result.verification.status == "exact", result.verification
    head_dim = EMBED // HEADS
    removed = {}
    for layer in range(model.config.n_layer):
        prefix = f"transformer.h.{layer}."
        fused = kept(result, prefix + "attn.c_attn.weight", 1)  # out = axis 1 of a Conv1D weight
        assert set(result.report["initializers"][prefix + "attn.c_attn.weight"]) == {"1"}
        assert kept(result, prefix + "attn.c_attn.bias", 0) == fused
        q, k, v = ([i - j * EMBED for i in fused if j * EMBED <= i < (j + 1) * EMBED] for j in range(3))
        assert q == k == v and len(heads_of(q, head_dim)) == HEADS // 2
        assert kept(result, prefix + "attn.c_proj.weight", 0) == v  # in = axis 0
        hidden = kept(result, prefix + "mlp.c_fc.weight", 1)
        assert len(hidden) == INNER // 2
        assert kept(result, prefix + "mlp.c_fc.bias", 0) == hidden == kept(result, prefix + "mlp.c_proj.weight", 0)
        assert set(result.report["initializers"][prefix + "mlp.c_proj.weight"]) == {"0"}
        for name, keep, size in (("attn.c_proj.weight", v, EMBED), ("mlp.c_proj.weight", hidden, INNER)):
            removed[prefix + name] = [i for i in range(size) if i not in keep]
    # independent oracle: the original with the removed heads' and units' c_proj rows zeroed
    params = dict(original.named_parameters())
    with torch.no_grad():
        for name, gone in removed.items():
            params[name].index_fill_(0, torch.tensor(gone), 0.0)
        for got, want in zip(leaves(result.model(ids)), leaves(original(ids))):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_llama_embedding_and_rms_norm_pow_are_translated():
    """LLaMA's embedding (aten.embedding) and RMSNorm (``pow(x, 2)``) translate: nothing is opaque.
    (BERT adds nothing new: its embeddings are the same aten.embedding.)"""
    torch.manual_seed(0)
    config = transformers.LlamaConfig(hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                                      intermediate_size=128, num_hidden_layers=1, vocab_size=1000,
                                      max_position_embeddings=64, use_cache=False)
    model = transformers.LlamaForCausalLM(config).eval()
    result = graphprune.prune(model, 0.5, example_inputs=(torch.randint(0, 1000, (1, 12)),))
    assert result.report["torch"]["untranslated_calls"] == []
    assert len(kept(result, "model.layers.0.mlp.down_proj.weight", 1)) == 64  # the MLP's intermediate
    group = group_of(result, "model.embed_tokens.weight[axis 1]")  # the width is the residual stream
    assert "model.embed_tokens.weight[axis 0]" not in group



def test_the_noise_floor_runs_through_torch_export_dtype_assertions():
    """torch.export writes float32 into dtype assertions and casts (LLaMA's rotary embedding):
    the float64 oracle behind the noise floor widens them instead of failing (it returned 0.0
    there, so a correct prune of a deep model could be rejected for float32 rounding)."""
    from graphprune.channels import analyse
    from graphprune.frontends.fx import trace
    from graphprune.importance import importance
    from graphprune.selection import select
    from graphprune.torch_prune import without_cache
    from graphprune.verify_torch import OracleGraph, check_inputs, noise_floor, reference_outputs, snapshot

    torch.manual_seed(0)
    config = transformers.LlamaConfig(hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                                      intermediate_size=128, num_hidden_layers=2, vocab_size=1000,
                                      max_position_embeddings=64)
    model = transformers.LlamaForCausalLM(config).eval()
    example = (torch.randint(0, 1000, (1, 12)),)
    with without_cache(model):
        traced = trace(model, example)
        analysis = analyse(traced.graph)
        analysis.pin_approximate()
        plan = select(analysis, importance(analysis, "l2"), 0.5)
        references, checks, _, graphs = reference_outputs(traced, plan, check_inputs(example))
        first = OracleGraph(snapshot(graphs[0].gm), graphs[0].masks, graphs[0].norms)
        floor = noise_floor(traced, plan, checks[:1], references[:1], [first])
    assert 1e-10 < floor < 1e-5  # float32 against float64: rounding, not 0 (not run) nor large
    assert all(p.dtype == torch.float32 for p in model.parameters())  # the float64 copy was private


# -- timm (symbolic trace) -----------------------------------------------------------------------

def test_deit_sdpa_with_placeholder_mask_prunes_heads():
    """timm's Attention calls sdpa with ``attn_mask``/``is_causal`` passed down from the model's forward."""
    torch.manual_seed(0)
    model = timm.create_model("deit_tiny_patch16_224", pretrained=False, img_size=32, depth=2).eval()
    result = graphprune.prune(model, 0.5, example_inputs=torch.randn(1, 3, 32, 32),
                              keep=r"norm[12]|^norm$|^fc_norm")  # pin the residual stream (LayerNorm)
    assert result.report["torch"]["tracer"] == "symbolic_trace"
    assert result.report["torch"]["untranslated_calls"] == []
    assert result.verification.status == "exact", result.verification
    for block in (0, 1):
        qkv = kept(result, f"blocks.{block}.attn.qkv.weight", 0)
        q = [i for i in qkv if i < 192]
        assert len(heads_of(q, 64)) == 2  # 3 heads of 64, half of them rounded up kept
        assert kept(result, f"blocks.{block}.attn.proj.weight", 1) == [i - 384 for i in qkv if i >= 384]


@pytest.mark.parametrize("name", ["levit", "efficientformerv2"])
def test_attention_biases_indexed_by_a_buffer_follow_the_heads(name):
    """``attention_biases[:, attention_bias_idxs]`` (``[heads, P]`` by ``[N, N]``) is a Gather on axis 1."""
    from timm.models import efficientformer_v2, levit

    torch.manual_seed(0)
    if name == "levit":
        model, x = levit.Attention(dim=32, key_dim=8, num_heads=4, attn_ratio=2, resolution=4), torch.randn(2, 16, 32)
        q_weight = "qkv.linear.weight"  # rows (head, [q 8 | k 8 | v 16])
    else:
        model = efficientformer_v2.Attention2d(dim=32, key_dim=8, num_heads=4, attn_ratio=2, resolution=4)
        x, q_weight = torch.randn(2, 32, 4, 4), "q.conv.weight"  # rows (head, 8)
    model.eval()  # (timm's train() returns None here)
    result = graphprune.prune(model, 0.5, example_inputs=x)
    assert result.report["torch"]["untranslated_calls"] == []
    assert result.verification.status == "exact", result.verification
    per_head = 32 if name == "levit" else 8
    heads = heads_of(kept(result, q_weight, 0), per_head)
    assert len(heads) == 2 and kept(result, "attention_biases", 0) == heads
    assert set(result.report["initializers"]["attention_biases"]) == {"0"}


def test_convnextv2_grn_addcmul_couples_its_parameters():
    """GRN ends in ``addcmul(bias, weight, x·n)``: its parameters join the MLP's hidden group (which its
    channel mean, a ReduceMean over the channels, decides on)."""
    torch.manual_seed(0)
    model = timm.create_model("convnextv2_atto", pretrained=False, depths=(1, 1, 1, 1), dims=(16, 32, 32, 32))
    result = graphprune.prune(model.eval(), 0.5, example_inputs=torch.randn(1, 3, 32, 32))
    assert result.report["torch"]["untranslated_calls"] == []
    group = group_of(result, "stages.0.blocks.0.mlp.fc1.weight[axis 0]")
    for p in ("grn.weight", "grn.bias", "fc2.weight"):
        assert any(s.startswith(f"stages.0.blocks.0.mlp.{p}[axis") for s in group), (p, group)
