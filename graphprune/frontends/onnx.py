"""ONNX front end: a ``.onnx`` file or ``ModelProto`` to the IR.

Shapes come from ONNX shape inference with data propagation, so reshape
targets computed from ``Shape`` chains still get static sizes. External-data
models are loaded relative to the model file. ``Constant`` nodes become
constants of the IR exactly like initializers.
"""

from __future__ import annotations

import contextlib

import os
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..errors import InputError, ShapeError, shorten
from ..ir import Graph, Node, TensorInfo
from ..shape_folding import fold_static_shapes
from ..symbolic import safe_symbol
from ..weights import Spill, anchor_external, has_references, tensor_array

def read_model(model: str | os.PathLike | onnx.ModelProto) -> onnx.ModelProto:
    """Load a model with its external data and validate it (:mod:`graphprune.validate`).

    Errors name the file and the fix. Validation sorts unsorted nodes and
    renames duplicate node names in place (a ``ModelProto`` argument too).
    """
    from ..validate import validate_model

    if isinstance(model, onnx.ModelProto):
        return validate_model(model, f"model '{model.graph.name}'" if model.graph.name else "the model")
    path = Path(model)
    if not path.is_file():
        raise InputError(f"{path}: no such file (pass the path of an .onnx model)")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf / external data errors have many types
        raise InputError(f"{path}: not a readable ONNX model ({exc.__class__.__name__}: "
                         f"{shorten(str(exc), 160) if str(exc) else 'no detail'}); "
                         "check the file and any external-data files beside it") from exc
    anchor_external(proto, path.parent, str(path))  # weights stay in their files, mapped when read
    return validate_model(proto, str(path))


SKELETON_MAX_ELEMENTS = 1 << 12  # initializers up to this size keep their values (shape data)


def _skeleton(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model without large weight data: large initializers and Constant nodes become typed inputs.

    Shape inference only needs their shapes, so this makes inference fast and
    keeps it under protobuf's 2 GB limit whatever the model's size.
    """
    g = model.graph
    inputs = list(g.input)
    listed = {i.name for i in inputs}
    small = []
    for init in g.initializer:
        if int(np.prod(init.dims)) <= SKELETON_MAX_ELEMENTS and init.data_location != onnx.TensorProto.EXTERNAL:
            small.append(init)
        elif init.name not in listed:
            inputs.append(helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
    nodes = []
    for node in g.node:  # large Constant nodes are weights too
        value = node.attribute[0].t if node.op_type == "Constant" and node.attribute else None
        if (value is not None and node.attribute[0].name == "value" and node.domain in ("", "ai.onnx")
                and int(np.prod(value.dims)) > SKELETON_MAX_ELEMENTS):
            inputs.append(helper.make_tensor_value_info(node.output[0], value.data_type, list(value.dims)))
        else:
            nodes.append(node)
    # The exporter's own value_info was traced at one input size; with dynamic axes its
    # static entries can be wrong at others (padded windows), so only shapes of ops
    # inference cannot see into (custom domains) are kept as hints.
    custom = {o for n in g.node if n.domain not in ("", "ai.onnx") for o in n.output}
    hints = [vi for vi in g.value_info if vi.name in custom]
    graph = helper.make_graph(nodes, g.name, inputs, g.output, initializer=small, value_info=hints)
    skeleton = helper.make_model(graph, opset_imports=model.opset_import, ir_version=model.ir_version)
    skeleton.functions.extend(model.functions)
    return skeleton


def uses_external_data(path: str | os.PathLike) -> bool:
    """Does the model file keep its weights in external data files? (weights are not read)"""
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:
        return False
    return any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)


def _safe_input_dims(model: onnx.ModelProto) -> None:
    """Rename symbolic input dims to identifiers (in place) so inferred expressions parse."""
    for vi in model.graph.input:
        for d in vi.type.tensor_type.shape.dim:
            if d.HasField("dim_param"):
                d.dim_param = safe_symbol(d.dim_param)


SYMBOLIC_ROUNDS = 2  # onnxruntime repeats until no symbol merges; later rounds rarely add sizes we use


def _exact_numbers(expr):
    """``expr`` with its float constants as exact rationals (a Resize scale 2.0 becomes 2), so
    sympy's automatic evaluation does what ``simplify`` would: ``floor(2·floor(H/32))`` is
    ``2·floor(H/32)``. ``simplify`` itself took 58 of 70 s of a YOLOv8 export's fold."""
    import sympy

    if not isinstance(expr, sympy.Basic):
        return expr
    floats = expr.atoms(sympy.Float)
    return expr.xreplace({f: sympy.Rational(float(f)) for f in floats}) if floats else expr


class _CheapSimplify:
    """The ``sympy`` module as onnxruntime's Resize inference sees it, ``simplify`` replaced."""

    def __init__(self, sympy_module):
        self._sympy = sympy_module

    def __getattr__(self, name):
        return _exact_numbers if name == "simplify" else getattr(self._sympy, name)


def _fast_resize_inference():
    from onnxruntime.tools import symbolic_shape_infer as ssi

    class FastResizeInference(ssi.SymbolicShapeInference):
        def _infer_Resize(self, node):  # noqa: N802 (onnxruntime's dispatch name)
            original = ssi.sympy
            ssi.sympy = _CheapSimplify(original)
            try:
                super()._infer_Resize(node)
            finally:
                ssi.sympy = original
    return FastResizeInference


@contextlib.contextmanager
def _printed_once():
    """sympy prints each size expression once while onnxruntime's inference runs: it turns the
    same nested ``floor`` expressions into dim names again for every node that meets them."""
    import sympy

    original = sympy.Basic.__str__
    printed: dict = {}

    def cached(expr):
        try:
            return printed[expr]
        except KeyError:
            printed[expr] = text = original(expr)
            return text
        except TypeError:  # unhashable: print it
            return original(expr)
    sympy.Basic.__str__ = cached
    try:
        yield
    finally:
        sympy.Basic.__str__ = original


def _symbolic_inference(skeleton: onnx.ModelProto) -> onnx.ModelProto | None:
    """onnxruntime's symbolic shape inference (sympy): sizes computed from dynamic axes
    become expressions of the input symbols, and symbols that must be equal are merged.

    Returns None when it cannot run on this model; partial results are kept
    (its public entry point raises and writes a file when any shape is left unknown).
    """
    import logging

    try:
        inference_class = _fast_resize_inference()
    except ImportError:
        return None
    logging.getLogger("onnxruntime.tools.symbolic_shape_infer").setLevel(logging.CRITICAL)
    try:
        inference = inference_class(2**31 - 1, auto_merge=True, guess_output_rank=False, verbose=0)
        inference._preprocess(skeleton)
        with _printed_once():
            for _ in range(SYMBOLIC_ROUNDS):  # each round re-infers the graph with the merges found
                if not inference.run_:
                    break
                inference._infer_impl()
        inference._update_output_from_vi()
        return inference.out_mp_
    except Exception:  # any failure inside it: fall back to ONNX's own inference
        return None


def infer_shapes(model: onnx.ModelProto) -> onnx.GraphProto:
    """Shapes of every tensor, inferred on the weightless skeleton; returns its graph.

    onnxruntime's symbolic inference runs first (it keeps dynamic sizes as
    expressions); ONNX's inference with data propagation fills what it left
    unknown, and is the fallback when it cannot run.
    """
    skeleton = _skeleton(model)
    _safe_input_dims(skeleton)
    try:
        reference = onnx.shape_inference.infer_shapes(skeleton, data_prop=True).graph
    except onnx.shape_inference.InferenceError as exc:
        raise ShapeError(f"ONNX shape inference failed: {exc}; "
                         "run onnx.checker on the model or re-export it") from exc
    if all(_fully_static(vi) for vi in skeleton.graph.input):
        return reference  # every size is a number: nothing symbolic to infer
    symbolic = _symbolic_inference(skeleton)
    if symbolic is None:
        return reference
    # ONNX's inference is the reference for static shapes (onnxruntime's has gaps on rare
    # attribute combinations); the symbolic one fills in what it leaves symbolic or unknown.
    graph = symbolic.graph
    exact = {vi.name: vi for vi in (*reference.input, *reference.value_info, *reference.output)
             if _fully_static(vi)}
    for field in (graph.input, graph.value_info, graph.output):
        for vi in field:
            if vi.name in exact:
                vi.CopyFrom(exact.pop(vi.name))
    graph.value_info.extend(exact.values())
    have = {vi.name for vi in (*graph.input, *graph.value_info, *graph.output)
            if vi.type.tensor_type.HasField("shape")}
    graph.value_info.extend(vi for vi in reference.value_info if vi.name not in have)
    return graph


def _fully_static(vi: onnx.ValueInfoProto) -> bool:
    tt = vi.type.tensor_type
    return tt.HasField("shape") and all(d.HasField("dim_value") for d in tt.shape.dim)


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


def load_onnx(model: str | os.PathLike | onnx.ModelProto, fold_shapes: bool = True,
              input_shapes: dict[str, tuple[int, ...]] | None = None, *, validated: bool = False) -> Graph:
    """Read an ONNX model into the IR.

    Args:
        model: path to a ``.onnx`` file or an in-memory ``ModelProto``.
        input_shapes: sizes the user declared for inputs with dynamic axes;
            they set the shapes metrics and verification use.
        fold_shapes: evaluate shape arithmetic over static shapes into
            constants, so reshape targets and weight transposes are visible to
            the channel rules (lossless).
        validated: ``model`` is a ModelProto :func:`read_model` returned and nothing changed since:
            skip validating it again (a pass over every weight's bytes).
    """
    proto = model if validated and isinstance(model, onnx.ModelProto) else read_model(model)
    where = str(model) if not isinstance(model, onnx.ModelProto) else (proto.graph.name or "model")
    try:
        inferred = infer_shapes(proto)
    except ShapeError as exc:
        raise ShapeError(f"{where}: {exc}") from exc
    tensors: dict[str, TensorInfo] = {}
    for vi in (*inferred.input, *inferred.value_info, *inferred.output):
        tensors[vi.name] = _tensor_info(vi)
    g = proto.graph
    constants = {init.name: tensor_array(init, where) for init in g.initializer}
    pristine = {init.name: (constants[init.name], init) for init in g.initializer}
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
    graph.pristine = pristine
    if has_references(proto):
        graph.spill = Spill()  # sliced weights of a disk-backed model go to disk too
    graph.unshare_uniform_constants()
    _set_metric_shapes(graph, proto, input_shapes or {})
    if fold_shapes and fold_static_shapes(graph):
        refresh_shapes(graph)  # folded targets give static shapes where inference had none
    return graph


def _set_metric_shapes(graph: Graph, proto: onnx.ModelProto, declared: dict) -> None:
    """The declared input shapes, and the symbol values of the first shape the oracle tries."""
    from ..feeds import feed_plan

    plan = feed_plan(proto, declared)
    graph.input_shapes = dict(declared)
    if plan.symbolic:
        values = plan.symbol_values(plan.assignments()[0])
        graph.symbol_values = {safe_symbol(k): v for k, v in values.items()}


def refresh_shapes(graph: Graph) -> None:
    """Re-infer every tensor's shape after a pass changed sizes (weights are not copied)."""
    from ..emit.onnx import to_onnx  # the emitter imports this module

    inferred = infer_shapes(to_onnx(graph, infer=False, weights=False))
    for vi in (*inferred.input, *inferred.value_info, *inferred.output):
        graph.tensors[vi.name] = _tensor_info(vi)
