"""The oracle's other shapes of a concrete trace replayed on the module (graphprune/oracle_replay.py).

Instead of tracing the module again at the second verification shape, the
unpruned module runs under a pre-dispatch mode that gives the k-th call of each
op the masks and kept-channel norms of the k-th traced node. These tests show
the replayed references are bit for bit those of a second trace (on decoders
whose trace at batch 1 skips calls a batch of 2 makes, and on hidden-size
prunes, where the norms are replayed too), that a call that does not match its
traced node or an op called a different number of times sends the check back
to a trace, and that a prune that needs the noise floor is redone with traced
checks.
"""

from __future__ import annotations

import pytest
import torch

import graphprune
import graphprune.oracle_replay as oracle_replay
import graphprune.verify_torch as verify_torch
from graphprune.channels import analyse
from graphprune.frontends.fx import trace
from graphprune.importance import importance
from graphprune.models.hf_zoo import build_hf
from graphprune.selection import select
from graphprune.torch_prune import without_cache

pytest.importorskip("transformers")


def _references(name: str, replay: bool, ratio: float = 0.3):
    model, x = build_hf(name)
    with without_cache(model):
        traced = trace(model, x, concrete=True)
        assert traced.tracer == "concrete"
        analysis = analyse(traced.graph)
        plan = select(analysis, importance(analysis, "l2"), ratio)
        return traced, plan, verify_torch.reference_outputs(traced, plan, verify_torch.check_inputs(x),
                                                           replay=replay)


@pytest.mark.parametrize("name", ["llama", "bert"])
def test_a_replayed_check_equals_a_traced_one(name):
    traced, plan, (replayed, used, unhandled, graphs) = _references(name, replay=True)
    assert [g.gm is None for g in graphs] == [False, True]  # the example on the trace, the other replayed
    assert {len(verify_torch.norm_masks(traced, plan)[0])} != {0}  # hidden size pruned: norms replayed
    _, _, (retraced, used2, unhandled2, _) = _references(name, replay=False)
    assert [tuple(u[0].shape) for u in used] == [tuple(u[0].shape) for u in used2] == [(1, 16), (2, 8)]
    assert unhandled == unhandled2
    for a, b in zip(replayed, retraced):
        assert len(a) == len(b) and all(torch.equal(p, q) for p, q in zip(a, b))
    model, _ = build_hf(name)
    with torch.no_grad(), without_cache(model):
        plain = model(*used[1])
    logits = plain[0] if isinstance(plain, tuple) else next(iter(plain.values()))
    assert not torch.allclose(replayed[1][0], logits, rtol=1e-3, atol=1e-4)  # the masks took effect


def test_a_call_unlike_its_traced_node_is_checked_on_a_trace(monkeypatch):
    """A masked input that is not a tensor of the mask's length, or a masked op called more often
    than traced, makes the replay stand down; the check is then traced as before."""
    calls = []
    original = oracle_replay._Replay.__torch_dispatch__

    def shifted(self, func, types, args=(), kwargs=None):  # one extra linear: every later one shifts
        if func is torch.ops.aten.linear.default and not calls:
            calls.append(func)
            original(self, func, types, args, kwargs)
        return original(self, func, types, args, kwargs)

    monkeypatch.setattr(oracle_replay._Replay, "__torch_dispatch__", shifted)
    _, _, (references, used, _, graphs) = _references("llama", replay=True)
    assert calls and [g.gm is None for g in graphs] == [False, False]
    _, _, (retraced, _, _, _) = _references("llama", replay=False)
    assert all(torch.equal(p, q) for p, q in zip(references[1], retraced[1]))

    monkeypatch.setattr(oracle_replay._Replay, "__torch_dispatch__", original)
    traced, plan, _ = _references("llama", replay=True)
    masks = verify_torch.oracle_masks(traced, plan)
    consumer = next(iter(masks))
    source, axis, keep = masks[consumer][0]
    wrong = {consumer: [(source, axis, torch.ones(keep.numel() + 1, dtype=torch.bool))]}
    other = verify_torch.check_inputs(traced.example)[1]
    with torch.no_grad(), without_cache(traced.module):
        assert oracle_replay.replay_masked(traced, other, wrong, {}) is None
        assert oracle_replay.replay_masked(traced, other, masks, {}) is not None


def test_a_prune_that_needs_the_noise_floor_is_redone_with_traced_checks(monkeypatch):
    """The float64 noise floor runs the oracle's graph at each check; a replayed check has none,
    so the prune is undone and redone with the checks traced, once, on the module as it was."""
    started = []
    original = verify_torch.reference_outputs

    def counted(*args, **kwargs):
        started.append(kwargs.get("replay", True))
        return original(*args, **kwargs)

    monkeypatch.setattr("graphprune.torch_prune.reference_outputs", counted)
    model, x = build_hf("llama")
    result = graphprune.prune(model, 0.3, example_inputs=x, tolerance=1e-12)
    assert started == [True, False]
    check = result.verification
    assert check.ok and check.noise_floor > 0 and check.tolerance == pytest.approx(16 * check.noise_floor)
    assert result.report["torch"]["tracer"] == "concrete"
    assert model.model.layers[0].mlp.up_proj.out_features == result.model.model.layers[0].mlp.up_proj.out_features
