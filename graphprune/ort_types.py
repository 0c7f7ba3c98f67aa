"""ONNX types numpy has no native dtype for (bfloat16, float8), through onnxruntime's Python API.

onnxruntime's ``run`` refuses numpy arrays of ml_dtypes' ``bfloat16`` and cannot hand
such outputs back as arrays, so a bfloat16 model could not be verified at all. Feeds of
those types go in as ``OrtValue`` s built from their bit patterns (:func:`ort_feeds`);
outputs of those types are read through a ``Cast`` to float32 appended to the model
(:func:`readable`), which is exact (float32 holds every bfloat16 and float8 value), and the
caller is told each such output's own type so it can compare at that type's tolerance.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

NUMPY_LESS = {TensorProto.BFLOAT16: "bfloat16", TensorProto.FLOAT8E4M3FN: "float8_e4m3fn",
              TensorProto.FLOAT8E4M3FNUZ: "float8_e4m3fnuz", TensorProto.FLOAT8E5M2: "float8_e5m2",
              TensorProto.FLOAT8E5M2FNUZ: "float8_e5m2fnuz"}
_BY_NAME = {v: k for k, v in NUMPY_LESS.items()}
SUFFIX = "__graphprune_narrow"


def ort_feeds(feeds: dict) -> dict:
    """Feeds onnxruntime accepts: arrays of numpy-less types become OrtValues of their bits."""
    import onnxruntime as ort

    out = {}
    for name, value in feeds.items():
        elem = _BY_NAME.get(getattr(value, "dtype", np.dtype(object)).name)
        if elem is None:
            out[name] = value
            continue
        bits = np.ascontiguousarray(value).view(np.uint16 if value.dtype.itemsize == 2 else np.uint8)
        out[name] = ort.OrtValue.ortvalue_from_numpy_with_onnx_type(bits, elem)
    return out


def ort_values(arrays: dict) -> dict:
    """OrtValues over arrays without copying them (numpy-less types through their bits); the
    arrays must outlive the values (``SessionOptions.add_external_initializers`` reads them in place)."""
    import onnxruntime as ort

    return {name: value if isinstance(value, ort.OrtValue) else ort.OrtValue.ortvalue_from_numpy(value)
            for name, value in ort_feeds(arrays).items()}


def _uses_numpy_less(model: onnx.ModelProto) -> bool:
    g = model.graph
    types = [t.data_type for t in g.initializer]
    types += [vi.type.tensor_type.elem_type for vi in (*g.input, *g.output, *g.value_info)]
    types += [a.i for n in g.node for a in n.attribute if n.op_type == "Cast" and a.name == "to"]
    return any(t in NUMPY_LESS for t in types)


def _elem_types(model: onnx.ModelProto, names: list[str]) -> dict[str, int]:
    g = model.graph
    known = {vi.name: vi.type.tensor_type.elem_type for vi in (*g.input, *g.output, *g.value_info)
             if vi.type.tensor_type.elem_type}
    if any(n not in known for n in names):
        try:
            from .frontends.onnx import _skeleton

            inferred = onnx.shape_inference.infer_shapes(_skeleton(model)).graph
            for vi in (*inferred.value_info, *inferred.output):
                known.setdefault(vi.name, vi.type.tensor_type.elem_type)
        except Exception:
            pass
    return {n: known[n] for n in names if n in known}


def readable(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, str]]:
    """``model`` with every numpy-less graph output read through a Cast to float32 (same names;
    the producer's tensor is renamed), and {output name: its own type name}."""
    if not _uses_numpy_less(model):
        return model, {}
    names = [o.name for o in model.graph.output]
    narrow = {n: NUMPY_LESS[t] for n, t in _elem_types(model, names).items() if t in NUMPY_LESS}
    if not narrow:
        return model, {}
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    for node in g.node:
        node.input[:] = [i + SUFFIX if i in narrow else i for i in node.input]
        node.output[:] = [o + SUFFIX if o in narrow else o for o in node.output]
    for name in narrow:
        g.node.append(helper.make_node("Cast", [name + SUFFIX], [name], to=TensorProto.FLOAT,
                                       name=name + SUFFIX + "_cast"))
    for o in g.output:
        if o.name in narrow:
            o.CopyFrom(onnx.ValueInfoProto(name=o.name))
    for vi in g.value_info:
        if vi.name in narrow:
            vi.name = vi.name + SUFFIX
    return out, narrow
