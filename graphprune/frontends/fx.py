"""PyTorch front end: an ``nn.Module`` traced into the one IR.

Tracing is ``torch.fx.symbolic_trace`` first: it keeps the module hierarchy
(leaf ``nn`` modules stay calls) and shows which sizes the forward code holds
as literals. When it fails (data-dependent control flow, unsupported Python)
or leaves calls no translation knows (``torch.fx.wrap``-ed helpers such as
Swin's window attention, ``nn.MultiheadAttention``), ``torch.export`` is tried
and the trace with fewer untranslated calls wins; its ATen ops map through the
same translation table (:mod:`.fx_ops`).

One run of an interpreter on the example inputs records every tensor's shape
and every non-tensor value (sizes, tuples), so translation sees concrete
shapes. Values computed only from sizes and integer buffers (attention masks,
index tables) become constants. Each fx node becomes IR nodes in ONNX's
vocabulary, so the ONNX rule table is the only coupling logic; parameters and
buffers become IR constants named by their ``state_dict`` names.

Literal sizes the emitter may need to rewrite (``view`` targets, ``split``
sizes, slice bounds) are recorded as :class:`Binding`s from an IR value back
to the place in the fx node that holds it.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
import torch.fx as fx
from torch.utils import _pytree as pytree

from ..errors import InputError
from ..ir import Graph, Node, TensorInfo
from .functionalise import functionalise, mutates
from .recording import GONE

IR_OPSET = 17  # the attribute/input conventions the translation writes


class Untranslatable(Exception):
    """A handler cannot express this call in the IR: the call becomes opaque (all axes pinned)."""


@dataclass
class Binding:
    """Element ``index`` of an IR node's constant input (or attribute) ``slot`` came from
    the fx argument at ``path`` of ``fx_node``; ``old`` is its value at trace time.
    ``index`` None: the attribute is a single int (a conv's ``group``)."""

    ir_node: Node
    slot: int | str
    index: int | None
    fx_node: fx.Node
    path: tuple
    old: int


@dataclass
class FxModel:
    """A traced module: its fx graph, the IR built from it and the links between them."""

    module: torch.nn.Module
    gm: fx.GraphModule
    graph: Graph
    tracer: str  # "symbolic_trace" | "concrete" | "torch.export"
    ir_name: dict[str, str]  # fx node name -> IR tensor name
    fx_of_ir: dict[str, str]  # IR tensor name -> fx node name holding that value
    origin: dict[str, fx.Node]  # IR node name -> the fx node it translates
    params: dict[str, torch.Tensor]  # IR constant -> the parameter/buffer it mirrors
    bindings: list[Binding] = field(default_factory=list)
    fixups: list[Callable] = field(default_factory=list)  # (emit_context) -> bool changed
    untranslated: list[str] = field(default_factory=list)
    split_sizes: dict[str, list[int]] = field(default_factory=dict)  # IR Split node -> sizes at trace
    trace_errors: dict[str, str] = field(default_factory=dict)
    example: tuple = ()  # the inputs it was traced with


# -- tracing ---------------------------------------------------------------

def _symbolic(module):
    from .attention_trace import symbolic_trace

    return symbolic_trace(module)


def dynamic_axes(x) -> list[int]:
    """Axes exported as sizes free at run time: the batch, and the sequence of token inputs.

    Integer tensors (token ids, masks) and rank ≤ 3 float tensors (embeddings,
    audio frames) vary in every leading axis but the last; images vary only in
    the batch: dynamic spatial sizes make export's symbolic reasoning slow by
    orders of magnitude, and most vision models fix them anyway.
    """
    if not isinstance(x, torch.Tensor) or x.dim() == 0:
        return []
    if not x.is_floating_point():
        return list(range(x.dim()))
    return list(range(max(1, x.dim() - 1))) if x.dim() <= 3 else [0]


def _batched(example_inputs) -> tuple:
    """The example with a batch of at least 2 (export specialises sizes 0 and 1)."""
    return tuple(torch.cat([x, x.flip(0) if x.is_floating_point() else x]) if isinstance(x, torch.Tensor)
                 and x.dim() and x.shape[0] == 1 else x for x in example_inputs)


def _exported(module, example_inputs):
    """``torch.export`` with dynamic batch/sequence (static if that fails), as an ordinary module."""
    args = tuple(example_inputs)
    try:
        dims = tuple({a: torch.export.Dim.AUTO for a in dynamic_axes(x)} or None for x in args)
        program = torch.export.export(module, _batched(args), dynamic_shapes=dims, strict=False)
    except Exception:
        program = torch.export.export(module, args, strict=False)
    gm = program.module(check_guards=False)
    if mutates(gm) and not functionalise(gm):
        gm = program.run_decompositions({}).module(check_guards=False)
    return ordinary_module(gm)


def ordinary_module(gm: fx.GraphModule) -> fx.GraphModule:
    """An exported GraphModule that behaves as an ``nn.Module``: ``train()``/``eval()`` work.

    ``ExportedProgram.module()`` replaces both by methods that raise and adds
    a pre-hook that checks the example's shapes; both are dropped (the graph
    itself states what it computes, and the oracle checks it at other shapes).
    """
    for name in ("train", "eval"):
        vars(gm).pop(name, None)
    gm._forward_pre_hooks.clear()
    return gm


def trace(module: torch.nn.Module, example_inputs, concrete: bool = False) -> FxModel:
    """Trace ``module`` into an :class:`FxModel`: symbolic trace, else (``concrete``) a concrete
    trace, else torch.export; the translation with the fewest untranslated calls wins.

    ``concrete`` allows :mod:`.concrete`'s trace, valid at the example's shapes only: the
    caller must run the graph at no other shape (the oracle re-traces per shape) and must not
    return it as the pruned model."""
    from .concrete import TRACER, concrete_trace
    from .fx_ops import likely_opaque, translate

    if not isinstance(module, torch.nn.Module):
        raise InputError(f"expected a torch.nn.Module, got {type(module).__name__}")
    example_inputs = tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    errors: dict[str, str] = {}

    def attempt(name, make) -> FxModel | None:
        try:
            gm = make()
        except Exception as exc:  # tracing failures are many and varied; keep the message
            errors[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            return None
        try:
            return translate(module, gm, name, example_inputs)
        except Exception as exc:
            errors[name] = f"translation failed: {type(exc).__name__}: {exc}"
            return None

    try:
        symbolic = _symbolic(module)
    except Exception as exc:
        symbolic = None
        errors["symbolic_trace"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    opaque = symbolic is None or likely_opaque(symbolic)
    found = [] if opaque else [attempt("symbolic_trace", lambda: symbolic)]
    if found and found[0] is not None:
        found[0].trace_errors, found[0].example = errors, example_inputs
        return found[0]  # nothing opaque: the symbolic trace keeps the module structure
    # the ATen tracers: the concrete one, if allowed and it translates (export records the same
    # ATen ops, at ten times the time), else torch.export; on a tie the one tried later wins
    # (inserted first), so an opaque symbolic trace last keeps the module structure
    if concrete:
        found.insert(0, attempt(TRACER, lambda: concrete_trace(module, example_inputs)))
    if not found or found[0] is None:
        found.insert(0, attempt("torch.export", lambda: _exported(module, example_inputs)))
    if not _clean(found) and symbolic is not None and opaque:
        found.insert(0, attempt("symbolic_trace", lambda: symbolic))
    found = [m for m in found if m is not None]
    if not found:
        detail = "; ".join(f"{k}: {v}" for k, v in errors.items())
        raise InputError(f"cannot trace {type(module).__name__}: {detail}")
    best = min(found, key=lambda m: len(m.untranslated))  # the first of the fewest
    best.trace_errors, best.example = errors, example_inputs
    return best


def _clean(found: list) -> bool:
    """Whether some translation so far has no untranslated call (no other tracer is needed)."""
    return any(m is not None and not m.untranslated for m in found)


# -- recording values ---------------------------------------------------------

SHAPE_QUERIES = {"size", "dim", "numel", "shape", "dtype", "device", "ndim", "is_cuda",
                 "new_zeros", "new_ones", "new_empty", "new_full", "new_tensor", "sym_size",
                 "_assert", "getattr", "_guards_fn"}  # size arithmetic is static through its inputs


OBSERVED = "graphprune_observed"  # gm.meta key of an :class:`Observed` made while tracing


class Recorder(fx.Interpreter):
    """Runs the graph once; keeps tensor metadata, non-tensor values and static tensors."""

    def __init__(self, gm: fx.GraphModule, static: set[str]):
        super().__init__(gm)
        self.static = static
        self.info: dict[str, Any] = {}
        self.values: dict[str, Any] = {}

    def run_node(self, n):
        result = super().run_node(n)
        _keep(self, n.name, result)
        return result


def _keep(recorder, name: str, result) -> None:
    """Store what the translation reads of one node's ``result`` in ``recorder.info`` / ``.values``."""
    if isinstance(result, torch.Tensor):
        recorder.info[name] = TensorInfo(tuple(result.shape), _np_dtype(result.dtype))
        if name in recorder.static:
            recorder.values[name] = result  # final state is read after the run (in-place fills)
    elif isinstance(result, (tuple, list)) and any(isinstance(r, torch.Tensor) for r in result):
        recorder.info[name] = [TensorInfo(tuple(r.shape), _np_dtype(r.dtype))
                               if isinstance(r, torch.Tensor) else r for r in result]
        recorder.values[name] = result if name in recorder.static else None
    else:
        recorder.values[name] = result


class Observed:
    """What :class:`Recorder` keeps, gathered while a tracer runs the module itself (the concrete
    trace's recorder calls it per node with the node's value): the translation then needs no
    second run of the graph. Valid for the graph as recorded (not after a rewrite of it)."""

    def __init__(self, state: set[str]):
        self.state = state
        self.static: set[str] = set()
        self.dynamic: set[str] = set()
        self.info: dict[str, Any] = {}
        self.values: dict[str, Any] = {}

    complete = True  # False where a static value was freed before it was observed

    def __call__(self, n: fx.Node, result) -> None:
        value = result if n.op == "get_attr" else None
        static = _is_static(n, value, self.dynamic, self.state)
        (self.static if static else self.dynamic).add(n.name)
        if any(r is GONE for r in pytree.tree_leaves(result)):
            self.complete = self.complete and not static  # (a dynamic value: its metadata is enough)
            result = n.meta.get("val")
        _keep(self, n.name, result)


def _np_dtype(dtype: torch.dtype):
    try:
        return np.dtype(str(dtype).replace("torch.", "")) if dtype != torch.bfloat16 else np.dtype("float32")
    except TypeError:
        return None


def static_nodes(gm: fx.GraphModule, state: set[str] | None = None) -> set[str]:
    """Nodes whose value depends on neither the inputs nor a floating-point parameter.

    Such values (attention masks built from sizes, index tables) are folded into
    IR constants. Shape queries read only a tensor's size, never its data.
    """
    dynamic: set[str] = set()
    static: set[str] = set()
    for n in gm.graph.nodes:
        if n.op == "output":
            continue
        if _is_static(n, _fetch(gm, n.target) if n.op == "get_attr" else None, dynamic, state):
            static.add(n.name)
        else:
            dynamic.add(n.name)
    return static


def _is_static(n: fx.Node, attr_value, dynamic: set[str], state: set[str] | None) -> bool:
    """Whether ``n`` is static given which earlier nodes are ``dynamic`` (see :func:`static_nodes`);
    ``attr_value`` is a ``get_attr`` node's tensor."""
    if n.op == "placeholder":
        return False
    if n.op == "get_attr":
        learned = isinstance(attr_value, torch.nn.Parameter) or state is None or n.target in state
        return not (isinstance(attr_value, torch.Tensor) and attr_value.is_floating_point() and learned)
    name = _target_name(n)
    reads = [a for a in _node_args(n)]
    if name in SHAPE_QUERIES and n.op != "call_module":
        reads = reads[1:] if name.startswith("new_") else []
    return not (n.op == "call_module" or any(a.name in dynamic for a in reads))


def _node_args(n: fx.Node) -> list[fx.Node]:
    found: list[fx.Node] = []
    pytree.tree_map(lambda a: found.append(a) if isinstance(a, fx.Node) else None, (n.args, n.kwargs))
    return found


def _target_name(n: fx.Node) -> str:
    if n.op == "call_method":
        return n.target
    if n.op == "call_module":
        return "module"
    target = n.target
    if isinstance(target, torch._ops.OpOverload):
        return target.overloadpacket.__name__
    if target is getattr:
        return "getattr"
    return getattr(target, "__name__", str(target))


def _fetch(root: torch.nn.Module, target: str):
    obj = root
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def record(gm: fx.GraphModule, example_inputs, state: set[str] | None = None) -> Recorder:
    recorder = Recorder(gm, static_nodes(gm, state))
    with torch.no_grad():
        recorder.run(*example_inputs)
    return recorder


# -- the translation context -----------------------------------------------------

class Translator:
    """Builds the IR from an fx graph; handlers in :mod:`.fx_ops` call its helpers."""

    def __init__(self, module, gm: fx.GraphModule, tracer: str, recorder: Recorder):
        self.module = module
        self.gm = gm
        self.rec = recorder
        self.nodes: list[Node] = []
        self.tensors: dict[str, TensorInfo] = {}
        self.constants: dict[str, np.ndarray] = {}
        self.pinned: dict[str, str] = {}
        self.model = FxModel(module, gm, None, tracer, {}, {}, {}, {})
        self.current: fx.Node | None = None
        self._counter = 0

    # values -------------------------------------------------------------
    def value(self, arg):
        """The concrete Python value of an argument (fx nodes resolved from the run)."""
        return pytree.tree_map(lambda a: self.rec.values.get(a.name) if isinstance(a, fx.Node) else a, arg)

    def info(self, node: fx.Node):
        return self.rec.info.get(node.name)

    def is_tensor(self, arg) -> bool:
        return isinstance(arg, fx.Node) and isinstance(self.rec.info.get(arg.name), TensorInfo)

    def shape(self, arg) -> tuple:
        return self.rec.info[arg.name].shape

    # IR names -----------------------------------------------------------
    def tensor(self, arg) -> str:
        """The IR name of a tensor argument; Python scalars become constants."""
        if isinstance(arg, fx.Node):
            name = self.model.ir_name.get(arg.name)
            if name is None:
                raise Untranslatable(f"'{arg.name}' is not a tensor the IR knows")
            return name
        if isinstance(arg, (bool, int, float)):
            return self.constant(np.array(arg, dtype=np.float32 if isinstance(arg, float) else np.int64))
        raise Untranslatable(f"argument {arg!r} is not a tensor")

    def constant(self, value: np.ndarray, base: str = "const") -> str:
        self._counter += 1
        name = f"{self.current.name if self.current else 'graph'}.{base}{self._counter}"
        self.constants[name] = np.asarray(value)
        return name

    def fresh(self, base: str) -> str:
        self._counter += 1
        return f"{self.current.name}#{base}{self._counter}"

    def output(self, suffix: str | None = None) -> str:
        """The IR name of the current fx node's value (or of one of its tuple elements)."""
        return self.current.name if suffix is None else f"{self.current.name}#{suffix}"

    def emit(self, op: str, inputs: list[str], outputs: list[str] | str | None = None, **attrs) -> Node:
        if outputs is None:
            outputs = [self.output()]
        elif isinstance(outputs, str):
            outputs = [outputs]
        node = Node(f"{self.current.name}/{op}{len(self.nodes)}", op, list(inputs), outputs, dict(attrs))
        self.nodes.append(node)
        self.model.origin[node.name] = self.current
        return node

    def set_shape(self, name: str, shape: tuple, dtype=None) -> None:
        self.tensors[name] = TensorInfo(tuple(int(s) for s in shape), dtype)

    def bind(self, ir_node: Node, slot, index: int | None, path: tuple, old: int) -> None:
        self.model.bindings.append(Binding(ir_node, slot, index, self.current, path, int(old)))

    def pin(self, tensor, reason: str) -> None:
        """Pin every axis of ``tensor``, or one axis when given ``(tensor, axis)``."""
        self.pinned.setdefault(tensor, reason)


def _flatten_output(arg) -> list[fx.Node]:
    leaves, _ = pytree.tree_flatten(arg)
    return [leaf for leaf in leaves if isinstance(leaf, fx.Node)]


def build(module, gm: fx.GraphModule, tracer: str, example_inputs,
          handler_for: Callable[[Translator, fx.Node], Callable | None]) -> FxModel:
    """Run the recorder and translate every fx node (see :func:`.fx_ops.translate`)."""
    recorder = gm.meta.pop(OBSERVED, None)  # gathered by the tracer, if it ran the module itself
    if recorder is None:
        recorder = record(gm, example_inputs, set(module.state_dict().keys()))
    t = Translator(module, gm, tracer, recorder)
    model = t.model
    inputs: list[str] = []
    for n in gm.graph.nodes:
        t.current = n
        info = recorder.info.get(n.name)
        if n.op == "placeholder":
            if isinstance(info, TensorInfo):
                inputs.append(n.name)
                t.tensors[n.name] = info
                model.ir_name[n.name] = n.name
            continue
        if n.op == "output":
            continue
        if n.op == "get_attr":
            value = _fetch(gm, n.target)
            if isinstance(value, torch.Tensor):
                t.constants[n.target] = value.detach().cpu().numpy() if value.dtype != torch.bfloat16 \
                    else value.detach().float().numpy()
                model.params[n.target] = value
                model.ir_name[n.name] = n.target
            continue
        if n.name in recorder.static and isinstance(info, TensorInfo):
            value = recorder.values[n.name]
            if value.ndim and _translated(t, n, handler_for(t, n)):
                continue
            t.constants[n.name] = value.detach().cpu().numpy()
            model.ir_name[n.name] = n.name
            if value.ndim:
                t.pin(n.name, f"'{n.name}' is computed at trace time from sizes")
            continue
        if info is None or not _carries_tensor(info):
            continue  # sizes and other Python values: known from the run
        handler = handler_for(t, n)
        start = len(t.nodes)
        try:
            if handler is None:
                raise Untranslatable("no translation")
            handler(t, n)
        except Untranslatable as exc:
            del t.nodes[start:]
            _opaque(t, n, str(exc))
            model.untranslated.append(f"{n.format_node()}: {exc}")
        if isinstance(info, TensorInfo):
            t.tensors.setdefault(n.name, info)
            model.ir_name.setdefault(n.name, n.name)
    outputs = []
    for leaf in _flatten_output(next(n for n in gm.graph.nodes if n.op == "output").args):
        name = model.ir_name.get(leaf.name)
        if name is not None and name not in outputs:
            outputs.append(name)
    graph = Graph(t.nodes, inputs, outputs, t.tensors, t.constants, IR_OPSET,
                  name=type(module).__name__, source=gm)
    graph.pinned = t.pinned
    model.split_sizes = {node.name: [int(v) for v in np.asarray(t.constants[node.inputs[1]]).reshape(-1)]
                         for node in t.nodes if node.op == "Split" and node.inputs[1:2] and
                         node.inputs[1] in t.constants}
    model.graph = graph
    model.fx_of_ir = {ir: fxn for fxn, ir in model.ir_name.items()}
    return model


def _translated(t: Translator, n: fx.Node, handler) -> bool:
    """Translate a tensor computed at trace time as a graph node (a fill from literal sizes)."""
    if handler is None:
        return False
    start = len(t.nodes)
    try:
        handler(t, n)
    except Untranslatable:
        del t.nodes[start:]
        return False
    t.tensors.setdefault(n.name, t.rec.info[n.name])
    t.model.ir_name.setdefault(n.name, n.name)
    return True


def _carries_tensor(info) -> bool:
    if isinstance(info, TensorInfo):
        return True
    return isinstance(info, list) and any(isinstance(i, TensorInfo) for i in info)


def _opaque(t: Translator, n: fx.Node, reason: str) -> None:
    """An untranslated call: an op no rule knows, so every axis it touches is pinned."""
    inputs = [t.model.ir_name[a.name] for a in _node_args(n) if a.name in t.model.ir_name]
    info = t.info(n)
    if isinstance(info, TensorInfo):
        outputs = [n.name]
    else:
        outputs = []
        for i, item in enumerate(info):
            if isinstance(item, TensorInfo):
                name = f"{n.name}#{i}"
                t.tensors[name] = item
                outputs.append(name)
    node = t.emit(f"opaque:{_target_name(n)}", inputs, outputs)
    node.domain = "torch"
    node.attrs["reason"] = reason


__all__ = ["Binding", "FxModel", "Translator", "Untranslatable", "build", "trace", "operator"]
