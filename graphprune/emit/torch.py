"""Apply a plan to a traced PyTorch module.

1. The plan is applied to the IR (:func:`~graphprune.channels.apply.apply_plan`),
   which slices constants and rewrites sizes exactly as for ONNX.
2. Every sliced constant that mirrors a parameter or buffer is sliced in the
   module (and in the traced GraphModule, which may hold its own reference),
   keeping ``requires_grad``; leaf-module attributes (``out_channels``,
   ``groups``, ``num_features``, ``normalized_shape``...) follow the new shapes.
3. Literal sizes bound during translation are rewritten in the fx graph.

The caller then decides what to return: the original module if it still runs
and matches, else the recompiled GraphModule (:func:`stale_attributes` says
which attributes of the original classes now disagree with it).
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.fx as fx
import torch.nn as nn
from torch.utils import _pytree as pytree

from ..channels.apply import apply_plan
from ..frontends.fx import FxModel
from .config_fields import repair_config_fields


@dataclass
class TorchEmission:
    sliced: dict[str, dict[int, np.ndarray]]
    literals: list[str] = field(default_factory=list)  # "node: old -> new" for rewritten literals
    restore: list = field(default_factory=list, repr=False)  # undo log
    old_shapes: dict[str, tuple] = field(default_factory=dict)  # sliced parameter -> shape before

    @property
    def graph_changed(self) -> bool:
        return bool(self.literals)

    def rollback(self) -> None:
        """Put back every parameter and attribute the emission changed."""
        for undo in reversed(self.restore):
            undo()
        self.restore.clear()


def new_shapes(model: FxModel, plan) -> dict[str, tuple]:
    """Shapes of every IR tensor after the plan (before the IR is changed)."""
    table = plan.analysis.table
    shapes = {}
    for name, info in model.graph.tensors.items():
        if info.shape is None:
            continue
        shape = list(info.shape)
        for axis in range(len(shape)):
            did = table.ids.get((name, axis))
            kept = plan.kept(did) if did is not None else None
            if kept is not None:
                shape[axis] = len(kept)
        shapes[name] = tuple(shape)
    return shapes


def emit_torch(model: FxModel, plan) -> TorchEmission:
    """Shrink ``model.module`` in place (and its GraphModule); see the module docstring."""
    graph = model.graph
    shapes = new_shapes(model, plan)
    table = plan.analysis.table
    changed_keys = {table.keys[d] for d in plan.changed_dims()}
    sliced = apply_plan(graph, plan)
    for name, shape in shapes.items():
        graph.tensors[name].shape = shape
    emission = TorchEmission(sliced)
    try:
        _emit(model, graph, emission, changed_keys)
    except BaseException:
        emission.rollback()  # nothing half-written: the module is as it was
        raise
    return emission


def _emit(model: FxModel, graph, emission: TorchEmission, changed_keys) -> None:
    slots = tensor_slots(model)
    for name, axes in emission.sliced.items():
        if name in model.params:
            _slice_tensor(model, name, axes, emission, slots)
    _update_attributes(model, emission)
    for node in graph.nodes:  # sizes the IR keeps as attributes, read back by bindings
        if "normalized_shape" in node.attrs and node.inputs[0] in graph.tensors:
            count = len(node.attrs["normalized_shape"])
            node.attrs["normalized_shape"] = list(graph.tensors[node.inputs[0]].shape[-count:])
    changed = _axis_changed(model, graph, changed_keys)
    _rewrite_literals(model, emission, _size_reader(model, graph, changed))
    for fixup in model.fixups:
        args = (changed, graph) if getattr(fixup, "needs_graph", False) else (changed,)
        if fixup(*args):
            emission.literals.append(f"{fixup.__name__} on the traced graph")
    if emission.graph_changed:
        model.gm.recompile()


def _owner(root: nn.Module, fqn: str):
    path, _, attr = fqn.rpartition(".")
    try:
        return (root.get_submodule(path) if path else root), attr
    except AttributeError:
        return None, attr


def tensor_slots(model: FxModel) -> dict[int, list[tuple[dict, str]]]:
    """``id(tensor) -> [(store, attr)]``: every place the module and its GraphModule hold each
    parameter or buffer. Tied weights (input and output embeddings) share one tensor in several
    places; slicing must replace it in all of them or the tie breaks."""
    slots: dict[int, list[tuple[dict, str]]] = {}
    seen: set[int] = set()
    for root in (model.module, model.gm):
        for m in root.modules():
            if id(m) in seen:
                continue
            seen.add(id(m))
            for store in (m._parameters, m._buffers):
                for attr, value in store.items():
                    if value is not None:
                        slots.setdefault(id(value), []).append((store, attr))
    return slots


def _slice_tensor(model: FxModel, name: str, axes: dict[int, np.ndarray], emission: TorchEmission,
                  slots: dict[int, list[tuple[dict, str]]]) -> None:
    old = model.params[name]
    emission.old_shapes[name] = tuple(old.shape)
    value = _already_sliced(model, name, old)
    if value is None:
        with torch.no_grad():
            value = old.detach()
            for axis, kept in axes.items():
                value = value.index_select(axis, torch.as_tensor(kept, dtype=torch.long, device=value.device))
            value = value.contiguous()
    new = nn.Parameter(value, requires_grad=old.requires_grad) if isinstance(old, nn.Parameter) else value
    places = slots.get(id(old), [])
    for store, attr in places:
        store[attr] = new
        emission.restore.append(lambda s=store, a=attr, o=old: s.__setitem__(a, o))
    if not places:  # a plain attribute (not registered as a parameter or buffer)
        for root in {id(model.module): model.module, id(model.gm): model.gm}.values():
            owner, attr = _owner(root, name)
            if owner is not None and getattr(owner, attr, None) is old:
                setattr(owner, attr, new)
                emission.restore.append(lambda o=owner, a=attr, v=old: setattr(o, a, v))
    slots[id(new)] = places
    model.params[name] = new


def _already_sliced(model: FxModel, name: str, old: torch.Tensor) -> torch.Tensor | None:
    """The IR's sliced copy of ``old`` as a tensor sharing its memory, when the IR holds it in
    ``old``'s own dtype on the CPU: the gather is done once, not again in torch."""
    value = model.graph.constants.get(name)
    if old.device.type != "cpu" or type(value) is not np.ndarray or not value.flags.c_contiguous \
            or not value.flags.writeable:
        return None  # (a memmap, a read-only or strided view: not a private slice)
    try:
        sliced = torch.from_numpy(value)
    except TypeError:  # a dtype torch does not share with numpy
        return None
    return sliced if sliced.dtype == old.dtype else None


def _set(module: nn.Module, attr: str, value, emission: TorchEmission) -> None:
    old = getattr(module, attr)
    if old != value:
        setattr(module, attr, value)
        emission.restore.append(lambda: setattr(module, attr, old))


def _weight_parameter(model: FxModel, producers: dict, name: str, depth: int = 6) -> str:
    """The parameter a conv weight is computed from, when it is computed (timm's weight-standardised
    convs reshape, normalise and reshape it back): the nearest ancestor parameter of the same shape."""
    if name in model.params:
        return name
    shape = model.graph.shape(name)
    frontier = [name]
    for _ in range(depth):
        found = next((t for t in frontier if t in model.params and tuple(model.params[t].shape) == tuple(shape or ())),
                     None)
        if found or not shape:
            return found or name
        frontier = [i for t in frontier if t in producers for i in producers[t].inputs if i]
    return name


def _update_attributes(model: FxModel, emission: TorchEmission) -> None:
    """Keep leaf modules' size attributes in step with their sliced parameters."""
    producers = model.graph.producers()
    groups = {_weight_parameter(model, producers, n.inputs[1]): n.attr("group", 1)
              for n in model.graph.nodes if n.op in ("Conv", "ConvTranspose")}
    roots = {id(model.module): model.module, id(model.gm): model.gm}.values()
    seen = set()
    for root in roots:
        for path, m in root.named_modules():
            if id(m) in seen:
                continue
            seen.add(id(m))
            prefix = f"{path}." if path else ""
            if isinstance(m, nn.modules.conv._ConvNd):
                g = groups.get(f"{prefix}weight", m.groups)
                w = m.weight.shape
                _set(m, "groups", int(g), emission)
                if m.transposed:
                    _set(m, "in_channels", int(w[0]), emission)
                    _set(m, "out_channels", int(w[1] * g), emission)
                else:
                    _set(m, "out_channels", int(w[0]), emission)
                    _set(m, "in_channels", int(w[1] * g), emission)
            elif isinstance(m, nn.Linear):
                _set(m, "out_features", int(m.weight.shape[0]), emission)
                _set(m, "in_features", int(m.weight.shape[1]), emission)
            elif isinstance(m, nn.modules.batchnorm._NormBase):
                ref = m.weight if m.weight is not None else m.running_mean
                if ref is not None:
                    _set(m, "num_features", int(ref.shape[0]), emission)
            elif isinstance(m, (nn.LayerNorm, nn.RMSNorm)) and m.weight is not None:
                _set(m, "normalized_shape", tuple(int(s) for s in m.weight.shape), emission)
            elif isinstance(m, nn.GroupNorm) and m.weight is not None:
                if m.num_groups > 1:  # whole groups were removed
                    _set(m, "num_groups", int(m.weight.shape[0]) // (m.num_channels // m.num_groups), emission)
                _set(m, "num_channels", int(m.weight.shape[0]), emission)
            elif isinstance(m, nn.Embedding):
                _set(m, "num_embeddings", int(m.weight.shape[0]), emission)
                _set(m, "embedding_dim", int(m.weight.shape[1]), emission)
            elif isinstance(m, nn.RNNBase) and any(f"{prefix}{w}" in emission.sliced for w in m._flat_weights_names):
                _set(m, "hidden_size", int(m.weight_hh_l0.shape[1]), emission)
                _set(m, "input_size", int(m.weight_ih_l0.shape[1]), emission)
                m._init_flat_weights()  # forward reads this list of the (now sliced) parameters
                emission.restore.insert(0, m._init_flat_weights)  # undone last: after the parameters


def _current(model: FxModel, binding) -> int:
    node = binding.ir_node
    if isinstance(binding.slot, int):
        return int(np.asarray(model.graph.constants[node.inputs[binding.slot]]).reshape(-1)[binding.index])
    if binding.index is None:
        return int(node.attrs[binding.slot])
    return int(node.attrs[binding.slot][binding.index])


class _Unknown(Exception):
    """A size expression the emitter cannot evaluate."""


def _axis_changed(model: FxModel, graph, changed_keys):
    """``changed(fx tensor node, axis) -> bool``: did the prune resize that axis (any axis when
    ``axis`` is None; negative axes count from the end)?"""
    changed_tensors = {name for name, _ in changed_keys}

    def changed(tensor, axis) -> bool:
        name = model.ir_name.get(getattr(tensor, "name", ""), "")
        if axis is None:
            return name in changed_tensors
        info = graph.tensors.get(name)
        if axis < 0 and info is not None and info.shape is not None:
            axis %= len(info.shape)
        return (name, axis) in changed_keys
    return changed


def _size_reader(model: FxModel, graph, changed):
    """``size(fx node) -> (reads a changed axis?, value it computes after the prune)``.

    A bound fx size that is computed at run time (``C // self.num_heads``, ``N * C``) is walked
    back through size arithmetic to its size queries (``x.shape[d]``, ``x.size(d)``,
    ``sym_size``, ``numel``), whose values after the prune are the IR's new shapes. The value
    is None when some step is not plain size arithmetic."""
    def shape_of(tensor: fx.Node) -> tuple:
        info = graph.tensors.get(model.ir_name.get(tensor.name, ""))
        if info is None or info.shape is None:
            raise _Unknown(tensor.name)
        return tuple(int(s) for s in info.shape)

    def evaluate(n, reads: list):
        if not isinstance(n, fx.Node):
            if isinstance(n, (list, tuple)):
                return type(n)(evaluate(a, reads) for a in n)
            return n
        query = _size_query(n)
        if query is not None:
            kind, tensor, axis = query
            reads.append(changed(tensor, axis))
            if kind == "opaque":
                raise _Unknown(n.name)
            shape = shape_of(tensor)
            if kind == "numel":
                return math.prod(shape)
            return torch.Size(shape) if axis is None else shape[axis]
        if n.op == "call_function" and n.target in SIZE_ARITHMETIC:
            args = [evaluate(a, reads) for a in n.args]
            kwargs = {k: evaluate(v, reads) for k, v in n.kwargs.items()}
            return n.target(*args, **kwargs)
        raise _Unknown(n.name)

    def read(size: fx.Node) -> tuple[bool, object]:
        reads: list = []
        try:
            value = evaluate(size, reads)
        except (_Unknown, TypeError, IndexError, ValueError, ZeroDivisionError):
            return _reads_changed_axis(size, changed), None
        return any(reads), value
    return read


def _rewrite_literals(model: FxModel, emission: TorchEmission, read_size) -> None:
    """Each bound size that the prune changed becomes its new literal. A size computed at run
    time is left to compute when, recomputed from the pruned shapes, it gives the new size
    (``N * C``: it stays valid at every length); otherwise it is replaced by the literal, also
    when its own value is unchanged but it reads a pruned axis (``C // self.num_heads`` with the
    hidden size pruned and the head size kept would compute something else)."""
    for b in model.bindings:
        new = _current(model, b)
        arg = _get_path(b.fx_node, b.path)
        if isinstance(arg, fx.Node):
            reads_changed, value = read_size(arg)
            if value == new if reads_changed else new == b.old:
                continue
            rescaled = _rescaled_factor(arg, b.old, new, read_size)
            if rescaled is not None:
                _set_path(b.fx_node, b.path, rescaled)
                emission.literals.append(f"{b.fx_node.name}: {b.old} -> {new} ({arg.name} with its literal factor "
                                         "rescaled)")
                continue
        elif new == b.old:
            continue
        _set_path(b.fx_node, b.path, new)
        emission.literals.append(f"{b.fx_node.name}: {b.old} -> {new}")


def _rescaled_factor(size: fx.Node, old: int, new: int, read_size) -> fx.Node | None:
    """For ``B * self.num_heads`` (a run-time size times a literal) whose new value is
    ``B * k'``: a new node ``B * k'``, so the size keeps following ``B`` at every batch where a
    literal ``new`` would hold only at the example's. None unless the run-time factor keeps its
    value. The product itself is left alone for its other users."""
    if size.op != "call_function" or size.target is not operator.mul or size.kwargs:
        return None
    literal = [i for i, a in enumerate(size.args) if type(a) is int]
    factor = [a for a in size.args if isinstance(a, fx.Node)]
    if len(literal) != 1 or len(factor) != 1:
        return None
    reads_changed, value = read_size(factor[0])
    if reads_changed or not isinstance(value, int) or value <= 0:
        return None
    if value * size.args[literal[0]] != old or new % value:
        return None
    args = list(size.args)
    args[literal[0]] = new // value
    with size.graph.inserting_after(size):
        return size.graph.call_function(operator.mul, tuple(args))


SIZE_ARITHMETIC = {operator.add, operator.sub, operator.mul, operator.floordiv, operator.truediv,
                   operator.mod, operator.neg, operator.getitem, int, math.floor, math.ceil, math.prod}


def _reads_changed_axis(size: fx.Node, changed) -> bool:
    """Whether the run-time size ``size`` reads the size of an axis the prune changed (a query
    whose axis cannot be told counts as reading every axis of its tensor)."""
    stack, seen = [size], set()
    while stack:
        n = stack.pop()
        if not isinstance(n, fx.Node) or n in seen:
            continue
        seen.add(n)
        query = _size_query(n)
        if query is not None:
            if changed(*query[1:]):
                return True
            continue
        if n.op == "call_function" and n.target in SIZE_ARITHMETIC:
            stack.extend(a for a in pytree.tree_leaves((n.args, n.kwargs)) if isinstance(a, fx.Node))
    return False


def _size_query(n: fx.Node):
    """``(kind, tensor node, axis or None)`` when ``n`` reads a tensor's size, else None;
    kind is ``size`` (one axis, or the whole shape when axis is None), ``numel``, or ``opaque``
    (an axis computed at run time: it may be any)."""
    def whole(m):
        return (m.op == "call_function" and m.target is getattr and m.args[1:] == ("shape",)) or \
            (m.op == "call_method" and m.target == "size" and len(m.args) == 1 and not m.kwargs)
    if n.op == "call_function" and n.target is operator.getitem and isinstance(n.args[0], fx.Node) \
            and whole(n.args[0]) and isinstance(n.args[1], int):
        return "size", n.args[0].args[0], n.args[1]
    if whole(n):
        return "size", n.args[0], None
    if n.op == "call_method" and n.target == "size":
        dim = n.args[1] if len(n.args) > 1 else n.kwargs.get("dim")
        return ("size" if isinstance(dim, int) else "opaque"), n.args[0], dim if isinstance(dim, int) else None
    if n.op == "call_method" and n.target in ("numel", "nelement"):
        return "numel", n.args[0], None
    if n.op == "call_function" and getattr(n.target, "__name__", "") in ("sym_size.int", "sym_size") \
            and len(n.args) > 1 and isinstance(n.args[1], int):
        return "size", n.args[0], n.args[1]
    return None


def _get_path(node: fx.Node, path: tuple):
    where, key, *rest = path
    if where == "args":
        value = node.args[key] if key < len(node.args) else None
    else:
        value = node.kwargs.get(key)
    for head in rest:
        if isinstance(value, slice):
            value = getattr(value, head)
        elif isinstance(value, (list, tuple)) and isinstance(head, int) and head < len(value):
            value = value[head]
        else:
            return None
    return value


def _set_path(node: fx.Node, path: tuple, value) -> None:
    where, key, *rest = path
    container = node.args if where == "args" else node.kwargs
    updated = _replace(container[key], rest, value)
    if where == "args":
        args = list(node.args)
        args[key] = updated
        node.args = tuple(args)
    else:
        node.kwargs = {**node.kwargs, key: updated}


def _replace(obj, path, value):
    if not path:
        return value
    head, *rest = path
    if isinstance(obj, slice):
        parts = {"start": obj.start, "stop": obj.stop, "step": obj.step}
        parts[head] = _replace(parts[head], rest, value)
        return slice(parts["start"], parts["stop"], parts["step"])
    items = list(obj)
    items[head] = _replace(items[head], rest, value)
    return type(obj)(items) if isinstance(obj, tuple) else items


SELF_DESCRIBING = (nn.modules.conv._ConvNd, nn.Linear, nn.modules.batchnorm._NormBase, nn.LayerNorm,
                   nn.GroupNorm, nn.Embedding, nn.RNNBase, nn.RMSNorm)


def stale_attributes(model: FxModel, emission: TorchEmission) -> list[str]:
    """Int attributes that still hold a size the prune changed.

    An attribute is reported when its value equals a literal the prune
    rewrote in the traced graph *and* a parameter under the same module was
    sliced: forward code that read it (ViT's
    ``hidden_dim``, a block's ``num_heads``, ``MultiheadAttention.embed_dim``)
    now disagrees with the returned GraphModule. Attributes the emitter
    updated itself hold new sizes and are never reported.
    """
    rewritten = {}
    for b in model.bindings:
        new = _current(model, b)
        if new != b.old:
            rewritten.setdefault(b.old, new)
    sliced_under = {".".join(name.split(".")[:depth]) for name in emission.sliced
                    if name in emission.old_shapes for depth in range(len(name.split(".")))}
    stale = []
    for path, m in model.module.named_modules():
        if isinstance(m, SELF_DESCRIBING):
            continue  # their size attributes were recomputed from their own parameters
        for attr, value in vars(m).items():
            if attr.startswith("_") or isinstance(value, bool) or not isinstance(value, int):
                continue
            if value in rewritten and path in sliced_under:
                stale.append(f"{path or type(m).__name__}.{attr} = {value} "
                             f"(the pruned graph uses {rewritten[value]})")
    return stale


def _module_path(node: fx.Node) -> str:
    """The module whose forward made ``node`` (innermost of its ``nn_module_stack``; root if none)."""
    stack = node.meta.get("nn_module_stack")
    return list(stack.values())[-1][0] if stack else ""


def literal_rewrites(model: FxModel) -> dict[str, dict[int, set[int]]]:
    """``{module path: {old size: {new sizes}}}`` of the literals the prune rewrote in each module's forward."""
    found: dict[str, dict[int, set[int]]] = {}
    for b in model.bindings:
        new = _current(model, b)
        if new != b.old:
            found.setdefault(_module_path(b.fx_node), {}).setdefault(b.old, set()).add(new)
    for node in model.graph.nodes:  # even splits (``split(self.split_size)``) the fixups resized
        before = model.split_sizes.get(node.name)
        if not before or node.inputs[1] not in model.graph.constants:
            continue
        after = [int(v) for v in np.asarray(model.graph.constants[node.inputs[1]]).reshape(-1)]
        if len(set(before)) == 1 and len(set(after)) == 1 and before != after:
            path = _module_path(model.origin[node.name])
            found.setdefault(path, {}).setdefault(before[0], set()).add(after[0])
    return found


def _own_parameter_sizes(model: FxModel, emission: TorchEmission, path: str) -> dict[int, set[int]]:
    """``{old size: {new sizes}}`` over the axes of the parameters ``path`` owns directly."""
    sizes: dict[int, set[int]] = {}
    prefix = f"{path}." if path else ""
    for name, before in emission.old_shapes.items():
        if not name.startswith(prefix) or "." in name[len(prefix):]:
            continue
        for old, new in zip(before, model.params[name].shape):
            sizes.setdefault(int(old), set()).add(int(new))
    return sizes


def repair_attributes(model: FxModel, emission: TorchEmission, runs=None) -> tuple[list[str], list]:
    """Set the int attributes a module's forward reads to the sizes the pruned graph uses.

    Forward code reads sizes from attributes (``self.num_heads``,
    ``self.embed_dim``, ``self.num_key_value_groups``); the traced graph saw
    them as literals, which the emitter rewrote. An attribute of a module
    whose own forward had literal ``old`` rewritten to exactly one ``new`` is
    set to ``new``. Where several were rewritten (GPT-2's ``Conv1D.nf``, the
    output width, next to the input width read from ``x.size(-1)``), the
    first option is tried and ``runs()`` (a forward pass raising where it
    fails) tells which module still breaks: its ambiguous attributes take
    their next option, the same choice for every module of the same class
    and sizes. This is a proposal: the oracle decides whether the original
    class then reproduces the pruned graph, and the caller undoes it if not.
    Returns ``(["path.attr: old -> new"], undo callables)``.
    """
    undo, choices = [], {}
    rewrites = literal_rewrites(model)
    ambiguous: dict[tuple, list] = {}  # (class, attr, old, options) -> [(module path, module)]
    for path, module in model.module.named_modules():
        if isinstance(module, SELF_DESCRIBING) or path not in rewrites:
            continue
        for attr, value in list(vars(module).items()):
            if attr.startswith("_") or isinstance(value, bool) or not isinstance(value, int) or value < 2:
                continue
            options = sorted(rewrites[path].get(value, ()))
            if not options:
                continue
            undo.append(lambda m=module, a=attr, v=value: setattr(m, a, v))
            choices[(path, attr)] = (module, value, options[0])
            if len(options) > 1:
                ambiguous.setdefault((type(module).__name__, attr, value, tuple(options)), []).append(path)
            setattr(module, attr, options[0])
    config_changes = []
    if runs is not None:  # sizes read from a shared config (Phi-3's query width), even with no attribute
        config_changes, config_undo = repair_config_fields(model.module, rewrites, runs)
        undo.extend(config_undo)
    if ambiguous and runs is not None:
        _resolve(model.module, choices, ambiguous, runs)
    changes = [f"{path or type(model.module).__name__}.{attr}: {old} -> {new}"
               for (path, attr), (_, old, new) in choices.items()]
    return changes + config_changes, undo


def _resolve(root: nn.Module, choices: dict, ambiguous: dict, runs, budget: int = 16) -> None:
    """Step ambiguous attributes through their options until ``runs()`` stops failing."""
    tried = {key: 0 for key in ambiguous}
    for _ in range(budget):
        failing = _failing_modules(root, runs)
        if failing is None:
            return
        key = next((k for k, paths in ambiguous.items() if tried[k] + 1 < len(k[3])
                    and any(p in failing for p in paths)), None)
        if key is None:
            return
        tried[key] += 1
        new = key[3][tried[key]]
        for path in ambiguous[key]:
            module, old, _ = choices[(path, key[1])]
            setattr(module, key[1], new)
            choices[(path, key[1])] = (module, old, new)


def _failing_modules(root: nn.Module, runs) -> set[str] | None:
    """The modules whose forward was running when ``runs()`` raised (None if it did not)."""
    stack, failed, hooks = [], set(), []
    for path, m in root.named_modules():
        hooks.append(m.register_forward_pre_hook(lambda _m, _a, p=path: stack.append(p)))
        hooks.append(m.register_forward_hook(lambda _m, _a, _o: stack.pop()))
    try:
        runs()
        return None
    except Exception:
        failed.update(stack)
        return failed
    finally:
        for h in hooks:
            h.remove()
