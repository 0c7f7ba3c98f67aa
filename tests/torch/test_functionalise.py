"""In-place ops of exported graphs rewritten locally (graphprune.frontends.functionalise)."""

from __future__ import annotations

import torch
from torch import nn

from graphprune.frontends.functionalise import functionalise


def _exported(module, *args):
    return torch.export.export(module, args, strict=False).module(check_guards=False)


def _mutations(gm) -> list[str]:
    return [str(n.target) for n in gm.graph.nodes if n.op == "call_function"
            and isinstance(n.target, torch._ops.OpOverload) and n.target._schema.is_mutable]


class AddInPlace(nn.Module):  # T5: position_bias = bias + mask; position_bias += ...
    def forward(self, a, b):
        x = a + b
        x += b * 3
        return x * 2


class DivideBySum(nn.Module):  # Mixtral: w /= w.sum(-1): the sum reads the old value
    def forward(self, a):
        w, _ = torch.topk(a.softmax(-1), 2, dim=-1)
        s = w.sum(-1, keepdim=True)
        w /= s
        return w, s


class ScatterIntoEmpty(nn.Module):  # Mixtral's experts: index_put_ into empty_like
    def forward(self, a, idx):
        out = torch.empty_like(a)
        out[idx] = a[idx] * 2
        out[~idx] = a[~idx]
        return out


class WriteThroughView(nn.Module):
    def forward(self, a):
        x = a * 2
        x[:, :2].zero_()
        return x


class UpdateBuffer(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("count", torch.zeros(3))

    def forward(self, a):
        self.count.add_(a.sum(0))
        return a * self.count


def _check(module, *args):
    gm = _exported(module, *args)
    assert _mutations(gm), "the export keeps the in-place op"
    expected = module(*args)
    assert functionalise(gm)
    assert not _mutations(gm)
    got = gm(*args)
    for e, g in zip(expected if isinstance(expected, tuple) else (expected,), got if isinstance(got, tuple) else (got,)):
        torch.testing.assert_close(g, e)


def test_an_in_place_add_on_a_fresh_sum_becomes_functional():
    _check(AddInPlace(), torch.randn(2, 4), torch.randn(2, 4))


def test_users_before_the_mutation_keep_reading_the_old_value():
    _check(DivideBySum(), torch.randn(3, 5))


def test_index_put_into_a_fresh_tensor_becomes_functional():
    a = torch.randn(6, 4)
    _check(ScatterIntoEmpty(), a, a[:, 0] > 0)


def test_writes_through_a_view_or_into_a_buffer_leave_the_graph_alone():
    for module, args in ((WriteThroughView(), (torch.randn(3, 4),)), (UpdateBuffer(), (torch.randn(2, 3),))):
        gm = _exported(module, *args)
        before = [str(n) for n in gm.graph.nodes]
        assert _mutations(gm) and not functionalise(gm)
        assert [str(n) for n in gm.graph.nodes] == before
