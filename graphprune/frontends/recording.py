"""Record a module's pre-dispatch ATen calls into an fx graph by running it once, eagerly.

What ``make_fx(tracing_mode="real", pre_dispatch=True)`` gives the concrete trace, at a
third of its cost: make_fx wraps every value in a proxy, runs each op through its proxy
mode's bookkeeping (constant tracking, symbolic-size slots, a fake-tensor metadata
snapshot made by dispatching ``empty_strided`` under a fake mode) and traces the
module through ``functional_call``. None of that is needed for real tensors at one
shape: a dispatch mode at the same key (the one make_fx's proxy mode sits at, so the
same ops: ``linear``, ``matmul``, ``layer_norm``...) sees every call with its real
arguments, runs it, and appends a node whose arguments are the nodes that produced
them, found by tensor identity (a weak-keyed map, as make_fx keys its proxies).

The graph follows make_fx's conventions so everything downstream reads it the same
way: placeholders ``arg{i}_{j}`` (the j-th leaf of the i-th positional input,
``i`` from 1), parameters and buffers as ``get_attr`` nodes by ``state_dict`` name
(the last name of a tied tensor, ahead of every call, in ``state_dict`` order), a
``getitem`` node per element of a tuple result, tensors the trace did not produce
(a plain tensor attribute, ``torch.tensor(...)`` literals) as ``_tensor_constant{k}``
attributes, ``meta["val"]`` a fake tensor of each result's shape, stride and dtype
(made directly from a meta tensor, no dispatch), and a flat output list of the
result's pytree leaves.

The forward sees what it would see under make_fx (:func:`_looks_like_make_fx`), so it
takes the same path (no fused fast paths), and grad-mode and autocast switches are
recorded as make_fx records them. It refuses (:class:`NotRecordable`, the caller uses
make_fx) whatever it does not model: a call that is not an ATen ``OpOverload`` (a
higher-order op such as ``cond`` or a checkpoint), a functorch transform, or a result
that is not a tensor, a flat list/tuple of tensors, a Python number or None. Checked
node for node against make_fx on every torchvision model, the smallest variant of
every timm family and every Hugging Face zoo family (tests/torch/test_recording.py
keeps a handful).
"""

from __future__ import annotations

import contextlib
import numbers
import operator
import weakref

import torch
import torch.fx as fx
from torch._dispatch.python import enable_python_dispatcher
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode
from torch._subclasses.schema_check_mode import SchemaCheckMode
from torch.fx._lazy_graph_module import _LazyGraphModule
from torch.fx._symbolic_trace import _is_fx_tracing_context
from torch.fx.experimental.proxy_tensor import PreDispatchTorchFunctionMode, disable_autocast_cache
from torch.fx.node import _side_effectful_need_to_be_preserved_pre_dispatch
from torch.overrides import TorchFunctionMode
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.weak import WeakIdKeyDictionary


GONE = object()  # what ``observe`` gets for a value freed before any call read it


class NotRecordable(Exception):
    """The forward does something the recorder does not model: trace it with make_fx."""


class PreDispatchMode(SchemaCheckMode):
    """A Python dispatch mode at the pre-dispatch key (where make_fx's proxy mode records).

    It derives from SchemaCheckMode only because torch accepts no other Python class at
    that key; none of that mode's checking runs (subclasses replace ``__torch_dispatch__``
    and skip its ``__init__``). Enter it with ``enable_python_dispatcher()``.
    """

    def __init__(self):
        TorchDispatchMode.__init__(self)
        self._dispatch_key = torch._C.DispatchKey.PreDispatch


class _Recorder(PreDispatchMode):
    """A pre-dispatch mode appending one node per ATen call (see the module docstring)."""

    def __init__(self, graph: fx.Graph, known: WeakIdKeyDictionary, constants: dict, fake: FakeTensorMode,
                 observe=None):
        super().__init__()
        self.graph, self.known, self.constants, self.fake = graph, known, constants, fake
        self.observe = observe
        self.unobserved: list[tuple[fx.Node, object]] = []  # (node, weak references to its value)
        self.qualnames = WeakIdKeyDictionary()  # untracked tensor -> its _tensor_constant name
        self.literal = WeakIdKeyDictionary()  # traced tensors make_fx knows the value of (see below)
        self.refused = ""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        self.flush()
        if not isinstance(func, torch._ops.OpOverload):
            self.refuse(f"{func} is not an ATen op")
        if func is torch.ops.prim.device.default:
            return func(*args, **kwargs)
        if func is torch.ops.aten.is_nonzero.default:  # bool(t), as make_fx spells it
            with self:
                return bool((args[0] != 0).item())
        if func is torch.ops.aten.lift_fresh.default:  # torch.tensor(...): a copy, so the literal
            func = torch.ops.aten.lift_fresh_copy.default  # stays as traced if mutated later
        traced = [x for x in pytree.tree_leaves((args, kwargs)) if isinstance(x, torch.Tensor) and x in self.known]
        all_literal = all(x in self.literal for x in traced)
        if torch.Tag.data_dependent_output in func.tags and all_literal:
            return func(*args, **kwargs)  # a value read from literals only: no node, as in make_fx
        out = func(*args, **kwargs)
        node_args, node_kwargs = pytree.tree_map_only(torch.Tensor, self.node_of, (args, kwargs))
        node = self.graph.create_node("call_function", func, node_args, node_kwargs,
                                      name=self.graph._target_to_str(func.overloadpacket.__name__))
        self.track(out, node)
        # make_fx's constant propagation: a small torch.tensor literal, and what is computed from
        # such literals alone, has a known value (a later .item() of it records nothing)
        results = [x for x in pytree.tree_leaves(out) if isinstance(x, torch.Tensor)]
        literal = all(x.numel() <= 1 for x in results) and (func is torch.ops.aten.lift_fresh_copy.default or (
            traced and all_literal and torch.Tag.nondeterministic_seeded not in func.tags))
        for x in results:  # (an in-place op on a literal with other data makes it a literal no more)
            if literal:
                self.literal[x] = True
            else:
                self.literal.pop(x, None)
        return out

    def note(self, node: fx.Node, value) -> None:
        """Report ``value`` to ``observe`` at the next call (see :meth:`flush`)."""
        if self.observe is not None:
            self.unobserved.append((node, pytree.tree_map_only(torch.Tensor, weakref.ref, value)))

    def flush(self) -> None:
        """Hand the values noted since the last call to ``observe``: only now, because a factory
        op's result that something else holds while it is returned comes back as a fresh alias
        (``make_variable`` copies a tensor whose impl has other owners), whose identity the trace
        would not know. A value gone by now (used by no call) is reported as :data:`GONE`."""
        pending, self.unobserved = self.unobserved, []
        for node, refs in pending:
            self.observe(node, pytree.tree_map_only(weakref.ref, lambda r: r() if r() is not None else GONE, refs))

    def refuse(self, why: str):
        """Stop: remembered, since the forward may catch the exception and go on."""
        self.refused = why
        raise NotRecordable(why)

    def node_of(self, tensor: torch.Tensor) -> fx.Node:
        """The node that produced ``tensor``; a tensor from outside the trace is read from a
        ``_tensor_constant`` attribute, by a new ``get_attr`` node at each use (as make_fx does)."""
        node = self.known.get(tensor)
        if node is not None:
            return node
        name = self.qualnames.get(tensor)
        if name is None:
            name = self.qualnames[tensor] = f"_tensor_constant{len(self.constants)}"
            self.constants[name] = tensor
        node = self.graph.create_node("get_attr", name)
        node.meta["val"] = self.value(tensor)
        self.note(node, tensor)
        return node

    def track(self, out, node: fx.Node) -> None:
        self.note(node, out)
        if isinstance(out, torch.Tensor):
            node.meta["val"] = self.value(out)
            self.known[out] = node  # (an in-place op's result is its input: later reads see this node)
        elif isinstance(out, (tuple, list)):
            if not all(isinstance(x, torch.Tensor) or x is None for x in out):
                self.refuse(f"{node.target} returns a nested result")
            node.meta["val"] = type(out)(self.value(x) if x is not None else None for x in out)
            for i, x in enumerate(out):  # one getitem per element, as make_fx's proxies make them
                item = self.graph.create_node("call_function", operator.getitem, (node, i), name="getitem")
                self.note(item, x)
                if x is not None:
                    item.meta["val"] = self.value(x)
                    self.known[x] = item
        elif out is None or isinstance(out, numbers.Number):
            pass  # a value read out of a tensor (no "val", as in make_fx): later uses hold it as a literal
        else:
            self.refuse(f"{node.target} returns {type(out).__name__}")

    def value(self, tensor: torch.Tensor):
        """A fake tensor with ``tensor``'s shape, stride, dtype and device."""
        if tensor.is_sparse or tensor.layout != torch.strided:
            return None
        meta = torch.empty_strided(tensor.shape, tensor.stride(), dtype=tensor.dtype, device="meta")
        return FakeTensor(self.fake, meta, tensor.device)


class _FunctionLevel(PreDispatchTorchFunctionMode):
    """The torch-function side of make_fx's pre-dispatch tracing: grad-mode switches and autocast
    regions are recorded as make_fx records them (``_set_grad_enabled``, ``_enter_autocast`` /
    ``_exit_autocast`` nodes), every other call passes through; functorch transforms inside
    the forward (vmap, jvp) are refused. It derives from make_fx's own mode class because
    ``torch.autocast`` reports its regions to that class only."""

    def __init__(self, recorder: _Recorder):
        TorchFunctionMode.__init__(self)
        self.recorder = recorder
        self.enter_autocast_nodes: list[fx.Node] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _side_effectful_need_to_be_preserved_pre_dispatch:
            if func is torch.amp.autocast_mode._exit_autocast:
                args = (self.enter_autocast_nodes.pop(),)
            node = self.recorder.graph.create_node("call_function", func, args, {})
            node.meta["val"] = None
            self.recorder.note(node, None)
            if func is torch.amp.autocast_mode._enter_autocast:
                self.enter_autocast_nodes.append(node)
            if func is torch._C._set_grad_enabled:
                func(*args, **kwargs)  # (autocast's Python API has switched it already)
            return node
        if getattr(func, "__module__", "") in ("torch._functorch.predispatch", "torch._functorch.vmap"):
            self.recorder.refuse(f"{func.__name__}: a functorch transform inside the forward")
        return func(*args, **kwargs)


@contextlib.contextmanager
def _looks_like_make_fx(recorder: _Recorder):
    """What a forward can see of make_fx tracing it, so it takes the same path: a torch-function
    mode is active (``has_torch_function`` is true: ``nn.MultiheadAttention`` and
    ``nn.TransformerEncoderLayer`` skip their fused fast paths), the fx tracing flag is set and
    the autocast cache is off."""
    with _is_fx_tracing_context(True), disable_autocast_cache(), _FunctionLevel(recorder):
        yield


def _refuse_higher_order_ops() -> None:
    """Make every higher-order op (``cond``, ``while_loop``, checkpointing...) refuse under the
    recorder: torch asks such ops for a handler per mode class, and without one it raises an
    AssertionError that a forward catching every exception would swallow."""
    def refuse(mode, *args, **kwargs):
        mode.refuse("a higher-order op")

    for op in list(torch._ops._higher_order_ops.values()):
        if _Recorder not in op.python_key_table:
            op.py_impl(_Recorder)(refuse)


def record(module: torch.nn.Module, example_inputs, state: dict[str, torch.Tensor],
           graph: fx.Graph, observe=None) -> fx.GraphModule:
    """The graph of ``module(*example_inputs)``, recorded into the empty ``graph`` (see the module
    docstring); ``state`` maps ``state_dict`` names to the module's parameters and buffers.
    ``observe(node, value)``, if given, is called for each node with the value it computed (the
    module's own tensor for a ``get_attr``), by the next call after it is made (see
    :meth:`_Recorder.flush`). Raises :class:`NotRecordable`."""
    _refuse_higher_order_ops()
    known = WeakIdKeyDictionary()
    constants: dict[str, torch.Tensor] = {}
    fake = FakeTensorMode(allow_fallback_kernels=True)
    mode = _Recorder(graph, known, constants, fake, observe)
    for i, arg in enumerate(example_inputs, start=1):
        for j, leaf in enumerate(pytree.tree_leaves(arg), start=1):
            node = graph.placeholder(f"arg{i}_{j}")
            node.meta["val"] = mode.value(leaf) if isinstance(leaf, torch.Tensor) else leaf
            mode.note(node, leaf)
            if isinstance(leaf, torch.Tensor):
                known[leaf] = node
        if not pytree.tree_leaves(arg):  # an empty container is still a placeholder
            node = graph.placeholder(f"arg{i}_1")
            node.meta["val"] = arg
            mode.note(node, arg)
    names = {}
    for name, tensor in state.items():  # a tied tensor goes by its last name, as in make_fx
        names[id(tensor)] = name
    attrs = {}
    for name, tensor in state.items():
        if names[id(tensor)] == name and tensor not in known:
            attrs[name] = node = graph.create_node("get_attr", name)
            node.meta["val"] = mode.value(tensor)
            mode.note(node, tensor)
            known[tensor] = node
    with torch.no_grad(), _looks_like_make_fx(mode), enable_python_dispatcher(), mode:
        out = module(*example_inputs)
    mode.flush()
    if mode.refused:
        raise NotRecordable(mode.refused)
    leaves = [mode.node_of(x) if isinstance(x, torch.Tensor) else x for x in pytree.tree_leaves(out)]
    mode.flush()  # (an output the trace did not produce is a constant made just now)
    graph.output(leaves)
    for node in attrs.values():
        if not node.users:
            graph.erase_node(node)
    used = {n.target for n in graph.nodes if n.op == "get_attr"}
    root = {name: tensor for name, tensor in (*state.items(), *constants.items()) if name in used}
    # lazily compiled: the analysis and the oracle read the graph, and its Python code (15 ms on a
    # 2-layer BERT, per recompile after each edit) is generated only if something calls it
    return _LazyGraphModule(root, graph, class_name=type(module).__name__)
