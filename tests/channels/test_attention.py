"""Multi-head attention spelled out op by op: pruning must remove whole heads."""

import numpy as np
import pytest

import graphprune

from .graphs import Builder, group_at, input_value, kept, prune_ok

N, HEADS, D = 6, 4, 4
C = HEADS * D


def _attention(opset=17, bias=True, scale=True):
    """q/k/v MatMuls -> [B,N,H,D] -> [B,H,N,D] -> softmax(q·kᵀ)·v -> [B,N,H*D] -> output MatMul."""
    b = Builder(opset)
    x = b.input([1, N, C])
    heads, target = {}, b.ints([1, N, HEADS, D])  # one target shared by q, k, v (as exporters do)
    for p in "qkv":
        h = b.op("MatMul", x, b.weight(C, C, name=f"{p}_w"), name=p)
        if bias:
            h = b.op("Add", h, b.weight(C, name=f"{p}_b"))
        h = b.op("Reshape", h, target, name=f"{p}_heads")
        perm = [0, 2, 3, 1] if p == "k" else [0, 2, 1, 3]  # k goes straight to [B,H,D,N]
        heads[p] = b.op("Transpose", h, perm=perm)
    scores = b.op("MatMul", heads["q"], heads["k"], name="scores")
    if scale:
        scores = b.op("Mul", scores, b.const(np.float32(D ** -0.5)))
    attn = b.op("Softmax", scores, axis=-1)
    out = b.op("Transpose", b.op("MatMul", attn, heads["v"], name="context"), perm=[0, 2, 1, 3])
    out = b.op("Reshape", out, b.ints([1, N, C]), name="merge")
    return b.build(b.op("MatMul", out, b.weight(C, C, name="o_w"), name="o"))


def _whole_heads(features):
    heads = sorted({f // D for f in features})
    return features == [h * D + d for h in heads for d in range(D)], heads


@pytest.mark.parametrize("bias, scale", [(True, True), (False, False)])
def test_attention_prunes_whole_heads(bias, scale):
    model = _attention(bias=bias, scale=scale)
    analysis = graphprune.analyse_model(model)
    g = group_at(analysis, "q", 2)
    assert g.pinned is None and g.size == HEADS  # one channel per head
    assert all(group_at(analysis, f"{p}_w", 1) is g for p in "qkv")
    assert group_at(analysis, "q_heads", 3).pinned is not None  # head_dim is not free here

    result = prune_ok(model)
    q = kept(result, "q_w", 1)
    whole, heads = _whole_heads(q)
    assert whole and len(heads) == HEADS // 2
    assert q == kept(result, "k_w", 1) == kept(result, "v_w", 1) == kept(result, "o_w", 0)
    if bias:
        assert kept(result, "q_b", 0) == q
    assert "0" not in result.report["initializers"]["q_w"]  # embedding width is pinned
    assert "1" not in result.report["initializers"]["o_w"]
    for p in "qkv":
        assert input_value(result.model, f"{p}_heads", 1).tolist() == [1, N, HEADS // 2, D]
    assert input_value(result.model, "merge", 1).tolist() == [1, N, C // 2]


def test_attention_softmax_opset_11_over_last_axis():
    """Opset 11 Softmax coerces to 2-D from ``axis``; axis=3 mixes only keys."""
    result = prune_ok(_attention(opset=11))
    assert _whole_heads(kept(result, "q_w", 1))[0]


def _fused_attention(fused: int = 3):
    """One qkv MatMul [C -> 3·H·D] -> Reshape [B,N,3,H,D] -> Transpose [3,B,H,N,D] -> Gather q/k/v."""
    b = Builder(17)
    x = b.input([1, N, C])
    qkv = b.op("MatMul", x, b.weight(C, fused * C, name="qkv_w"), name="qkv")
    qkv = b.op("Add", qkv, b.weight(fused * C, name="qkv_b"))
    qkv = b.op("Reshape", qkv, b.ints([1, N, fused, HEADS, D]), name="split_heads")
    qkv = b.op("Transpose", qkv, perm=[2, 0, 3, 1, 4])
    q, k, v = (b.op("Gather", qkv, b.ints(i if i < fused else fused - 1), axis=0) for i in range(3))
    scores = b.op("MatMul", q, b.op("Transpose", k, perm=[0, 1, 3, 2]))
    attn = b.op("Softmax", scores, axis=-1)
    out = b.op("Transpose", b.op("MatMul", attn, v), perm=[0, 2, 1, 3])
    out = b.op("Reshape", out, b.ints([1, N, C]), name="merge")
    return b.build(b.op("MatMul", out, b.weight(C, C, name="o_w"), name="o"))


@pytest.mark.parametrize("fused", [2, 3])
def test_fused_qkv_prunes_heads_through_the_middle_axis(fused):
    """``[3·H·D] → [3, H, D]``: heads are the middle axis; row f of the projection is
    (which ``f // (H·D)``, head ``(f // D) % H``, dim ``f % D``)."""
    model = _fused_attention(fused)
    g = group_at(model, "qkv_w", 1)
    assert g.pinned is None and g.size == HEADS
    result = prune_ok(model)
    rows = kept(result, "qkv_w", 1)
    heads = sorted({(f // D) % HEADS for f in rows})
    assert len(heads) == HEADS // 2
    assert rows == [w * C + h * D + d for w in range(fused) for h in heads for d in range(D)]
    assert kept(result, "o_w", 0) == [h * D + d for h in heads for d in range(D)]
    assert input_value(result.model, "split_heads", 1).tolist() == [1, N, fused, HEADS // 2, D]
