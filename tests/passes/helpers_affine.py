"""Small ONNX graphs and checks for the folding-pass tests (fold-batchnorm, fold-channel-affine).

``Net`` wraps ``onnx.helper`` with random float32 weights from a fixed seed;
``fold`` runs a pass and checks that the result is valid ONNX and reproduces
the input model in onnxruntime; ``export_eval`` exports a torch module in eval
mode without constant folding, which keeps real BatchNormalization nodes.
"""

from __future__ import annotations

import collections
import contextlib
import io
import warnings

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import graphprune
from graphprune.emit.onnx import to_onnx
from graphprune.verify import compare

TOLERANCE = 1e-5


class Net:
    """A graph under construction; every method returns the name of the tensor it made."""

    def __init__(self, opset: int = 17, seed: int = 0):
        self.opset = opset
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits, self.inputs = [], [], []
        self.count = 0

    def name(self, base: str) -> str:
        self.count += 1
        return f"{base}{self.count}"

    def input(self, *shape, name: str = "x") -> str:
        self.inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape)))
        return name

    def const(self, value, name: str | None = None) -> str:
        name = name or self.name("k")
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def weight(self, *shape, name: str | None = None) -> str:
        return self.const(self.rng.standard_normal(shape).astype(np.float32), name)

    def op(self, op_type: str, *inputs: str, name: str | None = None, outputs: int = 1, **attrs) -> str:
        name = name or self.name(op_type.lower())
        outs = [name] if outputs == 1 else [f"{name}_{i}" for i in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, name=name, **attrs))
        return outs[0]

    def conv(self, x: str, cin: int, cout: int, k: int = 3, group: int = 1, bias: bool = True,
             pad: int | None = None, name: str | None = None, **attrs) -> str:
        name = name or self.name("conv")
        w = self.weight(cout, cin // group, k, k, name=f"{name}_w")
        b = [self.weight(cout, name=f"{name}_b")] if bias else []
        pad = k // 2 if pad is None else pad
        return self.op("Conv", x, w, *b, name=name, group=group, pads=[pad] * 4, **attrs)

    def bn(self, x: str, c: int, name: str | None = None, **attrs) -> str:
        """An inference BatchNormalization with non-trivial scale, bias, mean and var."""
        name = name or self.name("bn")
        r = self.rng
        params = [r.uniform(0.5, 1.5, c), r.normal(0, 0.5, c), r.normal(0, 0.5, c), r.uniform(0.5, 1.5, c)]
        names = [self.const(p.astype(np.float32), f"{name}_{role}")
                 for p, role in zip(params, ("scale", "bias", "mean", "var"))]
        return self.op("BatchNormalization", x, *names, name=name, epsilon=1e-3, **attrs)

    def build(self, *outputs: str) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, "test", self.inputs,
                                  [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
                                  initializer=self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)])
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
        del model.graph.output[:]
        model.graph.output.extend(inferred.graph.output)
        onnx.checker.check_model(model, full_check=True)
        return model


def op_counts(graph_or_model) -> collections.Counter:
    nodes = graph_or_model.graph.node if isinstance(graph_or_model, onnx.ModelProto) else graph_or_model.nodes
    return collections.Counter(getattr(n, "op_type", None) or n.op for n in nodes)


def fold(model: onnx.ModelProto, pass_obj, tolerance: float = TOLERANCE):
    """Run ``pass_obj`` on ``model``; check valid ONNX, unchanged interface and outputs.

    Returns ``(graph, result)``.
    """
    graph = graphprune.load(model)
    result = pass_obj(graph)
    after = to_onnx(graph)
    onnx.checker.check_model(after, full_check=True)
    assert [o.name for o in after.graph.output] == [o.name for o in model.graph.output]
    verification = compare(model, after, tolerance=tolerance)
    assert verification.status == "exact", verification.message
    return graph, result


def unchanged(model: onnx.ModelProto, pass_obj) -> dict:
    """Run ``pass_obj``, check it left the graph alone, and return its details."""
    graph = graphprune.load(model)
    before = [(n.op, list(n.inputs), list(n.outputs)) for n in graph.nodes]
    result = pass_obj(graph)
    assert not result.modified and result.details["changed"] == 0
    assert [(n.op, list(n.inputs), list(n.outputs)) for n in graph.nodes] == before
    return result.details


def reasons(details: dict, node: str | None = None) -> str:
    """Every skip reason (of ``node`` if given), joined, for ``in`` checks."""
    return " | ".join(s["reason"] for s in details["skipped"] if node is None or s["node"] == node)


def export_eval(module, example, opset: int = 17) -> onnx.ModelProto:
    """Legacy export of ``module.eval()`` without constant folding (BN nodes survive)."""
    import torch

    buffer = io.BytesIO()
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (example,), buffer, dynamo=False, opset_version=opset,
                          do_constant_folding=False, input_names=["input"], output_names=["output"])
    return onnx.load_from_string(buffer.getvalue())
