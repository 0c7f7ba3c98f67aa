"""remove-identities: each no-op kind, its near misses, chain merges, graph-output safety, real exports."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import graphprune
from graphprune import models
from graphprune.emit.onnx import to_onnx
from graphprune.frontends.onnx import load_onnx
from graphprune.passes.remove_identities import RemoveIdentities
from lossless import F, const, make, run_lossless, vi  # noqa: F401  (shared builders)
from graphprune.verify import compare, session

def run(proto):
    return run_lossless(RemoveIdentities, proto)


def ops(graph):
    return [n.op for n in graph.nodes]


def sandwich(node, shape, out_shape=None, inits=(), opset=17, elem=F):
    """x -> Relu -> <node: "a" -> "b"> -> Relu -> y, so the node under test sits inside the graph."""
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="pre"), node,
             helper.make_node("Relu", ["b"], ["y"], name="post")]
    if elem != F:
        nodes[2] = helper.make_node("Cast", ["b"], ["y"], to=F, name="post")
    return make(nodes, [vi("x", shape)], [vi("y", out_shape or shape)], inits, opset)


@pytest.mark.parametrize("case, kind", [
    (lambda: sandwich(helper.make_node("Identity", ["a"], ["b"]), [2, 3]), "Identity"),
    (lambda: sandwich(helper.make_node("Dropout", ["a"], ["b"], ratio=0.5), [2, 3], opset=11), "Dropout"),
    (lambda: sandwich(helper.make_node("Dropout", ["a", "r", "t"], ["b"]), [2, 3],
                      inits=[const("r", np.float32(0.5)), const("t", np.bool_(False))]), "Dropout"),
    (lambda: sandwich(helper.make_node("Dropout", ["a"], ["b", "mask"]), [2, 3]), "Dropout"),
    (lambda: sandwich(helper.make_node("Cast", ["a"], ["b"], to=F), [2, 3]), "Cast"),
    (lambda: sandwich(helper.make_node("Reshape", ["a", "s"], ["b"]), [2, 3], inits=[const("s", [2, -1])]),
     "Reshape"),
    (lambda: sandwich(helper.make_node("Flatten", ["a"], ["b"], axis=1), [2, 3]), "Flatten"),
    (lambda: sandwich(helper.make_node("Squeeze", ["a"], ["b"]), [2, 3]), "Squeeze"),
    (lambda: sandwich(helper.make_node("Transpose", ["a"], ["b"], perm=[0, 1, 2]), [2, 3, 4]), "Transpose"),
    (lambda: sandwich(helper.make_node("Slice", ["a", "st", "en", "ax", "sp"], ["b"]), [2, 3, 4],
                      inits=[const("st", [0, -7]), const("en", [2**62, 4]), const("ax", [0, -1]),
                             const("sp", [1, 1])]), "Slice"),
    (lambda: sandwich(helper.make_node("Slice", ["a"], ["b"], starts=[0], ends=[99], axes=[1]), [2, 3],
                      opset=9), "Slice"),
    (lambda: sandwich(helper.make_node("Pad", ["a", "p"], ["b"], mode="reflect"), [2, 3],
                      inits=[const("p", [0, 0, 0, 0])]), "Pad"),
    (lambda: sandwich(helper.make_node("Expand", ["a", "s"], ["b"]), [2, 3], inits=[const("s", [1, 3])]),
     "Expand"),
])
def test_noop_removed(case, kind):
    graph, result = run(case())
    assert ops(graph) == ["Relu", "Relu"]
    assert result.details["removed"] == {kind: 1}
    assert result.nodes == (3, 2)


@pytest.mark.parametrize("case", [
    lambda: sandwich(helper.make_node("Cast", ["a"], ["b"], to=TensorProto.DOUBLE), [2, 3],
                     elem=TensorProto.DOUBLE),
    lambda: sandwich(helper.make_node("Reshape", ["a", "s"], ["b"]), [2, 3], [3, 2], inits=[const("s", [3, 2])]),
    lambda: sandwich(helper.make_node("Transpose", ["a"], ["b"], perm=[1, 0]), [2, 3], [3, 2]),
    lambda: sandwich(helper.make_node("Transpose", ["a"], ["b"]), [2, 3], [3, 2]),  # default perm reverses
    lambda: sandwich(helper.make_node("Slice", ["a", "st", "en"], ["b"]), [2, 3], [2, 2],
                     inits=[const("st", [0, 1]), const("en", [2, 3])]),
    lambda: sandwich(helper.make_node("Slice", ["a", "st", "en", "ax", "sp"], ["b"]), [2, 3],
                     inits=[const("st", [-1]), const("en", [-(2**62)]), const("ax", [1]), const("sp", [-1])]),
    lambda: sandwich(helper.make_node("Pad", ["a", "p"], ["b"]), [2, 3], [2, 4],
                     inits=[const("p", [0, 0, 0, 1])]),
    lambda: sandwich(helper.make_node("Expand", ["a", "s"], ["b"]), [2, 3], [4, 2, 3], inits=[const("s", [4, 1, 1])]),
    lambda: sandwich(helper.make_node("Squeeze", ["a"], ["b"]), [2, 1, 3], [2, 3]),
], ids=["cast-changes-dtype", "reshape-changes-shape", "transpose-permutes", "transpose-default-perm",
        "slice-partial", "slice-reversed", "pad-nonzero", "expand-broadcasts", "squeeze-drops-axis"])
def test_near_misses_left_alone(case):
    graph = load_onnx(case(), fold_shapes=False)
    result = RemoveIdentities()(graph, verify=True)
    assert not result.modified
    assert len(graph.nodes) == 3


def test_dropout_training_mode_and_used_mask_stay():
    proto = make([helper.make_node("Dropout", ["x", "r", "t"], ["d"], name="train"),
                  helper.make_node("Dropout", ["x"], ["e", "mask"], name="masked"),
                  helper.make_node("Dropout", ["x", "r", "tm"], ["f"], name="runtime"),
                  helper.make_node("Cast", ["mask"], ["m"], to=F)],
                 [vi("x", [2, 3]), vi("tm", [], TensorProto.BOOL)],
                 [vi("d", [2, 3]), vi("e", [2, 3]), vi("m", [2, 3]), vi("f", [2, 3])],
                 [const("r", np.float32(0.5)), const("t", np.bool_(True))])
    graph = load_onnx(proto)
    result = RemoveIdentities()(graph)
    assert not result.modified
    reasons = {s["node"]: s["reason"] for s in result.details["skipped"]}
    assert reasons == {"train": "training_mode is true", "masked": "its mask output is used",
                       "runtime": "training_mode is a run-time input"}


def test_identity_chains_and_graph_outputs():
    """Identity chains collapse; an Identity producing a graph output hands its name to the producer."""
    proto = make([helper.make_node("Relu", ["x"], ["a"]),
                  helper.make_node("Identity", ["a"], ["b"]),
                  helper.make_node("Identity", ["b"], ["c"]),
                  helper.make_node("Sigmoid", ["c"], ["d"]),
                  helper.make_node("Identity", ["d"], ["y"]),
                  helper.make_node("Identity", ["a"], ["z"])],
                 [vi("x", [2, 3])], [vi("y", [2, 3]), vi("z", [2, 3])])
    graph, result = run(proto)
    assert ops(graph) == ["Relu", "Sigmoid"]
    assert graph.nodes[0].outputs == ["z"] and graph.nodes[1].outputs == ["y"]
    assert result.details["removed"] == {"Identity": 4}


def test_identity_from_graph_input_to_graph_output_stays_valid():
    proto = make([helper.make_node("Identity", ["x"], ["y"], name="passthrough"),
                  helper.make_node("Identity", ["w"], ["z"], name="weight_out"),
                  helper.make_node("Identity", ["y"], ["v"], name="output_to_output")],
                 [vi("x", [2, 3])], [vi("y", [2, 3]), vi("z", [3]), vi("v", [2, 3])],
                 [const("w", np.ones(3, np.float32))])
    graph = load_onnx(proto, fold_shapes=False)
    result = RemoveIdentities()(graph, verify=True)
    assert not result.modified and len(graph.nodes) == 3
    assert {s["node"] for s in result.details["skipped"]} == {"passthrough", "weight_out", "output_to_output"}
    model = to_onnx(graph)
    onnx.checker.check_model(model, full_check=True)
    session(model)


def test_tensor_read_by_subgraph_is_not_renamed():
    then = helper.make_graph([helper.make_node("Relu", ["b"], ["t"])], "then", [], [vi("t", [2, 3])])
    other = helper.make_graph([helper.make_node("Neg", ["b"], ["e"])], "else", [], [vi("e", [2, 3])])
    proto = make([helper.make_node("Relu", ["x"], ["a"]),
                  helper.make_node("Identity", ["a"], ["b"], name="read_by_branch"),
                  helper.make_node("If", ["cond"], ["y"], then_branch=then, else_branch=other)],
                 [vi("x", [2, 3]), vi("cond", [], TensorProto.BOOL)], [vi("y", [2, 3])])
    graph = load_onnx(proto)
    result = RemoveIdentities()(graph, verify=True)
    assert not result.modified
    assert result.details["skipped"][0]["node"] == "read_by_branch"


def transposes(p1, p2, shape=(2, 3, 4), extra_reader=False):
    nodes = [helper.make_node("Relu", ["x"], ["a"]),
             helper.make_node("Transpose", ["a"], ["t1"], perm=p1, name="t1"),
             helper.make_node("Transpose", ["t1"], ["t2"], perm=p2, name="t2"),
             helper.make_node("Relu", ["t2"], ["y"])]
    mid = np.empty(shape).transpose(p1)
    outputs = [vi("y", list(mid.transpose(p2).shape))]
    if extra_reader:
        nodes.append(helper.make_node("Neg", ["t1"], ["z"]))
        outputs.append(vi("z", list(mid.shape)))
    return make(nodes, [vi("x", list(shape))], outputs)


def test_inverse_transpose_pair_removed():
    graph, result = run(transposes([1, 2, 0], [2, 0, 1]))
    assert ops(graph) == ["Relu", "Relu"]
    assert result.details["merged"] == {"Transpose": 1} and result.details["removed"] == {"Transpose": 1}


def test_non_inverse_transpose_pair_merged():
    graph, result = run(transposes([1, 0, 2], [0, 2, 1]))
    assert ops(graph) == ["Relu", "Transpose", "Relu"]
    # x (2,3,4) -> t1 (3,2,4) -> t2 (3,4,2): axis i of the result reads axis c[i] of x
    assert graph.nodes[1].attr("perm") == [1, 2, 0]
    assert graph.shape("t2") == (3, 4, 2)
    assert result.details["merged"] == {"Transpose": 1} and "Transpose" not in result.details["removed"]


def test_transpose_chain_with_default_perm():
    graph, _ = run(transposes(None, [2, 1, 0]))
    assert ops(graph) == ["Relu", "Relu"]


def test_shared_transpose_not_merged():
    graph = load_onnx(transposes([1, 2, 0], [2, 0, 1], extra_reader=True))
    assert not RemoveIdentities()(graph, verify=True).modified


def test_reshape_chain_becomes_one_reshape():
    proto = make([helper.make_node("Relu", ["x"], ["a"]),
                  helper.make_node("Reshape", ["a", "s1"], ["r1"]),
                  helper.make_node("Reshape", ["r1", "s2"], ["r2"]),
                  helper.make_node("Reshape", ["r2", "s3"], ["y"])],
                 [vi("x", [2, 3, 4])], [vi("y", [6, 2, 2])],
                 [const("s1", [24]), const("s2", [6, -1]), const("s3", [0, 2, -1])])
    graph, result = run(proto)
    assert ops(graph) == ["Relu", "Reshape"]
    reshape = graph.nodes[1]
    assert reshape.inputs[0] == "a" and graph.constants[reshape.inputs[1]].tolist() == [6, 2, 2]
    assert result.details["merged"] == {"Reshape": 2}
    assert not {"s1", "s2", "s3"} & set(graph.constants)


def test_reshape_pair_back_to_input_shape_removed():
    proto = make([helper.make_node("Relu", ["x"], ["a"]),
                  helper.make_node("Reshape", ["a", "s1"], ["r1"]),
                  helper.make_node("Reshape", ["r1", "s2"], ["r2"]),
                  helper.make_node("Relu", ["r2"], ["y"])],
                 [vi("x", [2, 3])], [vi("y", [2, 3])], [const("s1", [6]), const("s2", [2, 3])])
    graph, result = run(proto)
    assert ops(graph) == ["Relu", "Relu"]
    assert result.details["merged"] == {"Reshape": 1} and result.details["removed"] == {"Reshape": 1}


@pytest.mark.parametrize("name", ["mha_block", "resnet18", "tiny_cnn"])
@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
def test_real_exports_unchanged_and_exact(name, exporter):
    graph = graphprune.load(models.export_onnx(name, exporter))
    before = to_onnx(graph)
    result = RemoveIdentities()(graph, verify=True)
    assert compare(before, to_onnx(graph)).status == "exact"
    assert result.nodes[1] <= result.nodes[0]
    assert not RemoveIdentities()(graph).modified


def test_export_with_identities_inserted():
    """A real export with an Identity and a no-op Cast spliced after every Relu."""
    graph = graphprune.load(models.export_onnx("tiny_cnn", "legacy"))
    proto = to_onnx(graph, infer=False)
    nodes = []
    for node in proto.graph.node:
        nodes.append(node)
        if node.op_type == "Relu":
            out = node.output[0]
            node.output[0] = out + "_raw"
            nodes.append(helper.make_node("Identity", [out + "_raw"], [out + "_id"]))
            nodes.append(helper.make_node("Cast", [out + "_id"], [out], to=F))
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    graph, result = run(proto)
    assert result.details["removed"] == {"Cast": 2, "Identity": 2}
    assert result.nodes == (len(nodes), len(nodes) - 4)


@pytest.mark.parametrize("op", ["Concat", "Sum", "Max", "Min", "Mean"])
def test_single_input_variadic_is_removed(op):
    attrs = {"axis": 1} if op == "Concat" else {}
    proto = make([helper.make_node("Relu", ["x"], ["a"]), helper.make_node(op, ["a"], ["b"], **attrs),
                  helper.make_node("Neg", ["b"], ["y"])], [vi("x", [1, 3])], [vi("y", [1, 3])])
    graph, result = run(proto)
    assert [n.op for n in graph.nodes] == ["Relu", "Neg"]


def test_two_input_concat_stays():
    proto = make([helper.make_node("Concat", ["x", "x"], ["y"], axis=1)], [vi("x", [1, 3])], [vi("y", [1, 6])])
    graph, result = run(proto)
    assert [n.op for n in graph.nodes] == ["Concat"]


@pytest.mark.parametrize("op, value, first", [("Mul", 1.0, False), ("Mul", 1.0, True), ("Add", 0.0, True),
                                              ("Div", 1.0, False), ("Sub", 0.0, False)])
def test_neutral_constant_operand_goes(op, value, first):
    """A norm weight of ones (``x * 1``), a zero bias (``x + 0``): removed, either operand order."""
    c = const("c", np.full((4,), value, dtype=np.float32))
    inputs = ["c", "x"] if first else ["x", "c"]
    nodes = [helper.make_node("Relu", ["x0"], ["x"]), helper.make_node(op, inputs, ["y0"]),
             helper.make_node("Relu", ["y0"], ["y"])]
    graph, _ = run_lossless(RemoveIdentities, make(nodes, [vi("x0", ["n", 4])], [vi("y", ["n", 4])], [c]))
    assert [n.op for n in graph.nodes] == ["Relu", "Relu"]


def test_neutral_constant_that_broadcasts_stays():
    c = const("c", np.ones((3, 4), dtype=np.float32))
    nodes = [helper.make_node("Mul", ["x", "c"], ["y"])]
    graph = load_onnx(make(nodes, [vi("x", [1, 4])], [vi("y", [3, 4])], [c]), fold_shapes=False)
    assert not RemoveIdentities()(graph).modified
    assert [n.op for n in graph.nodes] == ["Mul"]
