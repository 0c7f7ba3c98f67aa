"""The recorder behind the concrete trace (graphprune/frontends/recording.py).

Its promise is make_fx's real-mode pre-dispatch graph, node for node: same ops, same
arguments, same names, same metadata (shape, stride, dtype, device of every value) and
the same submodule stamps. These tests compare the two on real models and on a module
built to hit make_fx's special cases (literals and their constant propagation, ``bool``
of a tensor, tied weights, tensor attributes, tuple results, in-place ops, nested
inputs and outputs), and show what the recorder refuses goes to make_fx.
"""

from __future__ import annotations

import pytest
import torch
import torch.fx as fx
import torchvision
from torch import nn
from torch.utils import _pytree as pytree

from graphprune.frontends import concrete
from graphprune.frontends.recording import NotRecordable, record
from graphprune.models.hf_zoo import build_hf
from graphprune.torch_prune import without_cache


def _state(module):
    state = dict(module.named_parameters(remove_duplicate=False))
    state.update(module.named_buffers(remove_duplicate=False))
    return state


def _recorded(module, inputs):
    """As the concrete trace records: with an observer of the values (which must not change
    what is recorded)."""
    from graphprune.frontends.fx import Observed

    graph = fx.Graph()
    with concrete._module_stacks(module, lambda: graph):
        return record(module, inputs, _state(module), graph, Observed(set(module.state_dict().keys())))


def _canonical(gm: fx.GraphModule) -> list[tuple]:
    """Every node with its arguments as node positions and its value's metadata."""
    position = {}
    rows = []
    for i, n in enumerate(gm.graph.nodes):
        position[n] = i
        args, kwargs = fx.node.map_aggregate((n.args, n.kwargs),
                                             lambda a: ("node", position[a]) if isinstance(a, fx.Node) else a)
        value = n.meta.get("val")
        meta = [(tuple(v.shape), v.stride(), v.dtype, str(v.device)) if isinstance(v, torch.Tensor) else v
                for v in (value if isinstance(value, (list, tuple)) else [value])]
        rows.append((n.op, str(n.target), n.name, repr(args), repr(kwargs), repr(meta),
                     repr(n.meta.get("nn_module_stack"))))
    return rows


def _assert_same_as_make_fx(module, inputs):
    expected = concrete._make_fx_trace(module, inputs, _state(module))
    got = _recorded(module, inputs)
    assert _canonical(got) == _canonical(expected)
    flat = pytree.tree_leaves(inputs)
    with torch.no_grad():  # as the oracle runs them: a recorded grad-mode switch restores the traced mode
        outputs = list(zip(expected(*flat), got(*flat), strict=True))
    for a, b in outputs:
        assert torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b
    return got


class _SpecialCases(nn.Module):
    def __init__(self):
        super().__init__()
        self.first = nn.Linear(8, 8)
        self.last = nn.Linear(8, 8)
        self.last.weight = self.first.weight  # tied
        self.plain = torch.randn(8)  # a tensor attribute, neither parameter nor buffer
        self.register_buffer("bias", torch.ones(8))

    def forward(self, x, pair):
        y = self.first(x) + self.plain
        y = y * self.plain
        y = y + torch.arange(8)[None, :]  # a factory's result, read again by the next call
        k = torch.tensor(3)  # a literal: make_fx knows its value, so .item() of it records nothing
        if bool(k > 2):
            y = y + k.item()
        if bool(x.sum() > -1e9):  # bool of an activation: ne + item nodes
            y = y * 2
        a, b = y.split(4, dim=-1)  # a tuple result: one getitem per element
        a = a.clone()
        a.add_(1)  # in place: later reads of a see the add_
        z = torch.cat([a, b], -1) + self.bias + pair[0] * pair[1].mean()
        return {"out": self.last(z), "none": None, "aux": (a, 3)}


def test_special_cases_record_as_make_fx_traces_them():
    torch.manual_seed(0)
    module = _SpecialCases().eval()
    gm = _assert_same_as_make_fx(module, (torch.randn(2, 8), (torch.randn(2, 8), torch.randn(2, 8))))
    targets = [n.target for n in gm.graph.nodes]
    assert torch.ops.aten.item.default in targets and torch.ops.aten.ne.Scalar in targets
    assert "last.weight" in targets and "first.weight" not in targets  # a tied tensor: its last name
    assert any(str(t).startswith("_tensor_constant") for t in targets)


class _TracingAware(nn.Module):
    """A forward that takes another path when it sees no tracer: MultiheadAttention's fused fast
    path (eval, no grad); and one that switches grad mode and autocast, which make_fx records."""

    def __init__(self):
        super().__init__()
        self.attention = nn.MultiheadAttention(16, 2, batch_first=True)
        self.encoder = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True)

    def forward(self, x):
        y, _ = self.attention(x, x, x)
        with torch.autocast("cpu", enabled=False):
            y = self.encoder(y)
        with torch.enable_grad():
            return y * 2


def test_tracing_aware_forwards_take_make_fx_s_path():
    torch.manual_seed(0)
    module = _TracingAware().eval()
    gm = _assert_same_as_make_fx(module, (torch.randn(2, 5, 16),))
    targets = {str(n.target) for n in gm.graph.nodes}
    assert not any("native_multi_head_attention" in t or "transformer_encoder_layer_fwd" in t for t in targets)
    assert any("_enter_autocast" in t for t in targets) and any("_set_grad_enabled" in t for t in targets)


@pytest.mark.parametrize("name", ["bert", "llama", "t5"])
def test_hugging_face_models_record_as_make_fx_traces_them(name):
    model, x = build_hf(name)
    with without_cache(model):
        _assert_same_as_make_fx(model, x)


def test_a_cnn_records_as_make_fx_traces_it():
    torch.manual_seed(0)
    _assert_same_as_make_fx(torchvision.models.resnet18(num_classes=10).eval(), (torch.randn(1, 3, 64, 64),))


class _CatchesEverything(nn.Module):
    """A forward that calls a higher-order op and swallows the error it gets."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 4)

    def forward(self, x):
        try:
            y = torch.cond(x.sum() > 0, lambda t: t * 2, lambda t: t + 1, (x,))
        except Exception:
            y = x * 2
        return self.linear(y)


def test_what_the_recorder_refuses_stays_refused_and_goes_to_make_fx(monkeypatch):
    module = _CatchesEverything().eval()
    x = torch.randn(2, 4)
    with pytest.raises(NotRecordable):
        _recorded(module, (x,))
    used = []
    monkeypatch.setattr(concrete, "_make_fx_trace",
                        lambda *a, real=concrete._make_fx_trace: used.append(1) or real(*a))
    gm = concrete.concrete_trace(module, (x,))
    assert used and torch.allclose(gm(x)[0], module(x))


@pytest.mark.parametrize("name", ["bert", "gpt2"])
def test_what_the_recorder_observes_is_what_a_second_run_records(name):
    """The translation reads the concrete trace's observed values instead of running the graph
    again: the same static nodes, shapes, dtypes, Python values and static tensors."""
    from graphprune.frontends import fx as fx_frontend

    model, x = build_hf(name)
    with without_cache(model):
        gm = concrete.concrete_trace(model, x)
        observed = gm.meta.pop(fx_frontend.OBSERVED)
        again = fx_frontend.record(gm, x, set(model.state_dict().keys()))
    names = [n.name for n in gm.graph.nodes if n.op != "output"]
    assert {n for n in names if n in observed.static} == {n for n in names if n in again.static}
    assert [observed.info.get(n) for n in names] == [again.info.get(n) for n in names]
    for n in names:
        a, b = observed.values.get(n), again.values.get(n)
        if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
            assert torch.equal(a, b), n
        elif not isinstance(a, (tuple, list)):
            assert a == b, n
    assert any(isinstance(observed.values.get(n), torch.Tensor) for n in names)  # static tensors seen
