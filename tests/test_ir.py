"""IR edits: forwarding pass-through nodes keeps the model valid and its interface intact."""

import onnx
from onnx import TensorProto, helper

from graphprune.emit import to_onnx
from graphprune.frontends.onnx import load_onnx


def _vi(name, shape, dtype=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, dtype, shape)


def _model(nodes, inputs, outputs):
    graph = helper.make_graph(nodes, "g", inputs, outputs)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_forward_rewires_readers():
    model = _model([helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Identity", ["a"], ["b"]),
                    helper.make_node("Neg", ["b"], ["y"])], [_vi("x", [2])], [_vi("y", [2])])
    graph = load_onnx(model)
    assert graph.forward(graph.nodes[1])
    assert [n.op for n in graph.nodes] == ["Relu", "Neg"] and graph.nodes[1].inputs == ["a"]
    onnx.checker.check_model(to_onnx(graph), full_check=True)


def test_forward_keeps_graph_output_names():
    model = _model([helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Identity", ["a"], ["y"])],
                   [_vi("x", [2])], [_vi("y", [2])])
    graph = load_onnx(model)
    assert graph.forward(graph.nodes[1])
    assert graph.nodes[0].outputs == ["y"] and graph.outputs == ["y"]
    direct = load_onnx(_model([helper.make_node("Identity", ["x"], ["y"])], [_vi("x", [2])], [_vi("y", [2])]))
    assert not direct.forward(direct.nodes[0])  # graph input straight to output: must stay


def test_forward_refuses_names_read_by_subgraphs():
    then = helper.make_graph([helper.make_node("Relu", ["b"], ["t"])], "then", [], [_vi("t", [2])])
    other = helper.make_graph([helper.make_node("Neg", ["b"], ["e"])], "else", [], [_vi("e", [2])])
    model = _model([helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Identity", ["a"], ["b"]),
                    helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other)],
                   [_vi("x", [2]), _vi("c", [], TensorProto.BOOL)], [_vi("y", [2])])
    graph = load_onnx(model)
    assert not graph.forward(graph.nodes[1])
    onnx.checker.check_model(to_onnx(graph), full_check=True)
