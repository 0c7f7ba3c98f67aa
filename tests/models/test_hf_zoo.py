"""Every Hugging Face family of the PyTorch path, zero configuration (models/hf_zoo.py).

Each model is pruned at ratio 0.3 as built; the result must verify (exact,
or approximate only through a norm), be smaller, keep running at another
batch and length, behave as an nn.Module, survive a save/reload round trip
with the same outputs and, for decoders, generate the same tokens with and
without its KV cache. The full sweep (both attention implementations) is
behind ``-m zoo``; a representative handful runs by default.
"""

from __future__ import annotations

import pytest
import torch

import graphprune
import graphprune.hf as ghf
from graphprune.models.hf_zoo import DECODERS, build_hf, example, hf_names

transformers = pytest.importorskip("transformers")

# families where nothing is prunable yet, with the reason (see the report's untranslated calls)
NOTHING_PRUNABLE: dict[str, str] = {}
DEFAULT = ["gpt2", "qwen3", "t5"]


def _leaves(out) -> list[torch.Tensor]:
    return [t for t in torch.utils._pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]


def check_family(name: str, attention: str, tmp_path) -> None:
    try:
        model, x = build_hf(name, attention)
    except ValueError as exc:
        if "does not support an attention implementation" in str(exc):
            pytest.skip(f"transformers: {name} has no {attention} attention")
        raise
    params_before = sum(p.numel() for p in model.parameters())
    result = graphprune.prune(model, 0.3, example_inputs=x)
    report = result.report
    assert result.verification.status in ("exact", "approximate"), result.verification
    if result.verification.status == "approximate":
        assert "norm" in result.verification.message.lower() or "statistic" in result.verification.message
    pruned = result.model
    if name in NOTHING_PRUNABLE:
        assert report["params"][1] == params_before
        return
    assert report["params"][1] < params_before, report["params"]
    assert report["torch"]["returned"] == "original module", report["torch"]
    assert type(pruned) is type(model)
    # an ordinary module: mode switches, and it runs at another batch and length
    pruned.train()
    pruned.eval()
    other = example(name, model.config, batch=3, length=10, seed=7)
    with torch.no_grad():
        expected = _leaves(pruned(*other))
    assert expected[0].shape[0] == 3
    # the round trip: save, reload, same outputs
    ghf.save_pretrained(pruned, tmp_path)
    reloaded = ghf.from_pretrained(tmp_path)
    with torch.no_grad():
        got = _leaves(reloaded(*other))
    torch.testing.assert_close(got[0], expected[0], rtol=1e-4, atol=1e-5)
    if report["hf"]["config_fits"]:  # plain transformers loading works too
        plain = type(model).from_pretrained(tmp_path).eval()
        with torch.no_grad():
            torch.testing.assert_close(_leaves(plain(*other))[0], expected[0], rtol=1e-4, atol=1e-5)
    if name in DECODERS:
        with torch.no_grad():
            cached = pruned.generate(x[0], max_new_tokens=5, do_sample=False, use_cache=True)
            plain = pruned.generate(x[0], max_new_tokens=5, do_sample=False, use_cache=False)
        assert torch.equal(cached, plain)


@pytest.mark.parametrize("name", DEFAULT)
def test_representative_families(name, tmp_path):
    check_family(name, "eager", tmp_path)


@pytest.mark.zoo
@pytest.mark.parametrize("attention", ["eager", "sdpa"])
@pytest.mark.parametrize("name", hf_names())
def test_every_family(name, attention, tmp_path):
    check_family(name, attention, tmp_path)


def test_a_real_checkpoint_config_with_the_cache_on_prunes_and_keeps_its_cache(tmp_path):
    """Checkpoints ship ``use_cache=True``: tracing must not trip over the cache it returns."""
    model, x = build_hf("llama")
    model.config.use_cache = True
    result = graphprune.prune(model, 0.3, example_inputs=x)
    assert model.config.use_cache is True
    with torch.no_grad():
        out = result.model(x[0], use_cache=True)
    assert out.past_key_values is not None and out.past_key_values.get_seq_length() == x[0].shape[1]


def test_exact_keeps_the_hidden_size(tmp_path):
    model, x = build_hf("qwen3")
    hidden = model.config.hidden_size
    result = graphprune.prune(model, 0.3, example_inputs=x, exact=True)
    assert result.verification.status == "exact"
    assert result.model.model.embed_tokens.weight.shape[1] == hidden
    assert result.model.model.layers[0].mlp.up_proj.weight.shape[0] < 512


def test_a_derived_head_width_is_stated_so_the_config_fits(tmp_path):
    """Qwen2 derives head_dim as hidden // heads unless the config states it: pruning the hidden
    size keeps the heads' width, so the fit adds head_dim and plain from_pretrained reloads it."""
    model, x = build_hf("qwen2")
    assert not hasattr(model.config, "head_dim")
    result = graphprune.prune(model, 0.3, example_inputs=x)
    fit = result.report["hf"]
    assert fit["config_fits"] and fit["config_edits"]["head_dim"] == [None, 32], fit
    model.save_pretrained(tmp_path)
    plain = type(model).from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(plain(*x).logits, model(*x).logits, rtol=1e-4, atol=1e-5)


def test_a_size_the_config_validation_refuses_is_named_with_the_fix():
    model, x = build_hf("llama")  # LLaMA's config requires hidden_size % heads == 0
    fit = graphprune.prune(model, 0.3, example_inputs=x).report["hf"]
    assert not fit["config_fits"] and "not a multiple" in fit["reason"] and "round_to" in fit["reason"]
    assert not hasattr(model.config, "head_dim") or model.config.head_dim == 32  # no edit left behind
    model, x = build_hf("llama")
    assert graphprune.prune(model, 0.3, example_inputs=x, round_to=8).report["hf"]["config_fits"]
