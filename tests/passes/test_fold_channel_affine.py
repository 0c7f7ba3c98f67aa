"""fold-channel-affine: per-channel Mul/Add/Sub/Div by constants fold exactly, or are left with a reason."""

import numpy as np
import pytest
import torch
from torch import nn

import graphprune
from graphprune.passes.fold_channel_affine import FoldChannelAffine, channel_vector

try:
    from . import helpers_affine as h
except ImportError:  # tests/passes is not a package: pytest puts it on sys.path
    import helpers_affine as h

C = 6


def _values(shape):
    rng = np.random.default_rng(1)
    v = rng.uniform(0.5, 2.0, shape) * rng.choice([-1, 1], shape)
    return v.astype(np.float32)


def _conv_then(op, shape, constant_first=False, bias=True, output="y"):
    net = h.Net()
    y = net.conv(net.input(2, 4, 6, 6), 4, C, bias=bias)
    k = net.const(_values(shape))
    net.op(op, *((k, y) if constant_first else (y, k)), name=output)
    return net.build(output)


# -- producer side ---------------------------------------------------------------

@pytest.mark.parametrize("op", ["Mul", "Add", "Sub", "Div"])
@pytest.mark.parametrize("shape", [(C, 1, 1), (1, C, 1, 1), (), (1,), (1, 1, 1, 1)])
def test_conv_then_per_channel_constant_folds(op, shape):
    graph, result = h.fold(_conv_then(op, shape), FoldChannelAffine())
    assert h.op_counts(graph) == {"Conv": 1}
    assert result.details["folded"] == [{"node": "y", "op": op, "into": "conv1", "side": "producer"}]
    assert graph.outputs == ["y"]


@pytest.mark.parametrize("op", ["Mul", "Add"])
def test_commutative_ops_take_the_constant_first(op):
    graph, _ = h.fold(_conv_then(op, (C, 1, 1), constant_first=True, bias=False), FoldChannelAffine())
    assert h.op_counts(graph) == {"Conv": 1}


def test_chain_of_mul_add_div_folds_in_one_run():
    net = h.Net()
    y = net.conv(net.input(1, 4, 5, 5), 4, C, bias=False)
    for op in ("Mul", "Add", "Div", "Sub"):
        y = net.op(op, y, net.const(_values((C, 1, 1))))
    graph, result = h.fold(net.build(net.op("Relu", y)), FoldChannelAffine())
    assert h.op_counts(graph) == {"Conv": 1, "Relu": 1} and result.details["changed"] == 4


@pytest.mark.parametrize("group", [1, 3])
def test_conv_transpose_per_group(group):
    net = h.Net()
    w = net.weight(6, C // group, 2, 2)
    y = net.op("ConvTranspose", net.input(1, 6, 4, 4), w, group=group, strides=[2, 2])
    y = net.op("Add", net.op("Mul", y, net.const(_values((1, C, 1, 1)))), net.const(_values((C, 1, 1))))
    graph, _ = h.fold(net.build(y), FoldChannelAffine())
    assert h.op_counts(graph) == {"ConvTranspose": 1}


@pytest.mark.parametrize("trans_b", [0, 1])
@pytest.mark.parametrize("op,shape", [("Mul", (C,)), ("Add", (1, C)), ("Sub", (C,)), ("Div", ())])
def test_gemm_per_feature_constant(trans_b, op, shape):
    net = h.Net()
    w = net.weight(*((C, 5) if trans_b else (5, C)))
    y = net.op("Gemm", net.input(3, 5), w, net.weight(C), transB=trans_b, beta=0.5)
    graph, _ = h.fold(net.build(net.op(op, y, net.const(_values(shape)))), FoldChannelAffine())
    assert h.op_counts(graph) == {"Gemm": 1}


def test_matmul_2d_add_becomes_gemm_and_nd_mul_scales_columns():
    net = h.Net()
    a = net.op("Add", net.const(_values((C,))), net.op("MatMul", net.input(3, 5), net.weight(5, C)))
    b = net.op("Mul", net.op("MatMul", net.input(2, 3, 5, name="x3"), net.weight(5, C)), net.const(_values((C,))))
    graph, _ = h.fold(net.build(a, b), FoldChannelAffine())
    assert h.op_counts(graph) == {"Gemm": 1, "MatMul": 1}


# -- consumer side ------------------------------------------------------------------

def test_scale_folds_into_padded_conv_shift_does_not():
    """Input normalisation ``(x - mean) / std -> Conv(pad=1)``: the Div folds, the Sub cannot."""
    net = h.Net()
    x = net.op("Sub", net.input(1, 3, 6, 6), net.const(_values((1, 3, 1, 1))), name="sub")
    x = net.op("Div", x, net.const(_values((1, 3, 1, 1))), name="div")
    graph, result = h.fold(net.build(net.conv(x, 3, 4, k=3, pad=1)), FoldChannelAffine())
    assert h.op_counts(graph) == {"Sub": 1, "Conv": 1}
    assert [f["node"] for f in result.details["folded"]] == ["div"]
    assert "padding makes Sub→Conv folding inexact" in h.reasons(result.details, "sub")


@pytest.mark.parametrize("group", [1, 3])
def test_shift_folds_into_unpadded_conv(group):
    net = h.Net()
    x = net.op("Add", net.input(1, 6, 6, 6), net.const(_values((C, 1, 1))))
    graph, _ = h.fold(net.build(net.conv(x, 6, 6, k=3, pad=0, group=group)), FoldChannelAffine())
    assert h.op_counts(graph) == {"Conv": 1}


def test_shift_folds_into_gemm_consumer():
    net = h.Net()
    x = net.op("Sub", net.input(3, 5), net.const(_values((5,))))
    graph, _ = h.fold(net.build(net.op("Gemm", x, net.weight(4, 5), transB=1)), FoldChannelAffine())
    assert h.op_counts(graph) == {"Gemm": 1}


# -- near misses --------------------------------------------------------------------

@pytest.mark.parametrize("shape,reason", [
    ((C, 6, 6), "varies along axis 2"),
    ((1, 1, 1, 6), "varies along axis 3"),
    ((2, C, 1, 1), "varies along the batch axis"),
    ((1, 1, C, 1, 1), "would broadcast the rank-4 tensor up"),
])
def test_constant_not_only_along_channels(shape, reason):
    details = h.unchanged(_conv_then("Mul", shape), FoldChannelAffine())
    assert reason in h.reasons(details, "y")


def test_div_by_constant_with_zeros():
    net = h.Net()
    y = net.conv(net.input(1, 4, 5, 5), 4, C)
    k = _values((C, 1, 1))
    k[2] = 0
    details = h.unchanged(net.build(net.op("Div", y, net.const(k))), FoldChannelAffine())
    assert "has zeros" in h.reasons(details)


@pytest.mark.parametrize("op", ["Sub", "Div"])
def test_constant_first_operand_of_sub_or_div(op):
    details = h.unchanged(_conv_then(op, (C, 1, 1), constant_first=True), FoldChannelAffine())
    assert "constant as its first operand" in h.reasons(details)


def test_producer_read_twice_or_a_graph_output():
    net = h.Net()
    y = net.conv(net.input(1, 4, 5, 5), 4, C)
    z = net.conv(net.input(1, 4, 5, 5, name="x2"), 4, C)
    a = net.op("Add", net.op("Mul", y, net.const(_values((C, 1, 1)))), y)
    b = net.op("Mul", z, net.const(_values((C, 1, 1))))
    details = h.unchanged(net.build(a, b, z), FoldChannelAffine())
    assert "has 2 readers" in h.reasons(details) and "is also a graph output" in h.reasons(details)


def test_matmul_nd_shift_is_left_alone():
    net = h.Net()
    y = net.op("MatMul", net.input(2, 3, 5), net.weight(5, C))
    details = h.unchanged(net.build(net.op("Add", y, net.const(_values((C,))))), FoldChannelAffine())
    assert "would need a bias Add" in h.reasons(details)


def test_non_candidates_are_not_reported():
    net = h.Net()
    y = net.op("Relu", net.input(1, 4, 5, 5))
    out = net.op("Add", net.op("Mul", y, net.const(_values((4, 1, 1)))), y)  # no layer next to it
    assert h.unchanged(net.build(out), FoldChannelAffine())["skipped"] == []


def test_channel_vector():
    assert channel_vector(np.float32(2.0), 1, 4, 3).tolist() == [2.0, 2.0, 2.0]
    assert channel_vector(np.arange(3.0).reshape(3, 1, 1), 1, 4, 3).tolist() == [0.0, 1.0, 2.0]
    assert "expected 1 or 3" in channel_vector(np.ones((2, 1, 1)), 1, 4, 3)


# -- pass contract and a real export -----------------------------------------------------

def test_idempotent_and_verified_call():
    graph = graphprune.load(_conv_then("Mul", (C, 1, 1)))
    first = FoldChannelAffine()(graph, verify=True)
    assert first.modified and first.nodes[1] < first.nodes[0]
    assert first.verification.status == "exact"
    second = FoldChannelAffine()(graph)
    assert not second.modified and second.details["changed"] == 0


class _Scaled(nn.Module):
    """Learned per-channel scales and shifts around layers, as in layer-scale / normalised inputs."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.rand(1, 3, 1, 1))
        self.conv = nn.Conv2d(3, 8, 1)
        self.gamma = nn.Parameter(torch.rand(8, 1, 1) + 0.5)
        self.beta = nn.Parameter(torch.randn(8, 1, 1))
        self.fc = nn.Linear(8, 4)
        self.scale = nn.Parameter(torch.rand(4) + 0.5)

    def forward(self, x):
        y = torch.relu(self.conv(x - self.mean) * self.gamma + self.beta)
        return self.fc(y.mean(dim=(2, 3))) / self.scale


def test_torch_export_folds():
    torch.manual_seed(0)
    model = h.export_eval(_Scaled(), torch.randn(2, 3, 8, 8))
    graph, result = h.fold(model, FoldChannelAffine())
    counts = h.op_counts(graph)
    assert result.details["changed"] == 4 and not any(counts[op] for op in ("Sub", "Mul", "Add", "Div"))
