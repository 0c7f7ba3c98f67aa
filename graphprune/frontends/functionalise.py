"""In-place ATen ops on private intermediates, rewritten as their functional forms.

An exported (training-IR) graph keeps the forward's in-place ops: T5's
``position_bias += mask``, Mixtral's ``router_top_value /= ...`` and its
``index_put_`` into an ``empty_like``. The translation assumes an SSA graph,
and ``ExportedProgram.run_decompositions`` makes one by re-tracing the whole
program -- about half of a Hugging Face prune's time (T5: 7.6 of 14.7 s).

When every mutation writes a tensor that nothing else aliases, the rewrite is
local and exact: ``y = op_(x, ...)`` becomes ``y' = op(x, ...)``, and every use of
``x`` or ``y`` *after* the mutation reads ``y'`` (uses before it saw the old
value and still do). A tensor nothing else aliases is one produced by a
non-view op, whose earlier users create no views of it. Anything else (a
mutated input, parameter, buffer or view, an op with no functional twin) and
the graph is left untouched: the caller falls back to ``run_decompositions``.
"""

from __future__ import annotations

import operator

import torch
import torch.fx as fx


def functionalise(gm: fx.GraphModule) -> bool:
    """Rewrite every in-place op of ``gm`` as above; False (``gm`` untouched) when one cannot be."""
    nodes = list(gm.graph.nodes)
    order = {n: i for i, n in enumerate(nodes)}
    rewrites = []
    for n in nodes:
        if not _mutable(n):
            continue
        functional = _functional_twin(n.target)
        written = n.args[0] if n.args else None
        if functional is None or not isinstance(written, fx.Node) or not _private(written, n, order):
            return False
        rewrites.append((n, functional))
    for n, functional in rewrites:
        written = n.args[0]  # (an earlier rewrite may have renamed it)
        with gm.graph.inserting_after(n):
            fresh = gm.graph.call_function(functional, n.args, n.kwargs)
        fresh.meta = dict(n.meta)
        for user in list(written.users) + list(n.users):
            if user is not n and user is not fresh and order.get(user, len(order)) > order[n]:
                user.replace_input_with(written, fresh)
                user.replace_input_with(n, fresh)
        gm.graph.erase_node(n)
        order[fresh] = order[n]
    gm.graph.lint()
    gm.recompile()
    return True


def mutates(gm: fx.GraphModule) -> bool:
    """Whether an ATen (training-IR) graph mutates tensors in place (``zero_`` on a slice,
    ``copy_`` into a view). Only then is it functionalised: locally where every mutated tensor is
    private (:func:`functionalise`), else (torch.export) by ``run_decompositions``, which re-traces
    the program (about half of a prune); the translation table knows the training IR's ATen ops,
    but an SSA graph is what its couplings assume."""
    return any(_mutable(n) for n in gm.graph.nodes)


def _mutable(n: fx.Node) -> bool:
    return n.op == "call_function" and isinstance(n.target, torch._ops.OpOverload) and n.target._schema.is_mutable


def _functional_twin(op: torch._ops.OpOverload):
    """``aten.add.Tensor`` for ``aten.add_.Tensor``: the same overload of the name without the
    trailing underscore, when the in-place op writes its first argument only and returns it."""
    schema = op._schema
    name = schema.name.split("::")[-1]
    if not name.endswith("_") or name.startswith("_"):
        return None
    writes = [a.alias_info is not None and a.alias_info.is_write for a in schema.arguments]
    if not writes or not writes[0] or any(writes[1:]):
        return None
    packet = getattr(torch.ops.aten, name[:-1], None)
    twin = getattr(packet, op._overloadname, None) if packet is not None else None
    if twin is None or twin._schema.is_mutable or len(twin._schema.arguments) != len(schema.arguments):
        return None
    return twin


def _private(x: fx.Node, mutation: fx.Node, order: dict) -> bool:
    """``x`` is a fresh tensor nothing aliases up to ``mutation``: made by a non-view ATen op
    (or taken from a tuple such an op returned), possibly through earlier in-place ops (which
    are rewritten first), and no earlier user of any of those names views it."""
    names = [x]
    while _mutable(names[-1]) and names[-1].args and isinstance(names[-1].args[0], fx.Node) \
            and _functional_twin(names[-1].target) is not None:
        names.append(names[-1].args[0])  # x = op_(y): x is y
    source = names[-1]
    if source.op == "call_function" and source.target is operator.getitem:
        source = source.args[0]
    if source.op != "call_function" or not isinstance(source.target, torch._ops.OpOverload):
        return False
    if _aliases(source.target) or source.target._schema.is_mutable:
        return False
    chain = set(names)
    for name in names:
        for user in name.users:
            if user is mutation or user in chain or order.get(user, 0) > order[mutation]:
                continue
            if _mutable(user) and user.args and user.args[0] in chain and _functional_twin(user.target) is not None:
                continue  # another in-place op on the same tensor, rewritten in order
            if not (user.op == "call_function" and isinstance(user.target, torch._ops.OpOverload)) or \
                    _aliases(user.target) or user.target._schema.is_mutable:
                return False
    return True


def _aliases(op: torch._ops.OpOverload) -> bool:
    """Whether an output of ``op`` may share memory with an input (a view)."""
    return any(r.alias_info is not None for r in op._schema.returns)
