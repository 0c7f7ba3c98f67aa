"""The Hugging Face config fit's shortcut (graphprune/hf.py): a prune whose layers of one kind
ended with different sizes (a global ranking) is known not to fit a config of scalar sizes
without the search of candidate configs, and still reloads through the sidecar."""

from __future__ import annotations

import pytest
import torch

import graphprune
import graphprune.hf as hf
from graphprune.models.hf_zoo import build_hf

pytest.importorskip("transformers")


def _builds(monkeypatch) -> list:
    calls = []
    real = hf._build
    monkeypatch.setattr(hf, "_build", lambda *a: calls.append(a) or real(*a))
    return calls


def test_sizes_that_differ_by_layer_skip_the_search_and_reload(monkeypatch, tmp_path):
    model, x = build_hf("llama")
    result = graphprune.prune(model, 0.3, example_inputs=x, global_ranking=True)
    widths = [layer.mlp.up_proj.out_features for layer in model.model.layers]
    assert len(set(widths)) > 1  # the premise: per-layer sizes
    assert hf.sizes_differ_by_layer(model, hf._shapes(model))
    builds = _builds(monkeypatch)
    assert hf.fit_config(model, {512: set(widths)}) == (False, {})
    assert len(builds) == 1  # the original config's build only, no candidate
    assert result.report["hf"]["config_fits"] is False
    hf.save_pretrained(model, tmp_path)
    again = hf.from_pretrained(tmp_path)
    with torch.no_grad():
        assert torch.allclose(again(*x).logits, model(*x).logits, rtol=1e-4, atol=1e-5)  # (sdpa vs eager)


def test_uniform_sizes_are_searched_and_fit(monkeypatch):
    model, x = build_hf("llama")
    result = graphprune.prune(model, 0.3, example_inputs=x, round_to=8)
    assert not hf.sizes_differ_by_layer(model, hf._shapes(model))
    assert result.report["hf"]["config_fits"] is True
    assert result.report["hf"]["config_edits"]["intermediate_size"][1] == model.model.layers[0].mlp.up_proj.out_features


def _original_config(model, edits: dict) -> None:
    """Put the fitted fields back to the sizes before the prune (as the fit found the config)."""
    hf.undo_edits(model.config, {k: tuple(v) for k, v in edits.items()})


def test_independent_fields_fit_by_one_guess(monkeypatch):
    model, x = build_hf("mistral")
    edits = graphprune.prune(model, 0.3, example_inputs=x).report["hf"]["config_edits"]
    assert edits  # the premise: hidden and FFN width changed
    _original_config(model, edits)
    builds = _builds(monkeypatch)
    with hf.build_memo():
        fits, found = hf.fit_config(model, {old: {new} for old, new in edits.values()})
    assert fits and found == {k: tuple(v) for k, v in edits.items()}
    assert len(builds) == 2  # the original config and the guess: no search


def test_the_search_builds_one_layer_and_confirms_on_the_whole_model(monkeypatch):
    import transformers

    from graphprune.models import hf_zoo

    config = hf_zoo.config("t5")
    config.num_layers = config.num_decoder_layers = 3
    torch.manual_seed(0)
    model = transformers.AutoModelForSeq2SeqLM.from_config(config).eval()
    x = hf_zoo.example("t5", model.config)
    report = graphprune.prune(model, 0.3, example_inputs=x).report["hf"]
    # d_model equals the attention width (d_kv·heads): the guess prunes both, the search tells them apart
    assert report["config_fits"] and "d_model" not in report["config_edits"]
    edits = report["config_edits"]
    _original_config(model, edits)
    builds = _builds(monkeypatch)
    with hf.build_memo():
        fits, found = hf.fit_config(model, {old: {new} for old, new in edits.values()} | {256: {192}})
    assert fits and found == {k: tuple(v) for k, v in edits.items()}
    layers = [cfg.num_layers for _, cfg in builds]
    assert layers.count(1) >= 3 and layers.count(3) <= 3, layers  # searched on one layer, 3 whole builds
    reloaded = type(model)(model.config)
    assert hf._shapes(reloaded) == hf._shapes(model)


def test_without_verification_the_fit_runs_its_own_forward():
    model, x = build_hf("mistral")
    report = graphprune.prune(model, 0.3, example_inputs=x, verify=False).report["hf"]
    assert report["config_fits"] and report["config_edits"]
    assert hf._shapes(type(model)(model.config)) == hf._shapes(model)
