"""The torch oracle at less compute, proving the same property (graphprune/verify_torch.py).

Two savings: an image model is checked on one batch of B+1 that holds the
example's rows (instead of the example and a separate batch of B+1), and a
plain Linear/Conv with a masked input is computed over the kept input
channels (``W[:, kept] · x[kept]``) instead of over zeroed ones. The tests
show the references are those of the zeroing oracle, that a batch-locked or
wrongly sliced result still fails, and that token inputs keep both shapes.
"""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

import graphprune
import graphprune.verify_torch as verify_torch
from graphprune.channels import analyse
from graphprune.errors import VerificationError
from graphprune.frontends.fx import trace
from graphprune.importance import importance
from graphprune.selection import select


class ConvMLP(nn.Module):
    """Plain and grouped convs, a padded reflect conv, a Linear head: every kind _over_kept meets."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 16, 3, padding=1)
        self.b = nn.Conv2d(16, 16, 3, padding=1, padding_mode="reflect")
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.c = nn.Conv2d(16, 24, 1)
        self.fc1 = nn.Linear(24, 32)
        self.fc2 = nn.Linear(32, 5)

    def forward(self, x):
        x = torch.relu(self.b(torch.relu(self.a(x))))
        x = torch.relu(self.c(self.dw(x))).mean((2, 3))
        return self.fc2(torch.relu(self.fc1(x)))


def _plan(model, example, ratio=0.5):
    traced = trace(model, example)
    analysis = analyse(traced.graph)
    return traced, select(analysis, importance(analysis, "l2"), ratio)


def test_an_image_example_is_checked_on_one_larger_batch_holding_it():
    example = (torch.randn(1, 3, 12, 12),)
    merged = verify_torch._merged_batch(verify_torch.check_inputs(example))
    assert merged[0].shape == (2, 3, 12, 12)
    assert torch.equal(merged[0][:1], example[0])  # the user's example is one of the rows
    assert not torch.equal(merged[0][1], example[0][0])  # the other is redrawn
    tokens = (torch.randint(0, 100, (1, 16)),)  # batch and length vary: both sets stay
    assert verify_torch._merged_batch(verify_torch.check_inputs(tokens)) is None


def test_the_kept_channel_oracle_equals_the_zeroing_oracle(monkeypatch):
    torch.manual_seed(0)
    model = ConvMLP().eval()
    example = (torch.randn(1, 3, 12, 12),)
    traced, plan = _plan(model, example)
    assert plan.channels_removed
    checks = verify_torch.check_inputs(example)
    fast, used, _, _ = verify_torch.reference_outputs(traced, plan, checks)
    assert len(used) == 1 and used[0][0].shape[0] == 2

    calls = []
    original = verify_torch._over_kept
    monkeypatch.setattr(verify_torch, "_over_kept", lambda *a: calls.append(a[0]) or original(*a))
    verify_torch.reference_outputs(traced, plan, checks)
    kinds = {type(m).__name__ + ("/dw" if getattr(m, "groups", 1) > 1 else "") for m in calls}
    assert {"Conv2d", "Linear"} <= kinds  # the shortcut ran on both kinds
    monkeypatch.setattr(verify_torch, "_over_kept", lambda *a: None)  # every input zeroed instead
    zeroed, _, _, _ = verify_torch.reference_outputs(traced, plan, checks)
    assert torch.allclose(fast[0], zeroed[0], rtol=1e-5, atol=1e-6)
    unmasked = traced.gm(*used[0])
    assert not torch.allclose(fast[0], unmasked, rtol=1e-3, atol=1e-4)  # the masks took effect


def test_a_wrong_conv_slice_still_fails(monkeypatch):
    import graphprune.emit.torch as emit

    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    original = emit._slice_tensor

    def shuffled(traced, name, axes, emission, slots):
        if name == "layer2.0.conv2.weight":
            axes = {a: kept[::-1].copy() if a == 1 else kept for a, kept in axes.items()}
        return original(traced, name, axes, emission, slots)

    monkeypatch.setattr(emit, "_slice_tensor", shuffled)
    monkeypatch.setattr(emit, "_already_sliced", lambda *_: None)
    with pytest.raises(VerificationError):
        graphprune.prune(model, 0.5, example_inputs=torch.randn(1, 3, 64, 64))
    assert model.layer2[0].conv2.weight.shape == (128, 128, 3, 3)  # rolled back


def test_a_batch_locked_result_fails_the_merged_batch():
    """A result that only runs at the example's batch must not pass: the one check set is larger."""

    class Flatten(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3)
            self.fc = nn.Linear(8 * 6 * 6, 4)

        def forward(self, x):
            return self.fc(self.conv(x).view(x.shape[0], -1))

    torch.manual_seed(0)
    model = Flatten().eval()
    example = (torch.randn(1, 3, 8, 8),)
    traced, plan = _plan(model, example)
    references, used, _, _ = verify_torch.reference_outputs(traced, plan, verify_torch.check_inputs(example))
    locked = lambda x: model(x[:1])  # noqa: E731  drops every row but the example's
    verdict = verify_torch.compare_outputs(references, locked, used, 1e-4, None)
    assert verdict.status == "failed" and "shape" in verdict.message
    result = graphprune.prune(Flatten().eval(), 0.5, example_inputs=example)
    assert result.verification.status == "exact"
    assert result.verification.shapes == [[[2, 3, 8, 8]]]


def test_the_pre_emission_snapshot_is_the_unpruned_model():
    """The noise floor runs the model as it was before slicing: the snapshot must keep its
    parameters, size attributes (LayerNorm ``normalized_shape``, conv ``groups``) and the
    literals emission rewrites (a ``view`` size) while sharing the weights, not copying them."""

    class Mixed(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 16, 3, padding=1)
            self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
            self.norm = nn.LayerNorm(16)
            self.fc = nn.Linear(16 * 4 * 4, 6)

        def forward(self, x):
            x = self.dw(torch.relu(self.conv(x)))
            x = self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
            return self.fc(x.reshape(x.shape[0], 16 * 4 * 4))

    import graphprune.emit.torch as emit

    torch.manual_seed(0)
    model = Mixed().eval()
    example = (torch.randn(2, 3, 4, 4),)
    before = model(*example)
    traced, plan = _plan(model, example)
    copied = verify_torch.snapshot(traced.gm)
    assert copied.conv.weight is model.conv.weight  # shared, not copied
    emission = emit.emit_torch(traced, plan)
    assert model.conv.weight.shape[0] < 16 and emission.literals  # sliced, and a literal rewritten
    assert copied.conv.weight.shape[0] == 16 and copied.norm.normalized_shape == (16,)
    assert copied.dw.groups == 16 and model.dw.groups < 16
    assert torch.equal(copied(*example), before)
