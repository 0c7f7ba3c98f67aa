"""The concrete trace of Hugging Face models (graphprune/frontends/concrete.py).

A concrete trace holds the example's sizes and branches, so it may serve the
analysis and the oracle but never be returned: these tests show it is used
where it can be, that the oracle, when it traces the second verification shape
rather than replaying it (tests/torch/test_oracle_replay.py), finds its masks there, that a prune it cannot serve is redone from torch.export
(with the module restored in between), and that a branch on float values
sends the prune to torch.export.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import graphprune
import graphprune.torch_prune as torch_prune
from graphprune.channels import analyse
from graphprune.frontends import concrete
from graphprune.frontends.fx import trace
from graphprune.importance import importance
from graphprune.models.hf_zoo import build_hf
from graphprune.selection import select
from graphprune.torch_prune import without_cache
from graphprune.verify_torch import check_inputs, oracle_masks, reference_outputs

transformers = pytest.importorskip("transformers")


def test_a_hugging_face_decoder_is_pruned_from_a_concrete_trace():
    model, x = build_hf("llama")
    result = graphprune.prune(model, 0.3, example_inputs=x)
    info = result.report["torch"]
    assert info["tracer"] == "concrete" and info["returned"] == "original module"
    assert result.verification.status == "exact"
    assert result.verification.shapes == [[[1, 16]], [[2, 8]]]  # another batch and length, re-traced
    assert result.model.model.layers[0].mlp.up_proj.out_features < 512
    with torch.no_grad():  # the class, not the trace: it runs at any length
        assert result.model(torch.randint(3, 1000, (3, 29))).logits.shape == (3, 29, 1000)


def test_the_oracle_places_its_masks_on_a_trace_with_other_node_names():
    """At batch 1 the trace skips a no-op ``expand`` that batch 2 records, so the expands do not
    align; the masks follow each consumer by op and occurrence, each input by argument position."""
    model, x = build_hf("llama")
    with without_cache(model):
        traced = trace(model, x, concrete=True)
        assert traced.tracer == "concrete"
        other = (torch.randint(3, 1000, (2, 11)),)
        gm, names = concrete.graph_at(traced, other)
        assert len(gm.graph.nodes) != len(traced.gm.graph.nodes)
        unaligned = [n.name for n in traced.gm.graph.nodes if n.op == "call_function" and n.name not in names]
        assert unaligned and all(name.startswith("expand") for name in unaligned)
        analysis = analyse(traced.graph)
        plan = select(analysis, importance(analysis, "l2"), 0.3)
        masks = oracle_masks(traced, plan)
        references, used, _, graphs = reference_outputs(traced, plan, check_inputs(x), replay=False)
    assert [tuple(u[0].shape) for u in used] == [(1, 16), (2, 8)]
    second = graphs[1]
    assert second.gm is not traced.gm and len(second.masks) == len(masks)
    by_name = {n.name: n for n in second.gm.graph.nodes}
    here = {n.name: n for n in traced.gm.graph.nodes}
    for consumer, entries in masks.items():
        there = names[consumer]
        assert by_name[there].target == here[consumer].target
        for (source, _, keep), (moved, _, keep2) in zip(entries, second.masks[there]):
            assert torch.equal(keep, keep2) and by_name[moved] in by_name[there].all_input_nodes


def test_a_prune_the_concrete_trace_cannot_serve_is_redone_from_torch_export(monkeypatch):
    """Where the class is not kept (forced here), the module is restored and pruned again from
    torch.export: the same plan, pruned once, the graph shape-generic."""
    expected = graphprune.prune(build_hf("gpt2")[0], 0.3, example_inputs=build_hf("gpt2")[1])
    original = torch_prune._verify_first_passing

    def graph_for_concrete(traced, *args):
        module, verification, repaired, rounding, outputs = original(traced, *args)
        return (traced.gm if traced.tracer == "concrete" else module), verification, repaired, rounding, outputs

    monkeypatch.setattr(torch_prune, "_verify_first_passing", graph_for_concrete)
    model, x = build_hf("gpt2")
    result = graphprune.prune(model, 0.3, example_inputs=x)
    assert expected.report["torch"]["tracer"] == "concrete"
    assert result.report["torch"]["tracer"] == "torch.export"
    assert result.verification.status == "exact"
    assert result.report["params"] == expected.report["params"]  # not pruned twice
    assert {k: v.shape for k, v in result.model.state_dict().items()} == \
        {k: v.shape for k, v in expected.model.state_dict().items()}


class Routed(nn.Module):
    """A branch on an activation's value: only one of two experts reaches the trace."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(8, 16)
        self.left, self.right = nn.Linear(16, 16), nn.Linear(16, 16)
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        h = torch.relu(self.a(x))
        h = self.left(h) if h.mean() > 0.1 else self.right(h)
        return self.head(h)


def test_a_branch_on_float_values_refuses_the_concrete_trace():
    torch.manual_seed(0)
    with pytest.raises(ValueError, match="float"):
        concrete.concrete_trace(Routed().eval(), (torch.randn(2, 8),))
    tokens = nn.Embedding(10, 8)

    class Padded(nn.Module):  # a check on token ids alone is allowed
        def __init__(self):
            super().__init__()
            self.embed, self.head = tokens, nn.Linear(8, 4)

        def forward(self, ids):
            h = self.embed(ids)
            return self.head(h * 2 if bool((ids == 0).any()) else h)

    gm = concrete.concrete_trace(Padded().eval(), (torch.randint(1, 10, (2, 5)),))
    assert any(n.target == torch.ops.aten.item.default for n in gm.graph.nodes)


def test_a_branch_on_a_weight_refuses_the_concrete_trace():
    """Pruning changes weights, so a branch on a weight's value may go the other way afterwards."""

    class Gated(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.gate = nn.Linear(8, 8), nn.Parameter(torch.ones(8))

        def forward(self, ids):
            h = self.a(torch.nn.functional.one_hot(ids, 8).to(self.gate.dtype) @ torch.eye(8))
            return h * self.gate if bool((self.gate > 0).all()) else h  # bool all the way from the weight

    with pytest.raises(ValueError, match="float"):
        concrete.concrete_trace(Gated().eval(), (torch.randint(0, 8, (2, 5)),))
