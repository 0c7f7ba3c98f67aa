"""fold-batchnorm: folds are exact in onnxruntime, near misses are left alone with a reason."""

import numpy as np
import pytest
import torch
from torch import nn

import graphprune
from graphprune.models.zoo import build, example_input, randomize_batchnorm
from graphprune.passes.fold_batchnorm import FoldBatchNorm

try:
    from . import helpers_affine as h
except ImportError:  # tests/passes is not a package: pytest puts it on sys.path
    import helpers_affine as h


def _conv_bn(bias=True, group=1, k=3, pad=None, output="y"):
    net = h.Net()
    x = net.input(2, 8, 6, 6)
    y = net.conv(x, 8, 8, k=k, group=group, bias=bias, pad=pad)
    net.bn(y, 8, name=output)
    return net.build(output)


# -- producer → BN ------------------------------------------------------------

@pytest.mark.parametrize("bias,group", [(True, 1), (False, 1), (True, 2), (False, 8)])
def test_conv_bn_folds(bias, group):
    model = _conv_bn(bias=bias, group=group)
    graph, result = h.fold(model, FoldBatchNorm())
    assert h.op_counts(graph) == {"Conv": 1}
    assert result.details["folded"] == [{"node": "y", "into": "conv1", "side": "producer"}]
    assert graph.outputs == ["y"] and graph.nodes[0].outputs == ["y"]  # output name kept
    assert len(graph.nodes[0].inputs) == 3  # a missing bias was created


@pytest.mark.parametrize("spatial,opset", [(1, 11), (3, 13)])
def test_conv1d_and_conv3d_with_dynamic_batch(spatial, opset):
    net = h.Net(opset=opset)
    x = net.input("N", 4, *[5] * spatial)
    w = net.weight(6, 4, *[3] * spatial)
    y = net.op("Conv", net.bn(x, 4), w, net.weight(6))  # BN → unpadded Conv
    y = net.op("Conv", y, net.weight(6, 6, *[1] * spatial))  # Conv → BN
    graph, result = h.fold(net.build(net.bn(y, 6)), FoldBatchNorm())
    assert h.op_counts(graph) == {"Conv": 2} and result.details["changed"] == 2


@pytest.mark.parametrize("group,bias", [(1, True), (2, False), (4, True)])
def test_conv_transpose_bn_folds_per_group(group, bias):
    net = h.Net()
    x = net.input(1, 8, 5, 5)
    w = net.weight(8, 12 // group, 3, 3)  # [Cin, Cout/group, k, k]
    b = [net.weight(12)] if bias else []
    y = net.op("ConvTranspose", x, w, *b, group=group, strides=[2, 2], output_padding=[1, 1])
    out = net.op("Relu", net.bn(y, 12))
    graph, _ = h.fold(net.build(out), FoldBatchNorm())
    assert h.op_counts(graph) == {"ConvTranspose": 1, "Relu": 1}


@pytest.mark.parametrize("trans_b", [0, 1])
@pytest.mark.parametrize("bias", [None, [6], [1, 6], [4, 6]])
def test_gemm_bn_folds(trans_b, bias):
    net = h.Net()
    x = net.input(4, 5)
    w = net.weight(*((6, 5) if trans_b else (5, 6)))
    c = [net.weight(*bias)] if bias else []
    y = net.op("Gemm", x, w, *c, transB=trans_b, alpha=0.7, beta=1.3)
    graph, _ = h.fold(net.build(net.bn(y, 6)), FoldBatchNorm())
    assert h.op_counts(graph) == {"Gemm": 1}


def test_matmul_bn_becomes_gemm():
    net = h.Net()
    y = net.op("MatMul", net.input(3, 5), net.weight(5, 6))
    graph, _ = h.fold(net.build(net.bn(y, 6)), FoldBatchNorm())
    assert h.op_counts(graph) == {"Gemm": 1}


def test_chain_of_two_bns_folds_in_one_run():
    net = h.Net()
    y = net.conv(net.input(1, 4, 5, 5), 4, 4)
    graph, result = h.fold(net.build(net.bn(net.bn(y, 4), 4)), FoldBatchNorm())
    assert h.op_counts(graph) == {"Conv": 1} and result.details["changed"] == 2


def test_shared_weight_is_not_changed_under_the_other_reader():
    net = h.Net()
    x = net.input(1, 4, 5, 5)
    w = net.weight(4, 4, 1, 1)
    a = net.bn(net.op("Conv", x, w), 4)
    b = net.op("Conv", x, w)
    graph, _ = h.fold(net.build(net.op("Add", a, b)), FoldBatchNorm())
    assert "BatchNormalization" not in h.op_counts(graph)


# -- BN → consumer --------------------------------------------------------------

@pytest.mark.parametrize("group", [1, 2, 4])
def test_bn_into_unpadded_conv(group):
    net = h.Net()
    x = net.input(2, 8, 6, 6)
    y = net.conv(net.bn(x, 8), 8, 6 if group < 4 else 8, k=3, group=group, pad=0, strides=[2, 2])
    graph, result = h.fold(net.build(y), FoldBatchNorm())
    assert h.op_counts(graph) == {"Conv": 1}
    assert result.details["folded"][0]["side"] == "consumer"


def test_bn_into_two_unpadded_convs():
    net = h.Net()
    z = net.bn(net.input(1, 4, 5, 5), 4)
    a, b = net.conv(z, 4, 3, k=1, pad=0, bias=False), net.conv(z, 4, 3, k=3, pad=0)
    graph, _ = h.fold(net.build(a, b), FoldBatchNorm())
    assert h.op_counts(graph) == {"Conv": 2}


@pytest.mark.parametrize("op,trans_b", [("Gemm", 0), ("Gemm", 1), ("MatMul", 0)])
def test_bn_into_gemm_or_matmul(op, trans_b):
    net = h.Net()
    z = net.bn(net.input(3, 5), 5)
    attrs = {"transB": trans_b, "alpha": 0.5, "beta": 2.0} if op == "Gemm" else {}
    w = net.weight(*((4, 5) if trans_b else (5, 4)))
    c = [net.weight(4)] if op == "Gemm" else []
    graph, _ = h.fold(net.build(net.op(op, z, w, *c, **attrs)), FoldBatchNorm())
    assert h.op_counts(graph) == {"Gemm": 1}


# -- near misses ------------------------------------------------------------------

def test_padding_blocks_bn_into_conv():
    net = h.Net()
    y = net.conv(net.bn(net.input(1, 4, 5, 5), 4), 4, 4, k=3, pad=1)
    details = h.unchanged(net.build(y), FoldBatchNorm())
    assert "padding makes BN→Conv folding inexact" in h.reasons(details)


def test_two_readers_of_the_conv_output():
    net = h.Net()
    y = net.conv(net.input(1, 4, 5, 5), 4, 4)
    details = h.unchanged(net.build(net.op("Add", net.bn(y, 4, name="bn"), y)), FoldBatchNorm())
    assert "has 2 readers" in h.reasons(details, "bn")


def test_conv_output_that_is_also_a_graph_output():
    net = h.Net()
    y = net.conv(net.input(1, 4, 5, 5), 4, 4)
    details = h.unchanged(net.build(net.bn(y, 4), y), FoldBatchNorm())
    assert "is also a graph output" in h.reasons(details)


def test_bn_output_that_is_a_graph_output_and_read_by_a_conv():
    net = h.Net()  # the BN output must survive as an output: no consumer fold
    z = net.bn(net.op("Relu", net.input(1, 4, 5, 5)), 4)
    details = h.unchanged(net.build(z, net.conv(z, 4, 4, k=1, pad=0)), FoldBatchNorm())
    assert "is a graph output" in h.reasons(details)


def test_non_constant_scale():
    net = h.Net()
    x = net.input(1, 4, 5, 5)
    gamma = net.input(4, name="gamma")
    y = net.conv(x, 4, 4)
    rest = [net.const(np.ones(4, np.float32)) for _ in range(3)]
    details = h.unchanged(net.build(net.op("BatchNormalization", y, gamma, *rest)), FoldBatchNorm())
    assert "scale 'gamma' is not a constant" in h.reasons(details)


def test_training_mode_is_left_alone():
    net = h.Net()
    y = net.conv(net.input(1, 4, 5, 5), 4, 4)
    out = net.bn(y, 4, training_mode=1, outputs=3)
    graph = graphprune.load(net.build(out))
    details = FoldBatchNorm()(graph).details
    assert details["changed"] == 0 and "training_mode=1" in h.reasons(details)


def test_matmul_with_channels_on_the_last_axis_is_not_bn_axis():
    net = h.Net()
    y = net.op("MatMul", net.input(2, 4, 5), net.weight(5, 4))  # BN normalises axis 1 (size 4)
    details = h.unchanged(net.build(net.bn(y, 4)), FoldBatchNorm())
    assert "channels on axis 2" in h.reasons(details)


def test_instance_norm_is_left_alone():
    net = h.Net()
    y = net.conv(net.input(1, 4, 5, 5), 4, 4)
    out = net.op("InstanceNormalization", y, net.weight(4), net.weight(4))
    details = h.unchanged(net.build(out), FoldBatchNorm())
    assert "statistics" in h.reasons(details)


# -- pass contract -----------------------------------------------------------------

def test_idempotent_and_verified_call():
    graph = graphprune.load(_conv_bn())
    first = FoldBatchNorm()(graph, verify=True)
    assert first.modified and first.nodes[1] < first.nodes[0]
    assert first.verification.status == "exact"
    second = FoldBatchNorm()(graph, verify=True)
    assert not second.modified and second.details["changed"] == 0
    assert second.nodes == (first.nodes[1], first.nodes[1])


def test_unused_parameters_are_dropped():
    graph = graphprune.load(_conv_bn())
    FoldBatchNorm()(graph)
    assert not any(name.startswith("y_") for name in graph.constants)
    assert set(graph.constants) == {i for n in graph.nodes for i in n.inputs if i in graph.constants}


# -- real models ---------------------------------------------------------------------

def test_resnet18_all_batchnorms_fold():
    model = h.export_eval(build("resnet18"), example_input("resnet18"))
    assert h.op_counts(model)["BatchNormalization"] == 20
    graph, result = h.fold(model, FoldBatchNorm())
    assert "BatchNormalization" not in h.op_counts(graph)
    assert result.details["skipped"] == []
    assert result.params[1] < result.params[0]


class _Heads(nn.Module):
    """ConvTranspose(groups=2)→BN2d, Linear→BN1d, and a BN1d straight into a Linear."""

    def __init__(self):
        super().__init__()
        self.up = nn.ConvTranspose2d(4, 6, 3, stride=2, groups=2)
        self.bn2 = nn.BatchNorm2d(6)
        self.fc = nn.Linear(6, 8)
        self.bn1 = nn.BatchNorm1d(8)
        self.pre = nn.BatchNorm1d(8)
        self.out = nn.Linear(8, 3)

    def forward(self, x):
        y = self.bn2(self.up(x)).mean(dim=(2, 3))
        return self.out(self.pre(torch.relu(self.bn1(self.fc(y)))))


def test_torch_heads_fold_all_three():
    torch.manual_seed(0)
    module = randomize_batchnorm(_Heads(), torch.Generator().manual_seed(0))
    model = h.export_eval(module, torch.randn(2, 4, 5, 5))
    assert h.op_counts(model)["BatchNormalization"] == 3
    graph, result = h.fold(model, FoldBatchNorm())
    assert "BatchNormalization" not in h.op_counts(graph)
    assert sorted(f["side"] for f in result.details["folded"]) == ["consumer", "producer", "producer"]
