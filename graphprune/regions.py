"""Run a model too large for one onnxruntime session as a chain of region sessions.

A verified prune runs the oracle and the result (and, for the oracle's own
rounding, the oracle in float64). One session per model holds the whole
model's weights, several times over once widened; at LLM scale that is far
past memory. :class:`RegionSession` instead cuts the node list (already in
topological order) into consecutive *regions* whose weights stay under a byte
budget, and runs one region at a time: each region is a sub-model whose
inputs are the values earlier regions (or the feeds) produced, whose outputs
are what later regions or the caller read. Its session is built, run and
dropped before the next, so peak memory is the largest region plus the
activations in flight, not the model.

Why this checks the same property as one session: every node is evaluated
exactly once, on the same input values it would see in the whole model (the
activations captured from the regions before it), so the chain computes the
same function; only the runtime's fusions cannot cross a region boundary,
which changes float rounding, not results. The oracle comparison then runs
unchanged on the chain's outputs and internal checkpoints. Values cross
boundaries as ``OrtValue`` s, so types numpy lacks (bfloat16) pass through.

Region sessions read mapped weights in place (``add_external_initializers``),
do not pre-pack them (a second copy) and run unoptimised (each runs once, and
constant folding would store float32 copies of half-precision weights where
the CPU lacks half kernels; a Cast at run time holds one at a time).
Measured on a TinyLlama-shaped fp16 model: a region's peak is about three
times its weight bytes, so 128 MB regions keep the chain near 0.5 GB.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper

from .progress import step

REGION_BYTES = 1 << 27  # weight bytes per region session (after widening): 128 MB
SESSION_BYTES = 1 << 30  # models with more weight bytes than this (once widened) run region by region

ORT_TYPES = {"float": TensorProto.FLOAT, "double": TensorProto.DOUBLE, "float16": TensorProto.FLOAT16,
             "bfloat16": TensorProto.BFLOAT16, "int8": TensorProto.INT8, "uint8": TensorProto.UINT8,
             "int16": TensorProto.INT16, "uint16": TensorProto.UINT16, "int32": TensorProto.INT32,
             "uint32": TensorProto.UINT32, "int64": TensorProto.INT64, "uint64": TensorProto.UINT64,
             "bool": TensorProto.BOOL, "string": TensorProto.STRING,
             "float8e4m3fn": TensorProto.FLOAT8E4M3FN, "float8e4m3fnuz": TensorProto.FLOAT8E4M3FNUZ,
             "float8e5m2": TensorProto.FLOAT8E5M2, "float8e5m2fnuz": TensorProto.FLOAT8E5M2FNUZ}
FLOATS = (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16)


def tensor_bytes(tensor: TensorProto, widen: int = 0) -> int:
    """Bytes a session holds for an initializer (``widen``: the float type narrower floats
    are widened to, 0 for none)."""
    count = int(np.prod(tensor.dims, dtype=np.int64))
    if widen and tensor.data_type in FLOATS:
        return count * (8 if widen == TensorProto.DOUBLE else max(4, _itemsize(tensor)))
    return count * _itemsize(tensor)


def _itemsize(tensor: TensorProto) -> int:
    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type)).itemsize
    except (KeyError, TypeError):
        return 1


def _reads(node: onnx.NodeProto) -> list[str]:
    from .frontends.onnx import _outer_names

    names = [t for t in node.input if t]
    for attr in node.attribute:
        for sub in ([attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)):
            names.extend(sorted(_outer_names(sub)))
    return names


@dataclass
class Region:
    nodes: list[int]  # indices into graph.node
    inputs: list[str]  # values read from earlier regions or the feeds
    initializers: list[str]
    outputs: list[str]  # values later regions or the caller read


def partition(model: onnx.ModelProto, budget: int | None = None, widen: int = 0,
              requested: list[str] | None = None) -> list[Region]:
    """Consecutive node ranges whose initializers fit ``budget`` bytes (a region holding
    one larger tensor is allowed: it cannot be split)."""
    budget = REGION_BYTES if budget is None else budget
    g = model.graph
    sizes = {t.name: tensor_bytes(t, widen) for t in g.initializer}
    spans: list[list[int]] = [[]]
    held: set[str] = set()
    total = 0
    for i, node in enumerate(g.node):
        new = {t for t in _reads(node) if t in sizes and t not in held}
        cost = sum(sizes[t] for t in new)
        if spans[-1] and total + cost > budget:
            spans.append([])
            held, total = set(), 0
            new = {t for t in _reads(node) if t in sizes}
            cost = sum(sizes[t] for t in new)
        spans[-1].append(i)
        held |= new
        total += cost
    wanted = set(requested or [o.name for o in g.output])
    reads_after: list[set[str]] = [set() for _ in spans]
    later: set[str] = set()
    for r in range(len(spans) - 1, -1, -1):  # what regions after r read
        reads_after[r] = set(later)
        for i in spans[r]:
            later.update(_reads(g.node[i]))
    regions = []
    for r, span in enumerate(spans):
        produced = [o for i in span for o in g.node[i].output if o]
        local = set(produced)
        reads = [t for i in span for t in _reads(g.node[i])]
        inits = list(dict.fromkeys(t for t in reads if t in sizes))
        inputs = list(dict.fromkeys(t for t in reads if t not in local and t not in sizes))
        outputs = [o for o in produced if o in reads_after[r] or o in wanted]
        regions.append(Region(span, inputs, inits, outputs))
    return regions


@dataclass
class _Arg:
    """What ``get_inputs``/``get_outputs`` give, like onnxruntime's NodeArg."""
    name: str
    type: str = ""
    shape: tuple = ()


def _arg(vi: onnx.ValueInfoProto) -> _Arg:
    tt = vi.type.tensor_type
    names = {v: k for k, v in ORT_TYPES.items()}
    shape = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim)
    return _Arg(vi.name, f"tensor({names.get(tt.elem_type, 'float')})", shape)


class RegionSession:
    """An onnxruntime-session look-alike (``run``, ``get_inputs``, ``get_outputs``) that runs
    ``model`` region by region (see the module docstring)."""

    def __init__(self, model: onnx.ModelProto, options, widen: int = 0, budget: int | None = None):
        self.model = model
        self.options = options
        self.widen = widen
        self.budget = REGION_BYTES if budget is None else budget
        inits = {t.name for t in model.graph.initializer}
        self._inputs = [_arg(vi) for vi in model.graph.input if vi.name not in inits]
        self._outputs = [_arg(vi) for vi in model.graph.output]
        self._regions: dict[tuple, list[Region]] = {}

    def get_inputs(self):
        return list(self._inputs)

    def get_outputs(self):
        return list(self._outputs)

    def regions(self, names: list[str] | None = None) -> list[Region]:
        key = tuple(names or ())
        if key not in self._regions:
            self._regions[key] = partition(self.model, self.budget, self.widen, names or None)
        return self._regions[key]

    def run(self, output_names, feeds: dict) -> list:
        import onnxruntime as ort

        names = list(output_names or [o.name for o in self._outputs])
        regions = self.regions(names)
        values = {k: v if isinstance(v, ort.OrtValue) else ort.OrtValue.ortvalue_from_numpy(np.asarray(v))
                  for k, v in feeds.items()}
        last_use: dict[str, int] = {}
        for r, region in enumerate(regions):
            for t in region.inputs:
                last_use[t] = r
        wide = {TensorProto.DOUBLE: " (float64)", TensorProto.FLOAT: " (float32)"}.get(self.widen, "")
        with step("regions" + wide, total=len(regions)) as progress:
            for r, region in enumerate(regions):
                if region.outputs:
                    sess, keep = self._session(region, values)
                    produced = sess.run_with_ort_values(region.outputs, {t: values[t] for t in region.inputs})
                    values.update(zip(region.outputs, produced))
                    del sess, keep
                    _return_freed_memory()
                for t in [t for t in values if last_use.get(t, -1) == r and t not in names]:
                    del values[t]  # no later region reads it: free the activation
                progress.advance()
        return [values[n].numpy() if values[n].is_tensor() else values[n] for n in names]

    def _session(self, region: Region, values: dict):
        import onnxruntime as ort

        from .ort_types import ort_values
        from .verify import as_float64
        from .weights import tensor_array

        g = self.model.graph
        by_name = {t.name: t for t in g.initializer}
        inputs = [helper.make_tensor_value_info(t, ORT_TYPES[values[t].data_type()[len("tensor("):-1]], None)
                  for t in region.inputs]
        graph = helper.make_graph([g.node[i] for i in region.nodes], f"{g.name}_region", inputs,
                                  [onnx.ValueInfoProto(name=o) for o in region.outputs],
                                  initializer=[by_name[t] for t in region.initializers])
        sub = helper.make_model(graph, opset_imports=list(self.model.opset_import))
        sub.ir_version = self.model.ir_version
        sub.functions.extend(self.model.functions)
        arrays: dict = {}
        if self.widen:
            sub = as_float64(sub, self.widen, widened=arrays)
        options = _copy_options(self.options)
        options.add_session_config_entry("session.disable_prepacking", "1")  # no second copy of weights
        options.enable_cpu_mem_arena = False  # buffers go back to the allocator with the session
        arrays.update({t.name: tensor_array(t) for t in sub.graph.initializer
                       if t.data_location == TensorProto.EXTERNAL and t.name not in arrays})
        external = ort_values(arrays)
        if external:
            options.add_external_initializers(list(external), list(external.values()))
        sess = ort.InferenceSession(sub.SerializeToString(), options, providers=["CPUExecutionProvider"])
        return sess, (arrays, external)


def _return_freed_memory() -> None:
    """Hand the heap a dropped region session freed back to the OS (glibc keeps it otherwise)."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the allocator keeps its own policy
        pass


def _copy_options(options):
    import onnxruntime as ort

    copy = ort.SessionOptions()
    copy.log_severity_level = options.log_severity_level
    # each region session runs once: fusions and constant folding (which would also store
    # float32 copies of half-precision weights) cost more than they save
    copy.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    copy.intra_op_num_threads = options.intra_op_num_threads
    return copy
