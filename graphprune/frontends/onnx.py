"""ONNX front end: a ``.onnx`` file or ``ModelProto`` to the IR.

Shapes come from ONNX shape inference with data propagation, so reshape
targets computed from ``Shape`` chains still get static sizes. External-data
models are loaded relative to the model file. ``Constant`` nodes become
constants of the IR exactly like initializers.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..errors import InputError, ShapeError
from ..ir import Graph, Node, TensorInfo
from ..shape_folding import fold_static_shapes

_TWO_GB = 2**31 - 1


def read_model(model: str | os.PathLike | onnx.ModelProto) -> onnx.ModelProto:
    """Load a model with its external data; errors name the file and the fix."""
    if isinstance(model, onnx.ModelProto):
        return model
    path = Path(model)
    if not path.is_file():
        raise InputError(f"{path}: no such file (pass the path of an .onnx model)")
    try:
        return onnx.load(str(path), load_external_data=True)
    except Exception as exc:  # protobuf / external data errors have many types
        raise InputError(f"{path}: not a readable ONNX model ({exc.__class__.__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else 'no detail'}); "
                         "check the file and any external-data files beside it") from exc


def infer_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Shape inference with data propagation; models over 2 GB go through a file."""
    try:
        if model.ByteSize() < _TWO_GB:
            return onnx.shape_inference.infer_shapes(model, data_prop=True)
    except ValueError:  # ByteSize overflow on huge protos
        pass
    except onnx.shape_inference.InferenceError as exc:
        raise ShapeError(f"ONNX shape inference failed: {exc}; "
                         "run onnx.checker on the model or re-export it") from exc
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = os.path.join(tmp, "in.onnx"), os.path.join(tmp, "out.onnx")
        onnx.save(model, src, save_as_external_data=True, location="in.data")
        onnx.shape_inference.infer_shapes_path(src, dst, data_prop=True)
        return onnx.load(dst, load_external_data=True)


def _tensor_info(vi: onnx.ValueInfoProto) -> TensorInfo:
    tt = vi.type.tensor_type
    dtype = None
    if tt.elem_type:
        try:
            dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tt.elem_type))
        except (KeyError, TypeError):
            dtype = None
    if not tt.HasField("shape"):
        return TensorInfo(None, dtype)
    dims = []
    for d in tt.shape.dim:
        if d.HasField("dim_value"):
            dims.append(int(d.dim_value))
        elif d.HasField("dim_param"):
            dims.append(d.dim_param)
        else:
            dims.append(None)
    return TensorInfo(tuple(dims), dtype)


def _outer_names(graph: onnx.GraphProto) -> set[str]:
    """Names a subgraph reads from enclosing scopes (implicit inputs)."""
    local = {i.name for i in graph.input} | {i.name for i in graph.initializer}
    for n in graph.node:
        local.update(n.output)
    used = set()
    for n in graph.node:
        used.update(t for t in n.input if t)
        for a in n.attribute:
            for g in ([a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)):
                used |= _outer_names(g)
    return used - local


def constant_node_value(node: onnx.NodeProto) -> np.ndarray:
    """The value of a ``Constant`` node, whichever attribute carries it."""
    attr = node.attribute[0]
    if attr.name == "value":
        return numpy_helper.to_array(attr.t)
    if attr.name == "sparse_value":
        raise InputError(f"Constant node '{node.name}' holds a sparse tensor, which is not supported")
    value = helper.get_attribute_value(attr)
    if attr.name.startswith("value_string"):
        return np.array(value, dtype=object)
    dtype = np.float32 if attr.name.startswith("value_float") else np.int64
    return np.array(value, dtype=dtype)


def load_onnx(model: str | os.PathLike | onnx.ModelProto, fold_shapes: bool = True) -> Graph:
    """Read an ONNX model into the IR.

    Args:
        model: path to a ``.onnx`` file or an in-memory ``ModelProto``.
        fold_shapes: evaluate shape arithmetic over static shapes into
            constants, so reshape targets and weight transposes are visible to
            the channel rules (lossless).
    """
    proto = read_model(model)
    where = str(model) if not isinstance(model, onnx.ModelProto) else (proto.graph.name or "model")
    try:
        inferred = infer_shapes(proto)
    except ShapeError as exc:
        raise ShapeError(f"{where}: {exc}") from exc
    g = inferred.graph
    tensors: dict[str, TensorInfo] = {}
    for vi in (*g.input, *g.value_info, *g.output):
        tensors[vi.name] = _tensor_info(vi)
    constants = {init.name: numpy_helper.to_array(init) for init in g.initializer}
    inputs = [i.name for i in g.input if i.name not in constants]
    for name in inputs:
        if tensors[name].shape is None:
            raise ShapeError(f"{where}: graph input '{name}' has no shape; "
                             "re-export the model with input shapes")
    nodes: list[Node] = []
    for i, n in enumerate(g.node):
        if n.op_type == "Constant" and n.domain in ("", "ai.onnx"):
            constants[n.output[0]] = constant_node_value(n)
            continue
        raw = {a.name: a for a in n.attribute}
        implicit = set()
        for a in n.attribute:
            for sub in ([a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)):
                implicit |= _outer_names(sub)
        nodes.append(Node(
            name=n.name or f"{n.op_type}_{i}", op=n.op_type, inputs=list(n.input),
            outputs=list(n.output), domain=n.domain,
            attrs={a.name: helper.get_attribute_value(a) for a in n.attribute},
            raw_attrs=raw, implicit_inputs=sorted(implicit)))
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 1)
    graph = Graph(nodes, inputs, [o.name for o in g.output], tensors, constants, opset,
                  name=g.name, source=proto)
    if fold_shapes:
        fold_static_shapes(graph)
    return graph
