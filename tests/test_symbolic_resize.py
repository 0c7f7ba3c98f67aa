"""Shape inference of Resize on dynamic sizes without ``sympy.simplify``.

onnxruntime's symbolic inference simplifies every Resize output size, which on
a YOLOv8-style export with dynamic height and width took 58 of a 70 s fold.
graphprune's inference makes the scale exact instead (2.0 → 2), so sympy's
automatic evaluation gives the same sizes; checked here against onnxruntime's
own result, expression by expression.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from graphprune.frontends import onnx as onnx_frontend

sympy = pytest.importorskip("sympy")
ssi = pytest.importorskip("onnxruntime.tools.symbolic_shape_infer")


def downsample_upsample_chain() -> onnx.ModelProto:
    """x → (stride-2 conv) ×2 → Resize ×2 → Resize ×2, concatenated with the matching skips."""
    inits, nodes = [], []
    current = "x"
    skips = []
    for k in range(2):
        w = f"w{k}"
        inits.append(numpy_helper.from_array(np.ones((4, 4, 3, 3), np.float32), w))
        nodes.append(helper.make_node("Conv", [current, w], [f"c{k}"], strides=[2, 2], pads=[1, 1, 1, 1]))
        skips.append(current)
        current = f"c{k}"
    inits.append(numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales"))
    for k in range(2):
        nodes.append(helper.make_node("Resize", [current, "", "scales"], [f"up{k}"], mode="nearest"))
        nodes.append(helper.make_node("Slice", [f"up{k}", "zero", "big", "two"], [f"crop{k}"]))
        current = f"crop{k}"
    inits += [numpy_helper.from_array(np.array(v, np.int64), n)
              for n, v in (("zero", [0, 0]), ("big", [1 << 30, 1 << 30]), ("two", [2, 3]))]
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                          ["batch", 4, "height", "width"])],
                              [helper.make_tensor_value_info(current, TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _dims(graph) -> dict[str, list]:
    return {vi.name: [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]
            for vi in (*graph.value_info, *graph.output)}


def _reference(model: onnx.ModelProto) -> dict[str, list]:
    inference = ssi.SymbolicShapeInference(2**31 - 1, auto_merge=True, guess_output_rank=False, verbose=0)
    inference._preprocess(onnx_frontend._skeleton(model))
    for _ in range(onnx_frontend.SYMBOLIC_ROUNDS):
        if not inference.run_:
            break
        inference._infer_impl()
    inference._update_output_from_vi()
    return _dims(inference.out_mp_.graph)


def _expr(text: str):
    """A size expression with its symbols as positive integers (``floor(1.0*batch)`` is ``batch``)."""
    symbols = {n: sympy.Symbol(n, integer=True, positive=True) for n in ("batch", "height", "width")}
    return onnx_frontend._exact_numbers(sympy.sympify(text, locals=symbols))


def test_resize_sizes_match_onnxruntimes_simplified_ones():
    model = downsample_upsample_chain()
    ours = _dims(onnx_frontend.infer_shapes(model))
    reference = _reference(model)
    assert {"up0", "up1", "crop1"} <= set(ours)
    for name in ("up0", "up1", "crop0", "crop1"):
        assert len(ours[name]) == len(reference[name]) == 4
        for a, b in zip(ours[name], reference[name]):
            if isinstance(a, int) or isinstance(b, int):
                assert a == b, (name, a, b)
            else:
                assert "." not in a, (name, a)  # no float left: 2.0 became 2
                assert sympy.simplify(_expr(a) - _expr(b)) == 0, (name, a, b)
