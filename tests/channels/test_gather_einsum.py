"""Gather (embedding tables, picking q/k/v from a fused tensor) and Einsum."""

import pytest

import graphprune

from .graphs import Builder, group_at, kept, prune_ok


def test_gather_picking_a_slice_keeps_the_feature_axis():
    """x[2,3,8] -> MatMul(8->16) -> Gather(index 1, axis 1) -> [2,16] -> MatMul(16->4)."""
    b = Builder()
    x = b.input([2, 3, 8])
    h = b.op("MatMul", x, b.weight(8, 16, name="w1"))
    picked = b.op("Gather", h, b.ints(1, name="index"), axis=1)
    model = b.build(b.op("MatMul", b.op("Relu", picked), b.weight(16, 4, name="w2")))
    assert group_at(graphprune.analyse_model(model), "w2", 0).prunable
    result = prune_ok(model)
    assert kept(result, "w1", 1) == kept(result, "w2", 0) and len(kept(result, "w2", 0)) == 8


def test_embedding_gather_prunes_the_table_width():
    b = Builder()
    ids = b.input([2, 5], name="ids")
    b.inputs[-1].type.tensor_type.elem_type = 7  # int64 token ids
    table = b.weight(10, 16, name="table")
    emb = b.op("Gather", table, ids, axis=0)  # [2, 5, 16]
    model = b.build(b.op("MatMul", b.op("Relu", emb), b.weight(16, 4, name="w")))
    result = prune_ok(model)
    assert kept(result, "table", 1) == kept(result, "w", 0) and len(kept(result, "w", 0)) == 8
    assert "0" not in result.report["initializers"]["table"]  # the vocabulary axis is pinned


def test_gather_with_runtime_indices_on_the_channel_axis_pins_it():
    b = Builder()
    x = b.input([2, 8])
    h = b.op("MatMul", x, b.weight(8, 16, name="w1"))
    model = b.build(b.op("Gather", h, b.ints([0, 3, 5], name="idx"), axis=1))
    assert group_at(graphprune.analyse_model(model), "w1", 1).pinned


@pytest.mark.parametrize("equation,shapes", [
    ("bij,jk->bik", ([2, 3, 8], [8, 16])),
    ("bhid,bhjd->bhij", None),
])
def test_einsum(equation, shapes):
    b = Builder()
    if shapes:
        x = b.input(shapes[0])
        h = b.op("Einsum", x, b.weight(*shapes[1], name="w1"), equation=equation)
        model = b.build(b.op("MatMul", b.op("Relu", h), b.weight(16, 4, name="w2")))
        result = prune_ok(model)
        assert kept(result, "w1", 1) == kept(result, "w2", 0)
    else:  # attention scores by einsum: q and k share the contracted head dim d
        x = b.input([1, 2, 4, 8])
        q = b.op("MatMul", x, b.weight(8, 8, name="wq"))
        k = b.op("MatMul", x, b.weight(8, 8, name="wk"))
        s = b.op("Einsum", q, k, equation=equation)  # [1, 2, 4, 4]
        v = b.op("MatMul", x, b.weight(8, 8, name="wv"))
        model = b.build(b.op("MatMul", b.op("MatMul", s, v), b.weight(8, 3, name="wo")))
        result = prune_ok(model)
        assert kept(result, "wq", 1) == kept(result, "wk", 1)


def test_einsum_with_ellipsis_pins():
    b = Builder()
    x = b.input([2, 8])
    h = b.op("Einsum", x, b.weight(8, 16, name="w1"), equation="...j,jk->...k")
    model = b.build(b.op("MatMul", h, b.weight(16, 4, name="w2")))
    group = group_at(graphprune.analyse_model(model), "w2", 0)
    assert group.pinned and "ellipsis" in group.pinned
