"""Sizes a forward reads from a shared config, repaired like attributes (graphprune/emit/config_fields.py).

Phi-3's attention splits its fused qkv output at ``self.config.num_attention_heads
* head_dim``: with the heads pruned the class runs again only once the shared
config says the new count. These tests show that the class is kept (on the
concrete trace, with no second trace from torch.export), that only the field the
failing forward reads is set (not the coincidental ``num_hidden_layers`` = 2 =
the kv heads), that the fitted config reports it and reloads with plain
``from_pretrained``, and that a config field no failing forward reads is left.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import graphprune
from graphprune.emit.config_fields import repair_config_fields
from graphprune.models.hf_zoo import build_hf

transformers = pytest.importorskip("transformers")


def test_phi3_keeps_its_class_with_the_config_head_count_repaired(tmp_path):
    model, x = build_hf("phi3")
    layers, heads = model.config.num_hidden_layers, model.config.num_attention_heads
    assert layers == model.config.num_key_value_heads == 2  # the coincidence the repair must not take
    result = graphprune.prune(model, 0.5, example_inputs=x)
    torch_report = result.report["torch"]
    assert result.model is model and torch_report["tracer"] == "concrete", torch_report
    assert f"config.num_attention_heads: {heads} -> {heads // 2}" in torch_report["repaired_attributes"]
    assert model.config.num_attention_heads == heads // 2 and model.config.num_hidden_layers == layers
    assert result.report["hf"]["config_fits"]
    assert result.report["hf"]["config_edits"]["num_attention_heads"] == [heads, heads // 2]
    other = torch.randint(0, model.config.vocab_size, (3, 9))
    model.save_pretrained(tmp_path)
    reloaded = type(model).from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(other).logits, model(other).logits, rtol=1e-4, atol=1e-5)


class Config:
    """A config-like object (``to_dict``) shared by two modules."""

    def __init__(self):
        self.width, self.depth = 8, 8

    def to_dict(self):
        return dict(vars(self))


class Reads(nn.Module):
    def __init__(self, config, read: str):
        super().__init__()
        self.config, self.read = config, read

    def forward(self, x):
        return x.reshape(x.shape[0], getattr(self.config, self.read), -1)


def test_only_fields_a_failing_forward_reads_under_a_rewrite_are_set():
    config = Config()
    model = nn.Sequential(Reads(config, "width"))
    x = torch.randn(2, 4 * 3)  # as if pruned: the reshape to 8 rows no longer fits 12 values

    def runs():
        model(x)

    changes, undo = repair_config_fields(model, {"0": {8: {4}}}, runs)
    assert changes == ["config.width: 8 -> 4"] and config.depth == 8  # depth equals 8 but is not read
    runs()
    for step in reversed(undo):
        step()
    assert config.width == 8 and type(config) is Config
    changes, _ = repair_config_fields(model, {"other": {8: {4}}}, runs)  # no rewrite in the reader
    assert changes == [] and config.width == 8
