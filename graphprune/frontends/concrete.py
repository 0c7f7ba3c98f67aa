"""A concrete trace: the module's ATen ops at the example's shapes, in a tenth of torch.export's time.

The forward runs once on the real inputs and every pre-dispatch ATen op is recorded
(so ``linear`` and ``scaled_dot_product_attention`` stay whole, as in torch.export's
training IR): by :mod:`.recording`, a dispatch mode that gives ``make_fx``'s real-mode
graph node for node at a third to a fifth of its cost, or by ``make_fx`` itself where
the recorder refuses. No symbolic sizes: on a 2-layer BERT it takes 0.06 s where
``torch.export`` with a dynamic batch and length takes 0.9 s (most of it symbolic
size arithmetic). The price is that the graph
holds the example's sizes as literals and the branches its values took, so it
serves the analysis and the oracle only, never as a returned model:

* the oracle runs each other verification shape on the module itself, replaying
  the trace's masks on the k-th call of each op (:mod:`..oracle_replay`), or, where
  the calls do not line up, on a fresh trace at that shape whose nodes are matched
  to the first trace's (:func:`graph_at`; the masks are placed by node name); where
  neither serves, the caller falls back to ``torch.export``;
* when the pruned original class cannot be kept, the caller prunes again from
  a ``torch.export`` trace, whose graph runs at every batch and length.

Parameters and buffers appear as ``get_attr`` nodes named by their
``state_dict`` names, holding the module's own tensors (as torch.export's
``module()`` does), so emission slices them where the translation expects.
"""

from __future__ import annotations

import contextlib

import torch
import torch.fx as fx
from torch._guards import TracingContext, tracing
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.fx.experimental.proxy_tensor import get_proxy_mode, make_fx

from .functionalise import functionalise, mutates
from .fx import OBSERVED, Observed
from .recording import record

TRACER = "concrete"


class NeedsExport(Exception):
    """A concrete trace cannot serve this prune (the original class does not reproduce its oracle,
    a mask has no counterpart in the trace at another shape, or no other shape could be checked):
    prune again from a torch.export trace."""


def concrete_trace(module: torch.nn.Module, example_inputs) -> fx.GraphModule:
    """The ATen graph of ``module(*example_inputs)`` with its parameters and buffers as attributes.

    Raises what ``make_fx`` raises (an op it cannot run under tracing) and ValueError when the
    graph mutates a tensor other than a private intermediate or reads a value out of float data
    (:func:`_refuse_branches_on_floats`); the export path handles both."""
    state = dict(module.named_parameters(remove_duplicate=False))
    state.update(module.named_buffers(remove_duplicate=False))
    graph = fx.Graph()
    observed = Observed(set(module.state_dict().keys()))  # what the translation would run the graph for
    try:
        with _module_stacks(module, lambda: graph):
            gm = record(module, example_inputs, state, graph, observed)
    except Exception:  # (NotRecordable, or the forward failing: make_fx then says how, as it always did)
        gm, observed = _make_fx_trace(module, example_inputs, state), None
    if mutates(gm):
        if not functionalise(gm):
            raise ValueError("the forward mutates a tensor that is not a private intermediate")
        observed = None  # the values were observed on the graph before it was rewritten
    _refuse_branches_on_floats(gm)
    if observed is not None and observed.complete:
        gm.meta[OBSERVED] = observed
    return gm


def _make_fx_trace(module: torch.nn.Module, example_inputs, state: dict) -> fx.GraphModule:
    """The same graph by ``make_fx`` (real tensors, pre-dispatch), for what the recorder refuses."""
    def forward(state, *args):
        return torch.func.functional_call(module, state, args, tie_weights=True, strict=False)

    def graph_of_proxy_mode():
        mode = get_proxy_mode()
        return mode.tracer.graph if mode is not None else None

    # one fake mode for every recorded value's metadata: without it make_fx builds a FakeTensorMode per
    # node, each capturing the Python stack (a third of the trace time on a 30-layer model)
    metadata = TracingContext(FakeTensorMode(allow_fallback_kernels=True))
    with torch.no_grad(), _module_stacks(module, graph_of_proxy_mode), tracing(metadata):
        traced = make_fx(forward, tracing_mode="real", pre_dispatch=True, record_stack_traces=False,
                         _error_on_data_dependent_ops=False)(state, *example_inputs)
    graph = traced.graph
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    first = next(n for n in graph.nodes if n.op != "placeholder")
    with graph.inserting_before(first):  # the state's placeholders come first, in its order
        for name, node in zip(state, placeholders[:len(state)]):
            if node.users:  # (Graph.get_attr() looks for the name on the make_fx module and warns)
                attr = graph.create_node("get_attr", name)
                attr.meta.update(node.meta)  # its value: a branch on a weight is a branch on floats
                node.replace_all_uses_with(attr)
            graph.erase_node(node)
    graph._codegen = fx.graph.CodeGen()  # positional inputs, a flat list of outputs
    root = {n.target: state[n.target] if n.target in state else getattr(traced, n.target)
            for n in graph.nodes if n.op == "get_attr"}
    return fx.GraphModule(root, graph, class_name=type(module).__name__)


def _refuse_branches_on_floats(gm: fx.GraphModule) -> None:
    """Raise where the forward read a value out of a tensor computed from float data (``.item()``,
    ``nonzero``, ``bool(t)`` of activations or weights): the trace holds only the branch the example
    took, so a routing or an early exit on activations could hide weights from the analysis.
    Values read from integers alone (token ids, positions, masks: padding and packing checks)
    decide nothing about channels and are allowed."""
    float_fed: dict[fx.Node, bool] = {}
    for n in gm.graph.nodes:
        value = n.meta.get("val")
        own = isinstance(value, torch.Tensor) and (value.is_floating_point() or value.is_complex())
        float_fed[n] = own or any(float_fed.get(a, False) for a in n.all_input_nodes)
        if n.op == "call_function" and isinstance(n.target, torch._ops.OpOverload) and \
                torch.Tag.data_dependent_output in n.target.tags and float_fed[n]:
            raise ValueError(f"'{n.name}' ({n.target}) reads a value computed from float tensors")


@contextlib.contextmanager
def _module_stacks(module: torch.nn.Module, current_graph):
    """Stamp each recorded node with the submodule whose forward made it, as torch.export's
    ``nn_module_stack`` does (make_fx records none): size attributes are repaired per module.

    Global forward hooks keep the stack of running submodules; at each push and pop, the nodes
    recorded since the last stamp get the innermost one (walking back from the graph's end)."""
    paths = {id(m): (path, type(m)) for path, m in module.named_modules()}
    stack: list = []

    def stamp():
        graph = current_graph()
        if graph is None:
            return
        node = graph._root.prev
        while node is not graph._root and "nn_module_stack" not in node.meta:
            node.meta["nn_module_stack"] = {stack[-1][0]: stack[-1]} if stack else {}
            node = node.prev

    def enter(m, args):
        if id(m) in paths:
            stamp()
            stack.append(paths[id(m)])

    def leave(m, args, out):
        if id(m) in paths and stack:
            stamp()
            stack.pop()

    hooks = (torch.nn.modules.module.register_module_forward_pre_hook(enter),
             torch.nn.modules.module.register_module_forward_hook(leave))
    try:
        yield
    finally:
        for hook in hooks:
            hook.remove()


def graph_at(model, inputs) -> tuple[fx.GraphModule, dict[str, str] | None]:
    """The traced graph to run ``inputs`` on, with the names its nodes have there (None: the
    same): the model's own, or for a concrete trace of other inputs a fresh trace of them
    (also at the same shapes, since the trace holds the branches the example's values took)."""
    if model.tracer != TRACER or (len(inputs) == len(model.example) and
                                  all(a is b for a, b in zip(inputs, model.example))):
        return model.gm, None
    gm = concrete_trace(model.module, inputs)
    gm.meta.pop(OBSERVED, None)  # (not translated: its values are not needed)
    return gm, aligned(model.gm, gm)


def aligned(a: fx.GraphModule, b: fx.GraphModule) -> dict[str, str]:
    """``a``'s node names -> ``b``'s: the k-th call of an op in ``a`` is the k-th in ``b``, for
    every op called equally often in both (a trace at batch 1 skips some no-op ``expand`` calls
    that one at batch 2 records, which shifts the names of every later ``expand``)."""
    def calls(gm):
        by_target: dict = {}
        for n in gm.graph.nodes:
            if n.op in ("call_function", "placeholder", "get_attr"):
                by_target.setdefault((n.op, n.target if n.op == "call_function" else n.name), []).append(n)
        return by_target

    left, right = calls(a), calls(b)
    return {x.name: y.name for key, xs in left.items() if len(xs) == len(right.get(key, ()))
            for x, y in zip(xs, right[key])}
