"""Grouped-query attention on the ONNX path: query heads removed inside every kv group.

The graph is LLaMA's export spelled out: k/v heads repeated with
Unsqueeze → Expand → Reshape (``repeat_kv``), 8 query heads over 2 kv heads.
By default heads go as whole kv groups; ``gqa_heads("query")`` keeps every kv
head and removes the same query heads in each group, ``"both"`` offers both.
"""

import numpy as np
import onnxruntime as ort
import pytest

import graphprune
from graphprune.channels import gqa_heads

from .graphs import Builder, group_at, input_value, kept, prune_ok

N, HEADS, KV, D = 5, 8, 2, 4
R = HEADS // KV
C = HEADS * D


def _gqa(order="interleave", fused=False, kv=KV):
    """q [1,N,H,D]; k, v [1,N,KV,D] repeated to H heads; softmax(q·kᵀ)·v; output MatMul.

    ``order="tile"`` repeats the kv heads as a whole (``[R, KV]`` merged: head h reads kv h % KV),
    a layout the query-head factor does not cover. ``fused`` computes q, k, v with one MatMul
    split three ways (Phi-3's ``qkv_proj``) and copies the repeated heads (an Identity, torch's
    ``clone``) before merging them. ``kv=1`` is multi-query attention.
    """
    b = Builder()
    r = HEADS // kv
    x = b.input([1, N, C])
    if fused:
        qkv = b.op("MatMul", x, b.weight(C, C + 2 * KV * D, name="qkv_w"), name="qkv")
        projected = dict(zip("qkv", b.op("Split", qkv, b.ints([C, KV * D, KV * D]), axis=2, outputs=3)))
    else:
        projected = {"q": b.op("MatMul", x, b.weight(C, C, name="q_w"), name="q")}
        projected.update({p: b.op("MatMul", x, b.weight(C, kv * D, name=f"{p}_w"), name=p) for p in "kv"})
    q = b.op("Transpose", b.op("Reshape", projected["q"], b.ints([1, N, HEADS, D]), name="q_heads"),
             perm=[0, 2, 1, 3])
    heads = {}
    for p in "kv":
        h = b.op("Transpose", b.op("Reshape", projected[p], b.ints([1, N, kv, D]), name=f"{p}_heads"),
                 perm=[0, 2, 1, 3])
        if order == "interleave":  # [1, KV, 1, N, D] -> [1, KV, R, N, D]
            h = b.op("Unsqueeze", h, b.ints([2]))
            h = b.op("Expand", h, b.ints([1, 1, r, 1, 1]), name=f"{p}_expand")
        else:  # [1, 1, KV, N, D] -> [1, R, KV, N, D]
            h = b.op("Unsqueeze", h, b.ints([1]))
            h = b.op("Expand", h, b.ints([1, r, 1, 1, 1]), name=f"{p}_expand")
        if fused:
            h = b.op("Identity", h)
        heads[p] = b.op("Reshape", h, b.ints([1, HEADS, N, D]), name=f"{p}_merge")
    scores = b.op("MatMul", q, b.op("Transpose", heads["k"], perm=[0, 1, 3, 2]), name="scores")
    attn = b.op("Softmax", b.op("Mul", scores, b.const(np.float32(D ** -0.5))), axis=-1)
    out = b.op("Transpose", b.op("MatMul", attn, heads["v"], name="context"), perm=[0, 2, 1, 3])
    out = b.op("Reshape", out, b.ints([1, N, C]), name="merge")
    return b.build(b.op("MatMul", out, b.weight(C, C, name="o_w"), name="o"))


def _heads(features: list[int]) -> list[int]:
    heads = sorted({f // D for f in features})
    assert features == [h * D + d for h in heads for d in range(D)], features
    return heads


def _runs(result) -> None:
    session = ort.InferenceSession(result.model.SerializeToString())
    (y,) = session.run(None, {"x": np.random.default_rng(1).standard_normal((1, N, C)).astype(np.float32)})
    assert y.shape == (1, N, C) and np.isfinite(y).all()


def test_query_mode_removes_the_same_query_heads_in_every_kv_group():
    model = _gqa()
    with gqa_heads("query"):
        analysis = graphprune.analyse_model(model)
        result = prune_ok(model, ratio=0.25)  # below 1/KV: no whole kv group can go
    inner = group_at(analysis, "k_expand", 2)
    outer = group_at(analysis, "k_w", 1)
    assert inner.prunable and inner.size == R and inner.within == outer.id
    assert outer.pinned.startswith("kv heads kept whole")
    assert analysis.group_of_dim("q_w", 1) is outer  # the query side is in both groups
    assert [gid for gid, _ in analysis.factor_of[analysis.table.ids[("q_w", 1)]]] == [inner.id]

    heads = _heads(kept(result, "q_w", 1))
    assert len(heads) == HEADS - KV  # one query head gone from each kv group
    per_group = [[h % R for h in heads if h // R == g] for g in range(KV)]
    assert per_group[0] == per_group[1] and len(per_group[0]) == R - 1
    assert kept(result, "o_w", 0) == kept(result, "q_w", 1)
    assert "k_w" not in result.report["initializers"] and "v_w" not in result.report["initializers"]
    for p in "kv":
        assert input_value(result.model, f"{p}_expand", 1).tolist() == [1, 1, R - 1, 1, 1]
        assert input_value(result.model, f"{p}_merge", 1).tolist() == [1, HEADS - KV, N, D]
    assert input_value(result.model, "q_heads", 1).tolist() == [1, N, HEADS - KV, D]
    assert {g["id"]: g.get("within") for g in result.report["groups"]}[inner.id] == outer.id
    assert result.report["settings"]["gqa_heads"] == "query"
    _runs(result)


def test_default_keeps_query_heads_with_their_kv_group():
    model = _gqa()
    analysis = graphprune.analyse_model(model)
    assert group_at(analysis, "k_expand", 2).pinned is not None
    assert not analysis.factor_of
    result = graphprune.prune(model, ratio=0.25)
    assert "q_w" not in result.report["initializers"]  # floor(0.25 * 2 kv groups) = 0
    result = prune_ok(model, ratio=0.5)
    heads = _heads(kept(result, "q_w", 1))
    assert heads in ([0, 1, 2, 3], [4, 5, 6, 7])  # one whole kv group


def test_both_mode_prunes_kv_groups_and_query_heads_inside_them():
    model = _gqa()
    with gqa_heads("both"):
        result = prune_ok(model, ratio=0.5)
    kv = _heads(kept(result, "k_w", 1))
    assert kept(result, "v_w", 1) == kept(result, "k_w", 1) and len(kv) == 1
    heads = _heads(kept(result, "q_w", 1))
    assert len(heads) == R // 2 and all(h // R == kv[0] for h in heads)
    assert input_value(result.model, "k_expand", 1).tolist() == [1, 1, R // 2, 1, 1]
    _runs(result)


def test_a_repeat_that_is_not_a_query_head_factor_stays_pinned():
    """``[R, KV] → H`` (head h reads kv head h % KV): the broadcast axis is the outer factor."""
    model = _gqa(order="tile")
    with gqa_heads("query"):
        analysis = graphprune.analyse_model(model)
        result = graphprune.prune(model, ratio=0.5)
    assert group_at(analysis, "q_w", 1).pinned is not None
    assert not analysis.factor_of
    assert result.verification.status == "exact"
    assert "q_w" not in result.report["initializers"]


def test_unknown_mode_is_refused():
    with pytest.raises(graphprune.GraphpruneError, match="gqa_heads"):
        with gqa_heads("heads"):
            pass


def test_fused_qkv_projection_loses_only_query_rows():
    """One ``[C, (H + 2·KV)·D]`` projection: its query rows follow the query heads, its kv rows stay."""
    model = _gqa(fused=True)
    with gqa_heads("query"):
        result = prune_ok(model, ratio=0.5)
    rows = kept(result, "qkv_w", 1)
    heads = _heads([f for f in rows if f < C])
    assert len(heads) == KV * R // 2
    assert [h % R for h in heads if h < R] == [h % R for h in heads if h >= R]
    assert [f for f in rows if f >= C] == list(range(C, C + 2 * KV * D))  # every k and v row kept
    assert kept(result, "o_w", 0) == [f for f in rows if f < C]
    assert input_value(result.model, "k_expand", 1).tolist() == [1, 1, R // 2, 1, 1]
    _runs(result)


def test_llama_export_with_external_data(tmp_path):
    """The LLaMA-style export of ``models/llama_onnx`` (8 query heads over 2 kv heads, 2 layers)."""
    from graphprune.models.llama_onnx import SHAPES, build

    path = build(SHAPES["tiny"], str(tmp_path / "llama.onnx"), dtype="fp32")
    with gqa_heads("query"):
        result = graphprune.prune(path, ratio=0.25, exact=True)
    assert result.verification.status == "exact", result.verification.message
    for layer in range(2):
        p = f"model.layers.{layer}.self_attn."
        heads = sorted({f // 32 for f in kept(result, p + "q_proj.weight", 1)})
        assert len(heads) == 6 and [h % 4 for h in heads[:3]] == [h % 4 for h in heads[3:]]
        assert p + "k_proj.weight" not in result.report["initializers"]
    graphprune.save(result.model, str(tmp_path / "pruned.onnx"))
    session = ort.InferenceSession(str(tmp_path / "pruned.onnx"))
    (logits,) = session.run(None, {"input_ids": np.random.default_rng(0).integers(0, 1000, (2, 7))})
    assert logits.shape == (2, 7, 1000) and np.isfinite(logits).all()


@pytest.mark.zoo
@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
@pytest.mark.parametrize("name", ["llama", "qwen2", "mistral"])
def test_hugging_face_exports_with_dynamic_axes(name, exporter):
    """torch.onnx exports of Hugging Face GQA decoders (8 query / 2 kv heads, run-time shape vectors)."""
    from graphprune.models.dynamic import export_dynamic

    try:
        path = export_dynamic(name, exporter)
    except ValueError as exc:
        pytest.skip(str(exc))
    with gqa_heads("query"):
        result = graphprune.prune(str(path), ratio=0.5, exact=True)
    assert result.verification.status == "exact", result.verification.message
    inner = [g for g in result.report["groups"] if "within" in g]
    assert [(g["channels"], g["removed"]) for g in inner] == [(4, 2), (4, 2)]  # 2 layers


def test_multi_query_attention_loses_query_heads_of_its_one_kv_head():
    """One kv head for all 8 query heads: nothing can go by kv groups, query heads can."""
    model = _gqa(kv=1)
    assert "q_w" not in graphprune.prune(model, ratio=0.5).report["initializers"]  # default
    with gqa_heads("query"):
        result = prune_ok(model, ratio=0.5)
    assert len(_heads(kept(result, "q_w", 1))) == HEADS // 2
    assert kept(result, "o_w", 0) == kept(result, "q_w", 1)
    assert "k_w" not in result.report["initializers"]
    assert input_value(result.model, "k_expand", 1).tolist() == [1, 1, HEADS // 2, 1, 1]
    assert input_value(result.model, "v_merge", 1).tolist() == [1, HEADS // 2, N, D]
    _runs(result)
