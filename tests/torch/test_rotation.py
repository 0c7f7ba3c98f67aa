"""Residual-stream rotation (graphprune.rotation) and the RMSNorm rescale of the repair."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import graphprune
from graphprune.channels import analyse
from graphprune.errors import InputError
from graphprune.frontends.fx import trace
from graphprune.rms_norms import rms_norms
from graphprune.rotation import stream_groups
from graphprune.torch_calibration import collect_statistics
from graphprune.torch_prune import without_cache
from graphprune.torch_rotation import rotate_streams

transformers = pytest.importorskip("transformers")

HIDDEN, VOCAB = 64, 128


def _llama(tied: bool = True, seed: int = 0):
    config = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=96,
                                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                      tie_word_embeddings=tied)
    torch.manual_seed(seed)
    model = transformers.LlamaForCausalLM(config).eval()
    with torch.no_grad():  # trained norms are not all ones: folding them must matter
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    return model


def _tokens(n: int, rows: int = 4, length: int = 16, seed: int = 1) -> list[tuple[torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randint(0, VOCAB, (rows, length), generator=g),) for _ in range(n)]


def _logits(model, batches):
    with torch.no_grad():
        return [model(*b).logits for b in batches]


def _stream_statistics(model, batches):
    """Second moments at every RMSNorm reader of the stream group (the normalised stream)."""
    traced = trace(model, batches[0])
    analysis = analyse(traced.graph)
    (gid,) = stream_groups(analysis)
    norms = rms_norms(analysis, gid)
    wanted = {(n.readers[0].tensor, n.readers[0].axis): HIDDEN for n in norms}
    return collect_statistics(traced, batches, wanted, gram=set(wanted)), norms


@pytest.mark.parametrize("tied", [True, False])
def test_rotation_keeps_the_function_and_diagonalises_the_stream(tied):
    model = _llama(tied)
    batches, checks = _tokens(6), _tokens(2, seed=7)
    with without_cache(model):
        before = _logits(model, checks)
        traced = trace(model, batches[0])
        report = rotate_streams(traced, analyse(traced.graph), batches, checks)
        after = _logits(model, checks)
        stats, norms = _stream_statistics(model, batches)
    (rotated,) = report["rotated"]
    assert rotated["folded_norm_scales"] == 5  # two per layer and the final norm
    for a, b in zip(before, after):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    assert (model.lm_head.weight is model.model.embed_tokens.weight) is False
    assert rotated["untied"] == (["lm_head.weight"] if tied else [])
    assert model.config.tie_word_embeddings is False
    for norm in norms:
        assert np.allclose(norm.readers and model.get_parameter(norm.scale).detach().numpy(), 1.0)
    # the rotation diagonalises the sum of the normalised stream's second moments, energy first
    total = sum(st.moments(centred=False) for st in stats.values())
    off = total - np.diag(np.diag(total))
    assert np.abs(off).max() < 1e-3 * np.abs(np.diag(total)).max()
    assert np.all(np.diff(np.diag(total)) <= 1e-6 * np.diag(total).max())


def _low_rank_stream(model, rank: int):
    """Every writer of the residual stream projected onto one ``rank``-dim subspace, so the
    stream never leaves it: a rotation finds it and the other directions carry nothing."""
    g = torch.Generator().manual_seed(3)
    basis, _ = torch.linalg.qr(torch.randn(HIDDEN, rank, generator=g))
    projector = basis @ basis.T
    with torch.no_grad():
        embed = model.model.embed_tokens.weight
        embed.copy_(embed @ projector)
        for layer in model.model.layers:
            for linear in (layer.self_attn.o_proj, layer.mlp.down_proj):
                linear.weight.copy_(projector @ linear.weight)
    return model


def test_pruning_a_rotated_low_rank_stream_loses_nothing():
    kept = 48
    plan = {"initializers": {"model.norm.weight": {"0": list(range(kept))}}}  # only the hidden size
    errors = {}
    for rotate in (True, False):
        model = _low_rank_stream(_llama(tied=False), kept)
        checks = _tokens(2, seed=9)
        before = _logits(model, checks)
        result = graphprune.prune(model, example_inputs=_tokens(1, rows=1)[0], calibration=_tokens(8),
                                  plan=plan, rotate=rotate)
        assert result.verification.ok
        assert result.model.model.norm.weight.shape == (kept,)
        after = _logits(result.model, checks)
        errors[rotate] = max(float((a - b).norm() / b.norm()) for a, b in zip(after, before))
        if rotate:
            assert result.report["rotation"]["rotated"]
            assert any("norm rescale" in r for r in result.report["calibration"]["repair"]["repaired"])
    # the removed directions are empty after the rotation and the norm rescale restores √(d/K):
    # what is left is the norm's ε (not rescaled) and the ridge of the refit
    assert errors[True] < 1e-2
    assert errors[False] > 10 * errors[True]


def test_norm_rescale_restores_the_statistic_of_fewer_channels():
    model = _low_rank_stream(_llama(tied=False), 48)
    result = graphprune.prune(copy.deepcopy(model), example_inputs=_tokens(1, rows=1)[0],
                              calibration=_tokens(8), rotate=True, repair="lsq", ratio=0.25)
    factors = [float(r.split("x")[-1].rstrip(")")) for r in result.report["calibration"]["repair"]["repaired"]
               if "norm rescale" in r]
    assert factors and all(f > 1.0 for f in factors)  # energy concentrated in the kept channels
    assert result.verification.ok


def test_rotation_needs_calibration_and_modules():
    with pytest.raises(InputError, match="calibration"):
        graphprune.prune(_llama(), example_inputs=_tokens(1, rows=1)[0], rotate=True)


def test_layernorm_streams_are_not_rotated_and_say_why():
    config = transformers.GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=1, n_head=2, n_positions=32)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config).eval()
    result = graphprune.prune(model, example_inputs=_tokens(1, rows=1)[0], calibration=_tokens(4), rotate=True,
                              ratio=0.25)
    assert result.report["rotation"]["rotated"] == []
    assert "RMSNorm" in result.report["rotation"]["reason"]
