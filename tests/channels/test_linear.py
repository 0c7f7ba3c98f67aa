"""Gemm and MatMul: contractions over the inner dimension."""

import pytest

import graphprune

from .graphs import Builder, group_at, kept, prune_ok

BIASES = {  # shape of Gemm1's C for a [2, 16] result, and whether it is sliced
    "none": None, "scalar": (), "one": (1,), "vector": (16,), "row": (1, 16), "matrix": (2, 16)}


@pytest.mark.parametrize("trans_a", [0, 1])
@pytest.mark.parametrize("trans_b", [0, 1])
@pytest.mark.parametrize("bias", sorted(BIASES))
def test_gemm(trans_a, trans_b, bias):
    """x[2,8] -> Gemm1 (8->16) -> Relu -> Gemm2 (16->4): Gemm1's 16 features are one group."""
    b = Builder()
    x = b.input([2, 8])
    w1 = b.weight(*((16, 8) if trans_b else (8, 16)), name="gemm1_w")
    c = [] if BIASES[bias] is None else [b.weight(*BIASES[bias], name="gemm1_b")]
    h = b.op("Relu", b.op("Gemm", x, w1, *c, name="gemm1", transB=trans_b, alpha=0.5, beta=2.0))
    if trans_a:
        h = b.op("Transpose", h, perm=[1, 0])
    w2 = b.weight(*((4, 16) if trans_b else (16, 4)), name="gemm2_w")
    model = b.build(b.op("Gemm", h, w2, name="gemm2", transA=trans_a, transB=trans_b))
    result = prune_ok(model)
    out_axis, in_axis = (0, 1) if trans_b else (1, 0)
    features = kept(result, "gemm1_w", out_axis)
    assert len(features) == 8 and features == kept(result, "gemm2_w", in_axis)
    assert str(1 - out_axis) not in result.report["initializers"]["gemm1_w"]  # input axis pinned
    if BIASES[bias] and BIASES[bias][-1] == 16:
        assert kept(result, "gemm1_b", len(BIASES[bias]) - 1) == features
    else:
        assert "gemm1_b" not in result.report["initializers"]


def _matmul_chain(x_shape, w1_shape, w2_shape, left=False):
    b = Builder()
    x = b.input(x_shape)
    w1, w2 = b.weight(*w1_shape, name="mm1_w"), b.weight(*w2_shape, name="mm2_w")
    h = b.op("MatMul", *((w1, x) if left else (x, w1)), name="mm1")
    h = b.op("Relu", h)
    return b.build(b.op("MatMul", *((w2, h) if left else (h, w2)), name="mm2"))


@pytest.mark.parametrize("x_shape, w1_shape, w2_shape, out_axis, in_axis", [
    ([2, 8], [8, 16], [16, 4], 1, 0),                 # 2-D activations
    ([2, 5, 8], [8, 16], [16, 4], 1, 0),              # batched 3-D activations, 2-D weights
    ([2, 5, 8], [2, 8, 16], [2, 16, 4], 2, 1),        # batched weights too
    ([3, 2, 5, 8], [1, 8, 16], [16, 4], 2, 0),        # weights broadcast over a batch axis
])
def test_matmul_constant_weight(x_shape, w1_shape, w2_shape, out_axis, in_axis):
    result = prune_ok(_matmul_chain(x_shape, w1_shape, w2_shape))
    features = kept(result, "mm1_w", out_axis)
    assert len(features) == 8 and features == kept(result, "mm2_w", in_axis)
    assert set(result.report["initializers"]["mm1_w"]) == {str(out_axis)}


def test_matmul_constant_on_the_left():
    """W1[16,8] @ x[1,8,5] -> [1,16,5]: features are rows of the result."""
    result = prune_ok(_matmul_chain([1, 8, 5], [16, 8], [4, 16], left=True))
    assert kept(result, "mm1_w", 0) == kept(result, "mm2_w", 1)
    assert len(kept(result, "mm1_w", 0)) == 8


def test_matmul_vector_operand():
    """[5,8] @ W[8,16] -> Relu -> @ v[16] (rank-1 right operand)."""
    result = prune_ok(_matmul_chain([5, 8], [8, 16], [16]))
    assert kept(result, "mm1_w", 1) == kept(result, "mm2_w", 0)


def test_matmul_two_dynamic_operands():
    """Q·Kᵀ: the contracted features of q and k are one group, pruned together."""
    b = Builder()
    x = b.input([1, 6, 8])
    q = b.op("MatMul", x, b.weight(8, 16, name="q_w"), name="q")
    k = b.op("MatMul", x, b.weight(8, 16, name="k_w"), name="k")
    kt = b.op("Transpose", k, perm=[0, 2, 1])
    model = b.build(b.op("MatMul", q, kt, name="scores"))
    analysis = graphprune.analyse_model(model)
    assert group_at(analysis, "q", 2) is group_at(analysis, "k", 2)
    result = prune_ok(model)
    assert kept(result, "q_w", 1) == kept(result, "k_w", 1)
    assert len(kept(result, "q_w", 1)) == 8
