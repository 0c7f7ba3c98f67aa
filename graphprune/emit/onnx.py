"""ONNX emitter: IR → ``ModelProto``, and atomic saving.

Untouched attributes are written back from their original encoding; every
constant the graph still uses becomes an initializer (``Constant`` nodes are
materialised). Value info is dropped and re-inferred, since pruning changed
the intermediate shapes. Models over 2 GB are written with external data.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..errors import GraphpruneError, InputError
from ..frontends.onnx import SKELETON_MAX_ELEMENTS, infer_shapes
from ..ir import Graph
from ..weights import SPILL_MIN_BYTES, ExternalWriter, file_range, has_references, reference, tensor_array

EXTERNAL_DATA_THRESHOLD = 2**31 - 2**26  # leave protobuf headroom under its 2 GB cap


def _node_proto(node) -> onnx.NodeProto:
    proto = helper.make_node(node.op, node.inputs, node.outputs, name=node.name,
                             domain=node.domain or None)
    for name, value in node.attrs.items():
        raw = node.raw_attrs.get(name)
        if raw is None:
            if isinstance(value, (list, tuple)) and not value:
                raise InputError(f"node '{node.name}': cannot encode empty attribute '{name}'")
            raw = helper.make_attribute(name, value)
        proto.attribute.append(raw)
    return proto


def _spills(graph: Graph, value) -> bool:
    """Is ``value`` large enough to be written by file reference (disk-backed graphs)?"""
    return graph.spill is not None and isinstance(value, np.ndarray) and value.nbytes >= SPILL_MIN_BYTES \
        and not value.dtype.hasobject


def _add_initializer(out: onnx.GraphProto, graph: Graph, name: str) -> None:
    """Append ``name``'s initializer to ``out``. A changed plain numeric array in memory is encoded
    straight into the output (one copy of its bytes, not from_array's tensor plus a copy into the
    graph); anything else goes through :func:`_initializer`."""
    value = graph.constants[name]
    changed = graph.pristine.get(name, (None,))[0] is not value
    plain = isinstance(value, np.ndarray) and not isinstance(value, np.memmap) and value.dtype.kind in "fiub" \
        and value.dtype.isnative and sys.byteorder == "little"  # raw_data is little-endian
    if changed and plain and not _spills(graph, value):
        tensor = out.initializer.add()
        tensor.name, tensor.data_type = name, helper.np_dtype_to_tensor_dtype(value.dtype)
        tensor.dims.extend(value.shape)
        tensor.raw_data = np.ascontiguousarray(value).tobytes()
        return
    out.initializer.add().CopyFrom(_initializer(graph, name))  # 3-4x faster than append() for large tensors


def _initializer(graph: Graph, name: str) -> onnx.TensorProto:
    """The source tensor when the value is untouched (no re-encoding), else a new one."""
    value = graph.constants[name]
    loaded, tensor = graph.pristine.get(name, (None, None))
    if value is loaded:
        return tensor  # untouched: the source's own encoding (or its file reference)
    if _spills(graph, value):
        where = file_range(value) or file_range(graph.spill.put(value))
        if where is not None:  # disk-backed: name the bytes where they lie
            return reference(name, *where, helper.np_dtype_to_tensor_dtype(value.dtype), value.shape)
    return numpy_helper.from_array(np.asarray(value), name)


def to_onnx(graph: Graph, infer: bool = True, weights: bool = True) -> onnx.ModelProto:
    """Build a ModelProto from ``graph``, keeping the source model's metadata.

    Args:
        infer: fill ``value_info`` (from the graph's shapes when they are all
            known, else by ONNX shape inference).
        weights: with False, constants over ``SKELETON_MAX_ELEMENTS`` become
            typed graph inputs instead of initializers: a cheap skeleton for
            shape inference.
    """
    source: onnx.ModelProto = graph.source
    used = set(graph.outputs)
    for n in graph.nodes:
        used.update(t for t in (*n.inputs, *n.implicit_inputs) if t)
    source_inits = [i.name for i in source.graph.initializer] if source is not None else []
    order = [n for n in source_inits if n in graph.constants] + sorted(
        set(graph.constants) - set(source_inits))
    inputs = [vi for vi in source.graph.input if vi.name in graph.inputs or vi.name in used]
    if weights:
        initializer_names = [n for n in order if n in used]
    else:
        initializer_names = small = [n for n in order if n in used
                                     and graph.constants[n].size <= SKELETON_MAX_ELEMENTS]
        listed = {vi.name for vi in inputs}
        inputs = inputs + [helper.make_tensor_value_info(
            n, helper.np_dtype_to_tensor_dtype(graph.constants[n].dtype), graph.constants[n].shape)
            for n in order if n in used and n not in small and n not in listed]
    # filled in place: make_graph + make_model would copy every initializer twice more
    model = onnx.ModelProto(ir_version=source.ir_version)
    model.opset_import.extend(source.opset_import)
    out_graph = model.graph
    out_graph.name, out_graph.doc_string = graph.name or "graph", source.graph.doc_string
    out_graph.node.extend(_node_proto(n) for n in graph.nodes)
    out_graph.input.extend(inputs)
    out_graph.output.extend(source.graph.output)
    for name in initializer_names:
        _add_initializer(out_graph, graph, name)
    for field in ("producer_name", "producer_version", "domain", "model_version", "doc_string"):
        setattr(model, field, getattr(source, field))
    model.metadata_props.extend(source.metadata_props)
    model.functions.extend(source.functions)
    if infer:
        model.graph.value_info.extend(_value_info(graph, model))
    return model


def _value_info(graph: Graph, model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """Intermediate tensor types: from the graph's shapes when known, else inferred.

    Symbolic sizes are written as unknown: they come from symbolic inference,
    which can equate sizes that differ at run time (a Slice with run-time
    bounds keeps its input's symbol), and a runtime trusts declared shapes
    when it plans buffers.
    """
    interface = {vi.name for vi in (*model.graph.input, *model.graph.output)}
    names = [o for n in graph.nodes for o in n.outputs
             if o and o not in interface and o not in graph.constants]
    infos = [graph.tensors.get(n) for n in names]
    if all(i is not None and i.shape is not None and i.dtype is not None for i in infos):
        return [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(i.dtype),
                                              [d if isinstance(d, int) else None for d in i.shape])
                for n, i in zip(names, infos)]
    try:
        return [vi for vi in infer_shapes(model).value_info if vi.name not in graph.constants]
    except GraphpruneError:
        return []  # runtimes infer shapes on load; the checker reports real problems


def _byte_size(model: onnx.ModelProto) -> int:
    try:
        return model.ByteSize()
    except ValueError:
        return EXTERNAL_DATA_THRESHOLD + 1


def save_onnx(model: onnx.ModelProto, path: str | os.PathLike, external_data: bool | None = None,
              shard_bytes: int | None = None) -> Path:
    """Write ``model`` to ``path`` atomically: a reader sees the old file or the complete new one.

    External data (``<name>.data`` beside the model) is used when the model is
    over ~2 GB, when it references weights on disk (a memory-mapped model), or
    when ``external_data`` is True. Referenced weights are streamed file to file.
    ``shard_bytes``: external data split into files of at most that size
    (``<name>.data``, ``<name>.data.1``, ...; a larger tensor gets a file of its own).
    """
    if shard_bytes is not None and shard_bytes <= 0:
        raise InputError(f"shard size must be positive, got {shard_bytes} bytes")
    path = Path(path)
    if not path.parent.is_dir():
        raise InputError(f"{path}: directory {path.parent} does not exist")
    referenced = has_references(model)
    if shard_bytes and external_data is False:
        raise InputError("a sharded model keeps its weights in external data: drop external_data=False")
    if referenced and external_data is False:
        model = _inlined(model)
        referenced = False
    external = referenced or (_byte_size(model) > EXTERNAL_DATA_THRESHOLD if external_data is None
                              else external_data)
    tmp = Path(tempfile.mkdtemp(prefix=".graphprune-", dir=path.parent))
    try:
        location = path.name + ".data"
        if referenced or shard_bytes:
            for name in _stream(model, tmp / path.name, location, shard_bytes):
                os.replace(tmp / name, path.parent / name)
        elif external:
            copy = onnx.ModelProto()
            copy.CopyFrom(model)  # saving as external data rewrites tensors in place
            onnx.save(copy, str(tmp / path.name), save_as_external_data=True,
                      all_tensors_to_one_file=True, location=location, size_threshold=1024)
            os.replace(tmp / location, path.parent / location)
        else:
            onnx.save(model, str(tmp / path.name))
        os.replace(tmp / path.name, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


INLINE_BELOW = 1024  # bytes: smaller tensors stay inside the protobuf


def _stream(model: onnx.ModelProto, target: Path, location: str, shard_bytes: int | None = None) -> list[str]:
    """Write a model with its large tensors in external data beside ``target`` (references
    copied file to file, inline ones written out), the protobuf last; returns the data files."""
    out = onnx.ModelProto()
    out.CopyFrom(model)  # small when its large tensors are references
    with ExternalWriter(target.parent, location, shard_bytes) as writer:
        for tensor in out.graph.initializer:
            if tensor.data_location == onnx.TensorProto.EXTERNAL:  # large: read_model inlined small ones
                writer.copy(tensor)
            elif tensor.ByteSize() >= INLINE_BELOW and tensor.data_type != onnx.TensorProto.STRING:
                writer.tensor(tensor)
    onnx.save(out, str(target))
    return writer.locations


def _inlined(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy with every referenced tensor read into the protobuf (small models only)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for tensor in out.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            tensor.CopyFrom(numpy_helper.from_array(np.asarray(tensor_array(tensor)), tensor.name))
    return out
