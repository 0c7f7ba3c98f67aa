"""Tiny ONNX graphs for the op-rule tests, and the checks every prune must pass.

Most tests build ``x -> Conv "producer" (3 -> C) -> op under test -> Conv
"consumer" (C -> 4) -> y`` so the channels between producer and consumer form
one prunable group, then prune it with :func:`prune_ok`. Weights are random
float32 from a fixed seed; node ``n``'s weight and bias are named ``n_w`` and
``n_b`` so tests can read their kept indices from the report.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import graphprune


class Builder:
    """A small wrapper over ``onnx.helper``; every ``op`` returns its output name(s)."""

    def __init__(self, opset: int = 17, seed: int = 0):
        self.opset = opset
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self._count = 0

    def _name(self, base: str) -> str:
        self._count += 1
        return f"{base}{self._count}"

    def input(self, shape, name: str = "x") -> str:
        self.inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape)))
        return name

    def const(self, value, name: str | None = None) -> str:
        name = name or self._name("const")
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def ints(self, values, name: str | None = None, dtype=np.int64) -> str:
        return self.const(np.array(values, dtype=dtype), name)

    def weight(self, *shape, name: str | None = None) -> str:
        return self.const(self.rng.standard_normal(shape).astype(np.float32), name)

    def op(self, op_type: str, *inputs: str, outputs: int = 1, name: str | None = None, **attrs):
        name = name or self._name(op_type.lower())
        outs = [name] if outputs == 1 else [f"{name}_{i}" for i in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, name=name, **attrs))
        return outs[0] if outputs == 1 else outs

    def conv(self, x: str, cin: int, cout: int, k: int = 1, group: int = 1, bias: bool = True,
             spatial: int = 2, name: str = "conv") -> str:
        w = self.weight(cout, cin // group, *[k] * spatial, name=f"{name}_w")
        b = [self.weight(cout, name=f"{name}_b")] if bias else []
        return self.op("Conv", x, w, *b, name=name, group=group, pads=[k // 2] * 2 * spatial)

    def build(self, *outputs: str, shapes: dict | None = None) -> onnx.ModelProto:
        """The model with ``outputs``; their shapes are inferred unless given in ``shapes``."""
        graph = helper.make_graph(
            self.nodes, "test", self.inputs,
            [helper.make_tensor_value_info(o, TensorProto.UNDEFINED, None) for o in outputs],
            initializer=self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)])
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
        del model.graph.output[:]
        for out in inferred.graph.output:  # declare the output shapes
            if shapes and out.name in shapes:
                out = helper.make_tensor_value_info(out.name, out.type.tensor_type.elem_type,
                                                    shapes[out.name])
            model.graph.output.append(out)
        onnx.checker.check_model(model, full_check=True)
        return model


def sandwich(middle, opset: int = 17, channels: int = 8, spatial: int = 2, size: int = 8,
             consumer: bool = True) -> onnx.ModelProto:
    """``x -> producer Conv(3->channels) -> middle(b, t) -> consumer Conv(channels->4) -> y``.

    ``middle(builder, tensor)`` adds the ops under test and returns its output.
    With ``consumer=False`` the caller's ``middle`` ends the graph itself.
    """
    b = Builder(opset)
    x = b.input([1, 3, *[size] * spatial])
    h = b.conv(x, 3, channels, k=3, spatial=spatial, name="producer")
    h = middle(b, h)
    if consumer:
        h = b.conv(h, channels, 4, spatial=spatial, name="consumer")
    return b.build(h)


def prune_ok(model: onnx.ModelProto, status: str = "exact", ratio: float = 0.5):
    """Prune and check what every prune must satisfy: verified, valid ONNX, smaller."""
    result = graphprune.prune(model, ratio=ratio)
    assert result.verification.status == status, result.verification.message
    onnx.checker.check_model(result.model, full_check=True)
    before, after = result.report["params"]
    assert after < before, result.report["params"]
    return result


def kept(result, name: str, axis: int) -> list[int]:
    """Kept indices of initializer ``name`` along ``axis`` (from the report)."""
    return result.report["initializers"][name][str(axis)]


def group_at(model, tensor: str, axis: int):
    """The channel group of ``tensor``'s ``axis``; ``model`` may be a ChannelAnalysis."""
    analysis = model if hasattr(model, "group_of_dim") else graphprune.analyse_model(model)
    group = analysis.group_of_dim(tensor, axis)
    assert group is not None, f"no dim for {tensor}[{axis}]"
    return group


def node(model: onnx.ModelProto, name: str) -> onnx.NodeProto:
    return next(n for n in model.graph.node if n.name == name)


def attr(model: onnx.ModelProto, node_name: str, attr_name: str):
    n = node(model, node_name)
    return next(helper.get_attribute_value(a) for a in n.attribute if a.name == attr_name)


def initializer(model: onnx.ModelProto, name: str) -> np.ndarray:
    for init in model.graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init)
    raise KeyError(name)


def input_value(model: onnx.ModelProto, node_name: str, index: int) -> np.ndarray:
    """The constant value feeding input ``index`` of node ``node_name``."""
    return initializer(model, node(model, node_name).input[index])
