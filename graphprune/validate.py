"""Load-time validation: refuse a malformed model with one line before any pass runs.

Passes, rules and the oracle assume a well-formed graph: every tensor defined
once (SSA), every input defined, nodes in topological order, a known opset,
initializers whose data fills their shape. A model that breaks one of those
would otherwise surface as a crash deep inside a pass (exit 3) or, worse, as
a "successful" output that no runtime loads. So :func:`validate_model`
checks them up front and raises :class:`~graphprune.errors.InputError`
naming the file, the node or tensor, what is wrong (onnx.checker's words,
shortened) and what to do.

Two things are repaired instead of refused, because the model is valid and
only written oddly: nodes out of topological order are sorted, and duplicate
node names (which onnxruntime refuses) get a numeric suffix. Both edits are
made in place and change no value the model computes.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import onnx
from onnx import TensorProto, helper

from .errors import InputError, shorten

REEXPORT = "re-export the model or fix it"
_ONNX_DOMAINS = ("", "ai.onnx")
# Types whose elements are packed below one byte per element.
_PACKED = {getattr(TensorProto, n) for n in ("INT4", "UINT4", "FLOAT4E2M1", "INT2", "UINT2") if hasattr(TensorProto, n)}


def node_label(node: onnx.NodeProto, index: int) -> str:
    """How messages name a node: its name, else its op and position."""
    return f"node '{node.name}' ({node.op_type})" if node.name else f"{node.op_type} node #{index}"


def validate_model(model: onnx.ModelProto, where: str) -> onnx.ModelProto:
    """Check ``model`` (in place: sort nodes, make node names unique) and return it.

    Raises:
        InputError: one line naming ``where`` (the file), the node or tensor,
            the problem and the fix.
    """
    _check_header(model, where)
    _check_opsets(model, where)
    g = model.graph
    _check_text(g, where)
    _check_values(g, where)
    _sort_nodes(g, where)
    _unique_node_names(g)
    _check_initializers(g, where)
    _run_checker(model, where)
    return model


def _check_header(model: onnx.ModelProto, where: str) -> None:
    if not model.HasField("graph") or (not model.graph.node and not model.graph.output):
        raise InputError(f"{where}: holds no graph (empty or not an ONNX model); check the file, "
                         "or re-export the model")
    if model.ir_version < 3:
        raise InputError(f"{where}: IR version {model.ir_version} is not a valid ONNX IR version "
                         f"(3..{onnx.IR_VERSION}); {REEXPORT}")
    if model.ir_version > onnx.IR_VERSION:
        raise InputError(f"{where}: IR version {model.ir_version} is newer than this onnx package supports "
                         f"({onnx.IR_VERSION}); upgrade onnx or export with an older IR version")
    if not model.graph.output:
        raise InputError(f"{where}: the graph has no outputs; {REEXPORT} with its outputs declared")


def _check_opsets(model: onnx.ModelProto, where: str) -> None:
    if not model.opset_import:
        raise InputError(f"{where}: imports no opset (opset_import is empty); {REEXPORT} naming its ONNX opset")
    seen = {}
    newest = onnx.defs.onnx_opset_version()
    for op in model.opset_import:
        domain = op.domain or ""
        if domain in seen or (domain in _ONNX_DOMAINS and {"", "ai.onnx"} & set(seen)):
            raise InputError(f"{where}: opset for domain '{domain or 'ai.onnx'}' is imported twice; {REEXPORT}")
        seen[domain] = op.version
        if op.version < 1:
            raise InputError(f"{where}: opset version {op.version} for domain '{domain or 'ai.onnx'}' "
                             f"is not valid (versions start at 1); {REEXPORT}")
        if domain in _ONNX_DOMAINS and op.version > newest:
            raise InputError(f"{where}: ONNX opset {op.version} is newer than this onnx package knows "
                             f"({newest}); upgrade onnx or export with opset {newest} or older")


def _check_text(g: onnx.GraphProto, where: str) -> None:
    """Names must be text: protobuf hands back ``bytes`` for a string field that is not UTF-8."""
    def bad(value) -> bool:
        return not isinstance(value, str)

    for k, n in enumerate(g.node):
        fields = [n.name, n.op_type, n.domain, *n.input, *n.output, *(a.name for a in n.attribute)]
        if any(bad(v) for v in fields):
            raise InputError(f"{where}: node #{k} has a name, op or tensor name that is not valid UTF-8 "
                             f"({next(v for v in fields if bad(v))!r}); the file is damaged; {REEXPORT}")
    for kind, items in (("graph input", g.input), ("graph output", g.output), ("initializer", g.initializer),
                        ("value_info", g.value_info)):
        for item in items:
            if bad(item.name):
                raise InputError(f"{where}: a {kind} name is not valid UTF-8 ({item.name!r}); "
                                 f"the file is damaged; {REEXPORT}")


def _subgraphs(node: onnx.NodeProto):
    for a in node.attribute:
        if a.type == onnx.AttributeProto.GRAPH:
            yield a.g
        elif a.type == onnx.AttributeProto.GRAPHS:
            yield from a.graphs


def _outer_reads(graph: onnx.GraphProto) -> set[str]:
    """Names a subgraph reads from its enclosing scopes."""
    local = {i.name for i in graph.input} | {i.name for i in graph.initializer}
    used = set()
    for n in graph.node:
        local.update(n.output)
        used.update(t for t in n.input if t)
        for sub in _subgraphs(n):
            used |= _outer_reads(sub)
    return used - local


def _reads(node: onnx.NodeProto) -> list[str]:
    out = [t for t in node.input if t]
    for sub in _subgraphs(node):
        out.extend(sorted(_outer_reads(sub)))
    return out


def _unique(names: list[str], what: str, verb: str) -> set[str]:
    """``names`` as a set; a name given twice is an InputError naming ``what`` it is."""
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise InputError(f"{what} '{name}' is {verb} twice; {REEXPORT}")
        seen.add(name)
    return seen


def _check_values(g: onnx.GraphProto, where: str) -> None:
    """SSA, every read defined, graph outputs computed, typed inputs."""
    defined: dict[str, str] = {}
    initializers = _unique([t.name for t in g.initializer], f"{where}: initializer", "defined")
    defined.update((name, "an initializer") for name in initializers)
    _unique([vi.name for vi in g.input], f"{where}: graph input", "declared")
    for vi in g.input:
        defined[vi.name] = "a graph input"
        tt = vi.type.tensor_type if vi.type.HasField("tensor_type") else None
        if tt is not None and vi.name not in initializers and tt.elem_type == TensorProto.UNDEFINED:
            raise InputError(f"{where}: graph input '{vi.name}' has no element type; {REEXPORT} with typed inputs")
    for k, n in enumerate(g.node):
        for o in n.output:
            if not o:
                continue
            if o in defined:
                raise InputError(f"{where}: tensor '{o}' is defined twice (by {defined[o]} and by "
                                 f"{node_label(n, k)}); a graph must assign every name once (SSA); {REEXPORT}")
            defined[o] = node_label(n, k)
    for k, n in enumerate(g.node):
        for t in _reads(n):
            if t not in defined:
                raise InputError(f"{where}: {node_label(n, k)} reads '{t}', which no node, graph input or "
                                 f"initializer defines; {REEXPORT}")
    for o in g.output:
        if o.name not in defined:
            raise InputError(f"{where}: graph output '{o.name}' is not computed by any node, input or "
                             f"initializer; {REEXPORT}")


def _sort_nodes(g: onnx.GraphProto, where: str) -> bool:
    """Reorder nodes topologically (stable: ready nodes keep their order). Returns True if moved.

    Raises on a cycle, naming a node on it.
    """
    nodes = list(g.node)
    producer = {o: k for k, n in enumerate(nodes) for o in n.output if o}
    deps = [{producer[t] for t in _reads(n) if t in producer} for n in nodes]
    users = defaultdict(list)
    for k, d in enumerate(deps):
        for p in d:
            users[p].append(k)
    pending = [len(d) for d in deps]
    import heapq

    ready = [k for k, c in enumerate(pending) if c == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        k = heapq.heappop(ready)
        order.append(k)
        for u in users[k]:
            pending[u] -= 1
            if pending[u] == 0:
                heapq.heappush(ready, u)
    if len(order) < len(nodes):
        k = next(i for i, c in enumerate(pending) if c)
        raise InputError(f"{where}: the graph has a cycle through {node_label(nodes[k], k)}; "
                         f"an ONNX graph must be acyclic; {REEXPORT}")
    if order == list(range(len(nodes))):
        return False
    del g.node[:]
    g.node.extend(nodes[k] for k in order)
    return True


def _unique_node_names(g: onnx.GraphProto) -> None:
    """Duplicate node names (onnxruntime refuses them) get a ``__k`` suffix; empty ones stay."""
    taken = {n.name for n in g.node if n.name}
    seen = set()
    for n in g.node:
        if not n.name:
            continue
        if n.name in seen:
            k = 1
            while f"{n.name}__{k}" in taken:
                k += 1
            n.name = f"{n.name}__{k}"
            taken.add(n.name)
        seen.add(n.name)


def _expected_bytes(t: TensorProto, count: int) -> int | None:
    if t.data_type in _PACKED:
        return (count + 1) // 2
    try:
        return count * np.dtype(helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize
    except Exception:
        return None


def _held_elements(t: TensorProto) -> int | None:
    """Elements stored in the typed field (None when it cannot be told from the field)."""
    if t.data_type == TensorProto.STRING:
        return len(t.string_data)
    try:
        field = helper.tensor_dtype_to_field(t.data_type)
    except Exception:
        return None
    held = len(getattr(t, field))
    if t.data_type in (TensorProto.COMPLEX64, TensorProto.COMPLEX128):
        return held // 2
    if t.data_type in _PACKED:
        return None
    return held


RAW_CHECK_MAX_BYTES = 1 << 20  # larger raw tensors are size-checked where they are decoded


def raw_size_error(t: TensorProto, where: str) -> InputError | None:
    """The error for a raw tensor holding other than the bytes its dims call for, else None."""
    count = int(np.prod(t.dims, dtype=np.int64)) if t.dims else 1
    want = _expected_bytes(t, count)
    if want is None or len(t.raw_data) == want:
        return None
    return InputError(f"{where}: initializer '{t.name}' has shape {list(t.dims)} ({count} elements, "
                      f"{want} bytes) but holds {len(t.raw_data)} bytes; the file is damaged or "
                      f"the shape is wrong; {REEXPORT}")


def _check_initializers(g: onnx.GraphProto, where: str) -> None:
    """Each initializer has a known type and exactly the data its dims call for.

    Reading ``raw_data`` copies it, so raw tensors over ``RAW_CHECK_MAX_BYTES`` are checked by
    :func:`graphprune.weights.tensor_array` when decoded (the same error), not twice here."""
    valid_types = set(TensorProto.DataType.values()) - {TensorProto.UNDEFINED}
    for t in g.initializer:
        if t.data_type not in valid_types:
            raise InputError(f"{where}: initializer '{t.name}' has an unknown data type ({t.data_type}); {REEXPORT}")
        if any(d < 0 for d in t.dims):
            raise InputError(f"{where}: initializer '{t.name}' has a negative dimension {list(t.dims)}; {REEXPORT}")
        if t.data_location == TensorProto.EXTERNAL:
            continue  # read by onnx.load already, or refused there
        count = int(np.prod(t.dims, dtype=np.int64)) if t.dims else 1
        if t.HasField("raw_data"):
            want = _expected_bytes(t, count)
            error = raw_size_error(t, where) if want is None or want <= RAW_CHECK_MAX_BYTES else None
            if error is not None:
                raise error
            continue
        held = _held_elements(t)
        if held is not None and held != count:
            raise InputError(f"{where}: initializer '{t.name}' has shape {list(t.dims)} ({count} elements) "
                             f"but holds {held}; the file is damaged or the shape is wrong; {REEXPORT}")


def _run_checker(model: onnx.ModelProto, where: str) -> None:
    """onnx.checker with strict shape inference, on a copy without the large weights
    (they are typed inputs there: the checker only needs their types and shapes)."""
    from .frontends.onnx import _skeleton

    skeleton = _skeleton(model)
    skeleton.ir_version = model.ir_version
    try:
        onnx.checker.check_model(skeleton, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise InputError(f"{where}: onnx.checker: {shorten(str(exc))}; {REEXPORT} "
                         "(the full message with --debug)") from exc
