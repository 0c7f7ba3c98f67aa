"""simplify-shapes: shape arithmetic decided by symbolic sizes folds, losslessly, at every size."""

import numpy as np
from onnx import helper

from graphprune.passes.remove_identities import RemoveIdentities
from graphprune.passes.simplify_shapes import SimplifyShapes
from lossless import const, make, run_lossless, vi


def _ops(graph):
    return [n.op for n in graph.nodes]


def test_known_entries_of_a_partly_symbolic_shape_fold():
    """``Gather(Shape(x), 2)`` of ``x: (batch, seq, 16)`` is 16, and the two leading entries
    are x's own sizes at those positions (Reshape's 0): the run-time target becomes the
    constant ``[0, 0, 16]``, which remembers the size it read."""
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "two"], ["c"], axis=0),
        helper.make_node("Unsqueeze", ["c", "zero"], ["c1"]),
        helper.make_node("Slice", ["s", "zero", "two1"], ["lead"]),
        helper.make_node("Concat", ["lead", "c1"], ["t"], axis=0),
        helper.make_node("Reshape", ["x", "t"], ["y"]),
    ]
    model = make(nodes, [vi("x", ["batch", "seq", 16])], [vi("y", ["batch", "seq", 16])],
                 [const("two", np.array(2)), const("two1", np.array([2])), const("zero", np.array([0]))])
    graph, result = run_lossless(SimplifyShapes, model)
    assert result.details["folded"] == 2 and result.details["constant_targets"] == 1
    assert _ops(graph) == ["Reshape"]
    target = graph.nodes[0].inputs[1]
    assert graph.constants[target].tolist() == [0, 0, 16] and graph.folded[target] == {("x", 2)}


def test_one_run_time_entry_becomes_minus_one():
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Slice", ["s", "zero", "one1"], ["b"]),
        helper.make_node("Slice", ["s", "one1", "two1"], ["n"]),
        helper.make_node("Mul", ["b", "n"], ["bn"]),
        helper.make_node("Concat", ["bn", "eight"], ["t"], axis=0),
        helper.make_node("Reshape", ["x", "t"], ["y"]),
    ]
    model = make(nodes, [vi("x", ["batch", "seq", 8])], [vi("y", [None, 8])],
                 [const("two1", np.array([2])), const("one1", np.array([1])), const("zero", np.array([0])),
                  const("eight", np.array([8]))])
    graph, result = run_lossless(SimplifyShapes, model)
    assert _ops(graph) == ["Reshape"]  # batch·seq, read at run time, is what -1 leaves
    assert graph.constants[graph.nodes[0].inputs[1]].tolist() == [-1, 8]


def test_legacy_expand_where_equal_minus_one_goes():
    """``Expand(v, Where(Equal(s, -1), 1, s))`` with ``s`` built from run-time sizes:
    no size is -1, so the Where is the shape itself."""
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Equal", ["s", "minus"], ["eq"]),
        helper.make_node("Where", ["eq", "ones", "s"], ["t"]),
        helper.make_node("Expand", ["v", "t"], ["y"]),
    ]
    model = make(nodes, [vi("x", ["batch", "seq"]), vi("v", [1, 1])], [vi("y", ["batch", "seq"])],
                 [const("minus", np.array([-1, -1])), const("ones", np.array([1, 1]))])
    graph, result = run_lossless(SimplifyShapes, model)
    assert _ops(graph) == ["Shape", "Expand"] and result.details["where_forwarded"] == 1


def test_gather_of_shape_then_unsqueeze_becomes_one_shape_slice():
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "one"], ["n"], axis=0),
        helper.make_node("Unsqueeze", ["n", "zero"], ["n1"]),
        helper.make_node("ConstantOfShape", ["n1"], ["y"]),
    ]
    model = make(nodes, [vi("x", ["batch", "seq"])], [vi("y", ["seq"])],
                 [const("one", np.array(1)), const("zero", np.array([0]))])
    graph, result = run_lossless(SimplifyShapes, model)
    assert _ops(graph) == ["Shape", "ConstantOfShape"] and result.details["shape_slices"] == 1
    shape = graph.nodes[0]
    assert (shape.attr("start"), shape.attr("end")) == (1, 2)


def test_unsqueeze_chains_merge():
    nodes = [helper.make_node("Unsqueeze", ["x", "a1"], ["u"]),
             helper.make_node("Unsqueeze", ["u", "a2"], ["y"])]
    model = make(nodes, [vi("x", ["n", 5])], [vi("y", ["n", 1, 5, 1])],
                 [const("a1", np.array([1])), const("a2", np.array([-1]))])
    graph, result = run_lossless(RemoveIdentities, model)
    assert _ops(graph) == ["Unsqueeze"]
    assert graph.constants[graph.nodes[0].inputs[1]].tolist() == [1, 3]


def test_reshape_to_its_own_run_time_shape_goes():
    """``view(mask, [-1, ids.shape[1]])`` where both inputs are (batch, seq): an identity."""
    nodes = [
        helper.make_node("Shape", ["ids"], ["s"], start=1, end=2),
        helper.make_node("Concat", ["minus", "s"], ["t"], axis=0),
        helper.make_node("Reshape", ["mask", "t"], ["r"]),
        helper.make_node("Add", ["r", "ids"], ["y"]),
    ]
    model = make(nodes, [vi("ids", ["batch", "seq"]), vi("mask", ["batch", "seq"])], [vi("y", ["batch", "seq"])],
                 [const("minus", np.array([-1]))])
    graph, result = run_lossless(SimplifyShapes, model)
    assert _ops(graph) == ["Add"] and result.details["identity_reshapes"] == 1
