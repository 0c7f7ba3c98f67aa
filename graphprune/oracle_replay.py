"""The torch oracle at another shape of a concrete trace, without tracing again.

A concrete trace (:mod:`.frontends.concrete`) holds the example's sizes, so the
oracle's second check (another batch and length) used to trace the module
again at that shape: 0.13 s of a 0.33 s verified prune of a 2-layer BERT
(0.4 s on T5, Whisper, Swin), where the replay takes 0.03-0.06 s. The oracle does not need a graph,
only the unpruned module's outputs with the removed channels zeroed where they
are consumed. So the module runs eagerly under a dispatch mode at the same
level the trace recorded (pre-dispatch ATen: ``linear``, ``matmul``,
``layer_norm``...), and the k-th call of an op gets what the k-th node of that
op got in the trace: the masks of its contracted inputs
(:func:`.verify_torch.oracle_masks`) and the norm statistics over kept
channels (:mod:`.masked_norms`).

Why the k-th call is the k-th node: the trace *is* such a dispatch mode
(``make_fx``'s proxy mode at the pre-dispatch key) on the same module, so it
records the calls this mode sees, in order. Shapes may change which calls
happen (a no-op ``expand`` at batch 1), so, as for a second trace, the replay
stands only where every masked op is called exactly as often as it was traced,
each masked input is a tensor of the mask's length, and no float data was
read; otherwise the caller traces again (:func:`replay_masked` returns None).
"""

from __future__ import annotations

from collections import Counter

import torch
import torch.fx as fx
from torch._dispatch.python import enable_python_dispatcher
from torch.utils import _pytree as pytree

from .frontends.recording import PreDispatchMode
from .masked_norms import evaluate


class _Mismatch(Exception):
    """The call does not look like the traced node it is matched to."""


class _Replay(PreDispatchMode):
    """A pre-dispatch mode applying the trace's masks and norms by op occurrence."""

    def __init__(self, actions: dict, root: fx.GraphModule):
        super().__init__()
        self.actions = actions  # (op, occurrence) -> (traced node, [(leaf, axis, keep)], norm or None)
        self.root = root
        self.calls: Counter = Counter()
        self.unhandled: set[str] = set()
        self.read_floats = False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        occurrence = self.calls[func]
        self.calls[func] += 1
        if torch.Tag.data_dependent_output in getattr(func, "tags", ()) and any(
                isinstance(a, torch.Tensor) and (a.is_floating_point() or a.is_complex())
                for a in pytree.tree_leaves((args, kwargs))):
            self.read_floats = True  # a branch the trace at the example may not have taken
        action = self.actions.get((func, occurrence))
        if action is None:
            return func(*args, **kwargs)
        node, masks, norm = action
        if norm is not None:
            value = evaluate(self.root, node, args, kwargs, *norm)
            if value is not None:
                return value
            self.unhandled.add(node.name)
        leaves, spec = pytree.tree_flatten((args, kwargs))
        for leaf, axis, keep in masks:
            x = leaves[leaf] if leaf < len(leaves) else None
            if not isinstance(x, torch.Tensor) or x.dim() <= axis or x.shape[axis] != keep.numel():
                raise _Mismatch(node.name)
            shape = [1] * x.dim()
            shape[axis] = -1
            leaves[leaf] = torch.where(keep.view(shape), x, torch.zeros((), dtype=x.dtype))
        args, kwargs = pytree.tree_unflatten(leaves, spec)
        return func(*args, **kwargs)


def _actions(gm: fx.GraphModule, masks: dict, norms: dict) -> tuple[dict, Counter] | None:
    """``(op, occurrence) -> (node, [(leaf index, axis, keep)], norm)`` for every masked node of
    ``gm``, and how often ``gm`` calls each op; None if a mask is not on one of the node's tensor
    arguments (a module parameter)."""
    seen: Counter = Counter()
    actions = {}
    for n in gm.graph.nodes:
        if n.op != "call_function":
            continue
        occurrence = seen[n.target]
        seen[n.target] += 1
        entries = masks.get(n.name, ())
        if not entries and n.name not in norms:
            continue
        leaves = pytree.tree_leaves((n.args, n.kwargs))
        placed = []
        for source, axis, keep in entries:
            at = next((i for i, x in enumerate(leaves) if isinstance(x, fx.Node) and x.name == source), None)
            if at is None:
                return None
            placed.append((at, axis, keep))
        actions[(n.target, occurrence)] = (n, placed, norms.get(n.name))
    traced = {(n.op, n.name) for n in gm.graph.nodes}
    if any(("call_function", name) not in traced for name in (*masks, *norms)):
        return None  # a mask on a call_module or other node: not a concrete trace's
    return actions, seen


def replay_masked(model, inputs, masks: dict, norms: dict):
    """``(outputs, unhandled norm nodes)`` of ``model.module(*inputs)`` with the oracle's masks
    and kept-channel norms of ``model.gm`` (a concrete trace) replayed by op occurrence; None
    where the replay cannot stand for a trace at these inputs (see the module docstring)."""
    found = _actions(model.gm, masks, norms)
    if found is None:
        return None
    actions, traced_calls = found
    mode = _Replay(actions, model.gm)
    try:
        with torch.no_grad(), enable_python_dispatcher(), mode:
            out = model.module(*inputs)
    except _Mismatch:
        return None
    if mode.read_floats or any(mode.calls[op] != traced_calls[op] for op, _ in actions):
        return None
    outputs = [t for t in pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]
    traced_outputs = next(n for n in reversed(model.gm.graph.nodes) if n.op == "output")
    if len(outputs) != len(pytree.tree_leaves(traced_outputs.args)):
        return None
    return outputs, mode.unhandled
