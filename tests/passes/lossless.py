"""Shared by the cleanup-pass tests: tiny graph builders and the lossless check.

``run_lossless(PassClass, proto)`` loads ``proto`` without load-time folding,
runs the pass with verification, and checks what every lossless pass owes:
valid ONNX, outputs equal to the input's, the same interface, and nothing
left to do on a second run.
"""

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from graphprune.emit.onnx import to_onnx
from graphprune.frontends.onnx import load_onnx
from graphprune.verify import compare

F = TensorProto.FLOAT


def vi(name, shape, elem=F):
    return helper.make_tensor_value_info(name, elem, shape)


def const(name, value):
    return numpy_helper.from_array(np.asarray(value), name)


def make(nodes, inputs, outputs, inits=(), opset=17):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def run_lossless(pass_cls, proto, **options):
    """Apply ``pass_cls(**options)`` verified; return (graph, PassResult)."""
    graph = load_onnx(proto, fold_shapes=False)
    before = to_onnx(graph)
    result = pass_cls(**options)(graph, verify=True)
    after = to_onnx(graph)
    onnx.checker.check_model(after, full_check=True)
    assert compare(before, after).status == "exact"
    assert [i.name for i in after.graph.input] == [i.name for i in before.graph.input]
    assert [o.name for o in after.graph.output] == [o.name for o in proto.graph.output]
    again = pass_cls(**options)(graph, verify=True)
    assert not again.modified, again.details
    return graph, result
