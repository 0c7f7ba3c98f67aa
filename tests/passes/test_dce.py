"""dce: dead chains and unused constants go; used outputs, interface and subgraph reads stay."""

import numpy as np
import pytest
from onnx import TensorProto, helper

import graphprune
from graphprune import models
from graphprune.emit.onnx import to_onnx
from graphprune.frontends.onnx import load_onnx
from graphprune.passes import PASSES
from graphprune.passes.dce import DeadCodeElimination
from lossless import F, const, make, run_lossless, vi  # noqa: F401  (shared builders)

def run(proto):
    return run_lossless(DeadCodeElimination, proto)


def test_dead_chain_and_unused_constants_removed():
    proto = make([helper.make_node("Add", ["x", "b"], ["a"], name="live"),
                  helper.make_node("Mul", ["x", "w"], ["d1"], name="dead1"),
                  helper.make_node("Relu", ["d1"], ["d2"], name="dead2"),
                  helper.make_node("Sigmoid", ["d2"], ["d3"], name="dead3")],
                 [vi("x", [2, 3])], [vi("a", [2, 3])],
                 [const("b", np.ones(3, np.float32)), const("w", np.ones(3, np.float32)),
                  const("never_read", np.ones((4, 4), np.float32))])
    graph, result = run(proto)
    assert [n.name for n in graph.nodes] == ["live"]
    assert set(graph.constants) == {"b"}
    d = result.details
    assert d["nodes_removed"] == 3 and d["constants_removed"] == 2 and d["changed"] == 5
    assert d["nodes_removed_by_op"] == {"Mul": 1, "Relu": 1, "Sigmoid": 1}
    assert set(d["removed_nodes"]) == {"dead1", "dead2", "dead3"}
    assert d["removed_constants"] == ["never_read", "w"] and d["bytes_freed"] == 12 + 64
    assert result.params == (3 + 3 + 16, 3)


def test_partly_used_multi_output_node_and_interface_kept():
    """A Split with one unread output stays whole; an unread graph input stays in the interface."""
    proto = make([helper.make_node("Split", ["x"], ["s0", "s1"], axis=1, num_outputs=2, name="split"),
                  helper.make_node("Relu", ["s0"], ["y"]),
                  helper.make_node("Neg", ["unused_input"], ["n"], name="dead")],
                 [vi("x", [2, 4]), vi("unused_input", [3])], [vi("y", [2, 2])], opset=18)
    graph, result = run(proto)
    assert [n.op for n in graph.nodes] == ["Split", "Relu"]
    assert graph.nodes[0].outputs == ["s0", "s1"]
    assert graph.inputs == ["x", "unused_input"]
    assert result.details["removed_nodes"] == ["dead"]


def test_constant_read_by_subgraph_and_graph_output_constant_kept():
    then = helper.make_graph([helper.make_node("Add", ["x", "c"], ["t"])], "then", [], [vi("t", [3])])
    other = helper.make_graph([helper.make_node("Sub", ["x", "c"], ["e"])], "else", [], [vi("e", [3])])
    proto = make([helper.make_node("If", ["cond"], ["y"], then_branch=then, else_branch=other)],
                 [vi("x", [3]), vi("cond", [], TensorProto.BOOL)], [vi("y", [3]), vi("k", [2])],
                 [const("c", np.ones(3, np.float32)), const("k", np.zeros(2, np.float32)),
                  const("dead", np.zeros(2, np.float32))])
    graph, result = run(proto)
    assert set(graph.constants) == {"c", "k"}
    assert result.details["removed_constants"] == ["dead"]


def test_live_graph_unchanged():
    proto = make([helper.make_node("Relu", ["x"], ["y"])], [vi("x", [2])], [vi("y", [2])])
    graph = load_onnx(proto)
    result = DeadCodeElimination()(graph, verify=True)
    assert not result.modified and result.details["changed"] == 0 and result.verification is None


def test_registered():
    assert PASSES["dce"] is DeadCodeElimination


@pytest.mark.parametrize("name", ["mha_block", "resnet18", "tiny_cnn"])
@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
def test_real_exports(name, exporter):
    """Exports have no dead code; with a dead branch grafted on, exactly that branch goes."""
    graph = graphprune.load(models.export_onnx(name, exporter))
    assert not DeadCodeElimination()(graph).modified
    proto = to_onnx(graph, infer=False)
    first = proto.graph.node[0].output[0]
    proto.graph.node.extend([helper.make_node("Relu", [first], ["dead_a"]),
                             helper.make_node("Mul", ["dead_a", "dead_w"], ["dead_b"])])
    proto.graph.initializer.append(const("dead_w", np.float32(2.0)))
    graph, result = run(proto)
    assert result.details["nodes_removed"] == 2 and result.details["removed_constants"] == ["dead_w"]
    assert result.nodes == (len(proto.graph.node), len(proto.graph.node) - 2)
