"""dedup: identical constants and nodes merge; near misses, random ops and interface names stay."""

import time

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import graphprune
from graphprune import models
from graphprune.emit.onnx import to_onnx
from graphprune.frontends.onnx import load_onnx
from graphprune.passes import PASSES
from graphprune.passes.dedup import Deduplicate
from lossless import F, const, make, run_lossless, vi  # noqa: F401  (shared builders)
from graphprune.verify import compare

def run(proto):
    return run_lossless(Deduplicate, proto)


def test_identical_constants_merge_keeping_the_first_name():
    w = np.random.default_rng(0).standard_normal(3).astype(np.float32)
    proto = make([helper.make_node("Mul", ["x", "w1"], ["a"]),
                  helper.make_node("Mul", ["a", "w2"], ["b"]),
                  helper.make_node("Add", ["b", "w3"], ["y"])],
                 [vi("x", [2, 3])], [vi("y", [2, 3])], [const("w1", w), const("w2", w), const("w3", w)])
    graph, result = run(proto)
    assert set(graph.constants) == {"w1"}
    assert [n.inputs[1] for n in graph.nodes] == ["w1", "w1", "w1"]
    assert result.details["constants_merged"] == 2 and result.details["bytes_saved"] == 24
    assert result.params == (9, 3)


@pytest.mark.parametrize("a, b", [
    (np.array([0.0], np.float32), np.array([-0.0], np.float32)),           # equal values, different bytes
    (np.array([1.0], np.float32), np.array([1065353216], np.int32)),       # same bytes, different dtype
    (np.arange(6, dtype=np.float32).reshape(2, 3), np.arange(6, dtype=np.float32).reshape(3, 2)),
    (np.array([1.0, 2.0], np.float32), np.array([1.0, 2.5], np.float32)),
], ids=["signed-zero", "dtype", "shape", "values"])
def test_near_miss_constants_stay(a, b):
    proto = make([helper.make_node("Identity", ["a"], ["ya"]), helper.make_node("Identity", ["b"], ["yb"])],
                 [], [vi("ya", list(a.shape), helper.np_dtype_to_tensor_dtype(a.dtype)),
                      vi("yb", list(b.shape), helper.np_dtype_to_tensor_dtype(b.dtype))],
                 [const("a", a), const("b", b)])
    graph = load_onnx(proto, fold_shapes=False)
    assert not Deduplicate()(graph).modified
    assert set(graph.constants) == {"a", "b"}


def test_interface_constants_stay():
    """Constants that are graph outputs or overridable graph inputs keep their own names."""
    one = np.ones(3, np.float32)
    proto = make([helper.make_node("Add", ["x", "c1"], ["y"]), helper.make_node("Add", ["y", "c2"], ["z"])],
                 [vi("x", [3]), vi("c2", [3])], [vi("z", [3]), vi("c3", [3])],
                 [const("c1", one), const("c2", one), const("c3", one)])
    graph = load_onnx(proto, fold_shapes=False)
    assert not Deduplicate()(graph).modified


def test_size_derived_constants_merge_only_with_the_same_sources():
    proto = make([helper.make_node("Reshape", ["x", "s1"], ["y"])], [vi("x", [2, 3])], [vi("y", [6])],
                 [const("s1", [6]), const("s2", [6])])
    graph = load_onnx(proto, fold_shapes=False)
    graph.nodes.append(graphprune.Node("r2", "Reshape", ["x", "s2"], ["z"]))
    graph.outputs.append("z")
    graph.folded["s2"] = {"x"}
    assert not Deduplicate()(graph).modified


def test_common_subexpressions_collapse_in_one_sweep():
    """Two copies of x -> Mul(c) -> Relu -> Softmax(axis=1), with c duplicated, become one chain."""
    c = np.full(3, 0.5, np.float32)
    nodes = []
    for k in ("p", "q"):
        nodes += [helper.make_node("Mul", ["x", f"c_{k}"], [f"m_{k}"]),
                  helper.make_node("Relu", [f"m_{k}"], [f"r_{k}"]),
                  helper.make_node("Softmax", [f"r_{k}"], [f"s_{k}"], axis=1)]
    nodes += [helper.make_node("LeakyRelu", ["s_p"], ["l1"], alpha=0.1),
              helper.make_node("LeakyRelu", ["s_q"], ["l2"], alpha=0.2),  # differs: stays
              helper.make_node("Sub", ["l1", "l2"], ["y"])]
    proto = make(nodes, [vi("x", [2, 3])], [vi("y", [2, 3])], [const("c_p", c), const("c_q", c)])
    graph, result = run(proto)
    assert [n.op for n in graph.nodes] == ["Mul", "Relu", "Softmax", "LeakyRelu", "LeakyRelu", "Sub"]
    assert graph.nodes[4].inputs == ["s_p"]
    assert result.details["constants_merged"] == 1
    assert result.details["nodes_merged_by_op"] == {"Mul": 1, "Relu": 1, "Softmax": 1}
    assert result.nodes == (9, 6)


def test_random_ops_never_merge():
    proto = make([helper.make_node("RandomNormalLike", ["x"], ["r1"], seed=1.0),
                  helper.make_node("RandomNormalLike", ["x"], ["r2"], seed=1.0),
                  helper.make_node("Sub", ["r1", "r2"], ["y"])],
                 [vi("x", [2, 3])], [vi("y", [2, 3])])
    graph = load_onnx(proto)
    assert not Deduplicate()(graph).modified and len(graph.nodes) == 3


def test_subgraph_nodes_never_merge():
    then = helper.make_graph([helper.make_node("Relu", ["x"], ["t"])], "then", [], [vi("t", [3])])
    other = helper.make_graph([helper.make_node("Neg", ["x"], ["e"])], "else", [], [vi("e", [3])])
    proto = make([helper.make_node("If", ["cond"], ["y1"], then_branch=then, else_branch=other),
                  helper.make_node("If", ["cond"], ["y2"], then_branch=then, else_branch=other),
                  helper.make_node("Add", ["y1", "y2"], ["y"])],
                 [vi("x", [3]), vi("cond", [], TensorProto.BOOL)], [vi("y", [3])])
    graph = load_onnx(proto)
    assert not Deduplicate()(graph, verify=True).modified


def test_duplicate_producing_a_graph_output_stays():
    proto = make([helper.make_node("Relu", ["x"], ["a"], name="first"),
                  helper.make_node("Relu", ["x"], ["y"], name="second"),
                  helper.make_node("Relu", ["x"], ["b"], name="third"),
                  helper.make_node("Add", ["a", "b"], ["z"])],
                 [vi("x", [3])], [vi("y", [3]), vi("z", [3])])
    graph, result = run(proto)
    assert [n.name for n in graph.nodes] == ["first", "second", "Add_3"]
    assert graph.nodes[2].inputs == ["a", "a"]
    assert result.details["skipped"][0]["node"] == "second"


def test_many_constants_scale():
    """Thousands of same-shape weights (two copies each): bucketed, not compared pairwise."""
    rng = np.random.default_rng(0)
    weights = [rng.standard_normal((64, 64)).astype(np.float32) for _ in range(1000)]
    inits = [const(f"w{i}", w) for i, w in enumerate(weights)] + \
            [const(f"v{i}", w.copy()) for i, w in enumerate(weights)]
    nodes = [helper.make_node("Sum", [f"w{i}" for i in range(1000)] + [f"v{i}" for i in range(1000)], ["y"])]
    graph = load_onnx(make(nodes, [], [vi("y", [64, 64])], inits), fold_shapes=False)
    start = time.perf_counter()
    details = Deduplicate().apply(graph)
    assert time.perf_counter() - start < 2.0
    assert details["constants_merged"] == 1000 and len(graph.constants) == 1000


def test_registered():
    assert PASSES["dedup"] is Deduplicate


@pytest.mark.parametrize("name", ["mha_block", "resnet18", "tiny_cnn"])
@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
def test_real_exports_exact(name, exporter):
    graph = graphprune.load(models.export_onnx(name, exporter))
    before = to_onnx(graph)
    result = Deduplicate()(graph, verify=True)
    assert compare(before, to_onnx(graph)).status == "exact"
    assert result.nodes[1] <= result.nodes[0]
    assert not Deduplicate()(graph).modified


def test_real_export_with_duplicated_branch():
    """The whole tiny_cnn body duplicated and summed: CSE folds the copy back into the original."""
    graph = graphprune.load(models.export_onnx("tiny_cnn", "legacy"))
    proto = to_onnx(graph, infer=False)
    body = list(proto.graph.node)
    out = proto.graph.output[0].name
    copies = []
    for node in body:
        twin = onnx.NodeProto()
        twin.CopyFrom(node)
        twin.name = node.name + "_copy"
        rename = lambda t: t + "_copy" if any(t in n.output for n in body) else t  # noqa: E731
        twin.input[:] = [rename(t) for t in node.input]
        twin.output[:] = [t + "_copy" for t in node.output]
        copies.append(twin)
    proto.graph.node.extend(copies + [helper.make_node("Add", [out + "_copy", out + "_copy"], [out + "_sum"])])
    total = onnx.ValueInfoProto()
    total.CopyFrom(proto.graph.output[0])
    total.name = out + "_sum"
    proto.graph.output.append(total)
    graph, result = run(proto)
    assert result.details["nodes_merged"] == len(body)
    assert len(graph.nodes) == len(body) + 1


def test_options_select_what_merges():
    c = np.full(3, 0.5, np.float32)
    proto = make([helper.make_node("Mul", ["x", "c1"], ["a"]), helper.make_node("Mul", ["x", "c2"], ["b"]),
                  helper.make_node("Relu", ["x"], ["r1"]), helper.make_node("Relu", ["x"], ["r2"]),
                  helper.make_node("Sum", ["a", "b", "r1", "r2"], ["y"])],
                 [vi("x", [2, 3])], [vi("y", [2, 3])], [const("c1", c), const("c2", c)])
    graph = load_onnx(proto)
    details = Deduplicate.from_options({"constants": "false"}).apply(graph)
    assert details["constants_merged"] == 0 and details["nodes_merged_by_op"] == {"Relu": 1}
    details = Deduplicate(nodes=False).apply(graph)
    assert details["constants_merged"] == 1 and details["nodes_merged"] == 0
