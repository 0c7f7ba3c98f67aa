"""Where the entries of a run-time shape vector come from.

Exporters with dynamic axes build shape targets at run time:
``Concat(Unsqueeze(Gather(Shape(x), 0)), Slice(Shape(x), 1, 2), [-1], [D])``
(Hugging Face's ``view(*input_shape, -1, head_dim)``), often with arithmetic
on the sizes (``B * S``, ``C // H``). :func:`shape_entries` follows such a
vector back through ``Shape``/``Gather``/``Slice``/``Concat``/``Unsqueeze``/
``Squeeze``/``Cast``/``Reshape`` and elementwise ``Add``/``Sub``/``Mul``/
``Div`` and describes every position:

* a constant (``value``), and where it is stored when it is a constant input
  of the ``Concat`` that builds the vector (``piece``), so the emitter can
  write a new size there;
* the sizes of tensor axes it is computed from (``reads``), which stay right
  only while those axes keep their size, so the rule pins them.

Anything else (a size read from data, an op not listed) makes the vector
unresolvable: the consumer is then pinned with a reason, never guessed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..ir import Graph, Node
from ..shape_folding import shape_range

PASS_THROUGH = ("Unsqueeze", "Squeeze", "Cast", "Identity", "Reshape", "Flatten")
def _truncating_div(a: int, b: int) -> int:
    """ONNX integer Div truncates toward zero (numpy's // floors)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


ARITHMETIC = {"Add": lambda a, b: a + b, "Sub": lambda a, b: a - b, "Mul": lambda a, b: a * b,
              "Div": _truncating_div}
VECTOR_OPS = (*PASS_THROUGH, "Concat", "Gather", "Slice", "Equal", "Where", *ARITHMETIC)  # followed
MAX_DEPTH = 32


@dataclass(frozen=True)
class Entry:
    value: int | None = None  # known at analysis time
    piece: tuple[str, int, int] | None = None  # (Concat node, input index, offset) holding the constant
    reads: frozenset = frozenset()  # (tensor, axis) sizes it is computed from
    direct: bool = False  # it is exactly the run-time size of the one axis in ``reads``

    @property
    def size_of(self) -> tuple[str, int] | None:
        """The one axis whose size this entry is, when it is exactly that."""
        return next(iter(self.reads)) if self.direct and len(self.reads) == 1 else None


def _scalar_const(graph: Graph, name: str):
    value = graph.constants.get(name)
    return None if value is None else np.asarray(value)


def shape_entries(graph: Graph, producers: dict[str, Node], name: str, depth: int = 0) -> list[Entry] | None:
    """The entries of the 1-D (or scalar) integer tensor ``name``, or None if unresolvable."""
    if depth > MAX_DEPTH:
        return None
    value = graph.constants.get(name)
    if value is not None:
        if value.dtype.kind not in "iu" or value.ndim > 1:
            return None
        reads = frozenset(graph.folded.get(name, ()))  # sizes folded at load: fixed, not read at run time
        return [Entry(value=int(v), reads=reads) for v in value.reshape(-1)]
    node = producers.get(name)
    if node is None or node.domain not in ("", "ai.onnx"):
        return None
    recurse = lambda t: shape_entries(graph, producers, t, depth + 1)  # noqa: E731
    if node.op == "Shape":
        shape = graph.shape(node.input(0))
        if shape is None:
            return None
        lo, hi = shape_range(node, len(shape))
        return [Entry(value=shape[a] if isinstance(shape[a], int) else None,
                      reads=frozenset({(node.input(0), a)}), direct=True) for a in range(lo, hi)]
    if node.op in PASS_THROUGH:
        return recurse(node.input(0))
    if node.op == "Concat":
        out: list[Entry] = []
        for i, part in enumerate(node.inputs):
            entries = recurse(part)
            if entries is None:
                return None
            if part in graph.constants:
                entries = [Entry(e.value, (node.name, i, j), e.reads, e.direct) for j, e in enumerate(entries)]
            out.extend(entries)
        return out
    if node.op == "Gather":
        data, index = recurse(node.input(0)), _scalar_const(graph, node.input(1))
        if data is None or index is None or node.attr("axis", 0) != 0:
            return None
        try:
            return [data[int(i)] for i in index.reshape(-1)]
        except IndexError:
            return None
    if node.op == "Slice":
        return _slice(graph, node, recurse(node.input(0)))
    if node.op in ARITHMETIC:
        a, b = recurse(node.input(0)), recurse(node.input(1))
        if a is None or b is None or (len(a) != len(b) and 1 not in (len(a), len(b))):
            return None
        n = max(len(a), len(b))
        a, b = (a * n if len(a) == 1 else a), (b * n if len(b) == 1 else b)
        op = ARITHMETIC[node.op]
        return [Entry(value=int(op(x.value, y.value)) if x.value is not None and y.value is not None
                      and not (node.op == "Div" and y.value == 0) else None,
                      reads=x.reads | y.reads) for x, y in zip(a, b)]
    if node.op == "Equal":  # exporters test targets against -1: a run-time size never is negative
        a, b = recurse(node.input(0)), recurse(node.input(1))
        if a is None or b is None or (len(a) != len(b) and 1 not in (len(a), len(b))):
            return None
        n = max(len(a), len(b))
        a, b = (a * n if len(a) == 1 else a), (b * n if len(b) == 1 else b)
        return [Entry(value=_equal(x, y), reads=x.reads | y.reads) for x, y in zip(a, b)]
    if node.op == "Where":
        cond, a, b = (recurse(t) for t in node.inputs[:3])
        if cond is None or a is None or b is None or any(c.value is None for c in cond):
            return None
        n = max(len(cond), len(a), len(b))
        cond, a, b = ((v * n if len(v) == 1 else v) for v in (cond, a, b))
        if not len(cond) == len(a) == len(b) == n:
            return None
        return [x if c.value else y for c, x, y in zip(cond, a, b)]
    return None


def _equal(x: Entry, y: Entry) -> int | None:
    if x.value is not None and y.value is not None:
        return int(x.value == y.value)
    known = x.value if x.value is not None else y.value
    return 0 if known is not None and known < 0 else None  # sizes are >= 0


def _slice(graph: Graph, node: Node, data: list[Entry] | None) -> list[Entry] | None:
    if data is None or graph.opset < 10:
        return None
    bounds = [_scalar_const(graph, node.input(i)) if node.input(i) else None for i in (1, 2, 3, 4)]
    if bounds[0] is None or bounds[1] is None or any(
            b is None for b, i in zip(bounds[2:], (3, 4)) if node.input(i)):
        return None
    if bounds[2] is not None and [int(a) for a in bounds[2].reshape(-1)] not in ([0], [-1]):
        return None
    step = int(bounds[3].reshape(-1)[0]) if bounds[3] is not None else 1
    if step == 0:
        return None
    start, end = int(bounds[0].reshape(-1)[0]), int(bounds[1].reshape(-1)[0])
    return data[slice(*slice(start, end, step).indices(len(data)))]


def resolve_target(graph: Graph, producers: dict[str, Node], name: str) -> tuple[Node | None, list[Entry]] | None:
    """The ``Concat`` that builds the run-time vector ``name`` (None if another op does)
    and its entries, or None when the vector cannot be followed."""
    entries = shape_entries(graph, producers, name)
    if entries is None:
        return None
    node = producers.get(name)
    return (node if node is not None and node.op == "Concat" else None), entries


def rewrite_target(ctx, input_index: int, new_values: dict[int, int]) -> None:
    """Write ``new_values`` (position → size) into the shape vector read as input ``input_index``.

    A constant vector is replaced by an edited copy. A run-time vector built
    by a ``Concat`` gets a private copy of that ``Concat`` with edited
    constant pieces (exporters share one shape vector between several
    reshapes that may change differently), inserted right before the node.
    A piece in a ``Concat`` further up (behind ``Reshape``/``Where`` as the
    legacy exporter writes ``expand``) is edited in place: the rule checked
    that that ``Concat`` feeds nothing else.
    """
    if not new_values:
        return
    name = ctx.node.input(input_index)
    graph = ctx.graph
    if name in graph.constants:
        target = graph.constants[name].copy()
        flat = target.reshape(-1)
        for pos, size in new_values.items():
            flat[pos] = size
        ctx.replace_constant_input(input_index, target)
        return
    resolved = resolve_target(graph, ctx.producers, name)
    if resolved is None:
        return
    direct, entries = resolved
    edits: dict[str, dict[int, np.ndarray]] = {}
    by_name = {n.name: n for n in graph.nodes}
    for pos, size in new_values.items():
        concat_name, index, offset = entries[pos].piece
        concat = by_name[concat_name]
        pieces = edits.setdefault(concat_name, {})
        if index not in pieces:
            pieces[index] = graph.constants[concat.inputs[index]].copy()
        pieces[index].reshape(-1)[offset] = size
    for concat_name, pieces in edits.items():
        concat = by_name[concat_name]
        if direct is not None and concat is direct:
            concat = _private_copy(ctx, concat, input_index)
        for index, value in pieces.items():
            concat.inputs[index] = graph.add_constant(f"{concat.inputs[index]}_pruned", value)


def _private_copy(ctx, concat: Node, input_index: int) -> Node:
    graph = ctx.graph
    node_names = {n.name for n in graph.nodes}
    clone_name = next(f"{concat.name}_pruned{i or ''}" for i in range(len(node_names) + 1)
                      if f"{concat.name}_pruned{i or ''}" not in node_names)
    clone = Node(clone_name, "Concat", list(concat.inputs),
                 [graph.unique_name(f"{concat.outputs[0]}_pruned")], dict(concat.attrs),
                 concat.domain, dict(concat.raw_attrs))
    graph.nodes.insert(graph.nodes.index(ctx.node), clone)
    ctx.node.inputs[input_index] = clone.outputs[0]
    return clone


def _feeds_only(table, name: str, target: Node, depth: int = 0) -> bool:
    """Every use of ``name`` leads, through shape-vector ops, to ``target``'s shape input."""
    if depth > MAX_DEPTH or name in table.graph.outputs:
        return False
    for user in table.consumers.get(name, []):
        if user is target:
            if user.input(0) == name:
                return False
            continue
        if user.op not in VECTOR_OPS or not all(_feeds_only(table, o, target, depth + 1) for o in user.outputs if o):
            return False
    return True


def _rewritable(ctx, entry: Entry, direct: Node | None) -> bool:
    if entry.value is None or entry.piece is None:
        return False
    if direct is not None and entry.piece[0] == direct.name:
        return True
    concat = next((n for n in ctx.graph.nodes if n.name == entry.piece[0]), None)
    return concat is not None and _feeds_only(ctx.table, concat.outputs[0], ctx.node)


def couple_target(ctx, input_index: int, y: str, inert: tuple[int, ...]) -> None:
    """Rule side of a shape-vector input (Reshape/Expand target): pin what cannot be rewritten.

    Position *p* sets axis ``p + lead`` of the output ``y``. It can follow a
    prune when it is a constant the emitter can edit, or a value in ``inert``
    that needs no edit (Reshape's ``0``/``-1``, Expand's ``1``). A position
    computed from run-time sizes pins those sizes and its output axis.
    Raises :class:`Unsupported` when the vector cannot be followed at all.
    """
    from .dims import Unsupported

    name = ctx.node.input(input_index)
    if name in ctx.graph.constants:
        return
    resolved = resolve_target(ctx.graph, ctx.table.producers, name)
    if resolved is None:
        raise Unsupported(f"{ctx.node.op} target ('{name}') is computed at run time "
                          "in a way that cannot be followed")
    direct, entries = resolved
    rank = ctx.rank(y)
    lead = rank - len(entries)
    for pos, entry in enumerate(entries):
        if entry.value is not None and (entry.value in inert or _rewritable(ctx, entry, direct)):
            continue
        if entry.size_of is not None and 0 <= pos + lead < rank and _same_size(ctx, entry.size_of, y, pos + lead):
            # the run-time size of an axis that is pruned together with this output axis
            ctx.same(ctx.dim(y, pos + lead), ctx.table.dim(*entry.size_of))
            continue
        reason = f"its size is read at run time by {ctx.node.op} node '{ctx.node.name}'"
        for tensor, axis in entry.reads:
            ctx.pin(ctx.table.dim(tensor, axis), reason)
        if 0 <= pos + lead < rank:
            ctx.pin(ctx.dim(y, pos + lead), f"{ctx.node.op} node '{ctx.node.name}': target entry {pos} "
                                           "is computed at run time and cannot be rewritten")


def target_rewrites(ctx, input_index: int, y: str, inert: tuple[int, ...]) -> dict[int, int]:
    """Emitter side: position → new size for every changed output axis whose entry needs it."""
    name = ctx.node.input(input_index)
    if name in ctx.graph.constants:
        values = [int(v) for v in ctx.graph.constants[name].reshape(-1)]
    else:
        resolved = resolve_target(ctx.graph, ctx.producers, name)
        if resolved is None:
            return {}
        values = [e.value if e.piece is not None else None for e in resolved[1]]
    shape = ctx.graph.shape(y)
    if shape is None:
        return {}
    lead = len(shape) - len(values)
    return {pos: ctx.new_size(y, pos + lead) for pos, value in enumerate(values)
            if value is not None and value not in inert and 0 <= pos + lead
            and isinstance(shape[pos + lead], int) and ctx.changed(y, pos + lead)}


def _same_size(ctx, source: tuple[str, int], y: str, axis: int) -> bool:
    from ..symbolic import dims_equal

    shape = ctx.graph.shape(source[0])
    return shape is not None and source[1] < len(shape) and dims_equal(shape[source[1]], ctx.shape(y)[axis])


# Inputs that read a shape vector, per op, whose rule accounts for every entry it reads
SHAPE_INPUTS = {"Reshape": (1,), "Expand": (1,), "Slice": (1, 2, 4), "Resize": (3,), "ConstantOfShape": (0,)}


def pin_reads(table, node: Node, indices=None, reason: str | None = None) -> None:
    """Every size that shape inputs ``indices`` of ``node`` read keeps its size."""
    reason = reason or f"its size is read at run time by {node.op} node '{node.name}'"
    for i in (SHAPE_INPUTS.get(node.op, ()) if indices is None else indices):
        name = node.input(i)
        entries = shape_entries(table.graph, table.producers, name) if name else None
        for entry in entries or ():
            for tensor, axis in entry.reads:
                table.pin(table.dim(tensor, axis), reason)


def only_feeds_targets(table, name: str, depth: int = 0) -> bool:
    """Does the shape vector ``name`` flow only into shape inputs whose rules account for it?

    Those are :data:`SHAPE_INPUTS` (the Reshape/Expand target, run-time Slice
    bounds, Resize sizes) that can be followed back; then the ``Shape`` that
    produced it need not pin the axes it reads.
    """
    if depth > MAX_DEPTH or name in table.graph.outputs:
        return False
    for user in table.consumers.get(name, []):
        if user.domain not in ("", "ai.onnx"):
            return False
        uses = [i for i, t in enumerate(user.inputs) if t == name]
        if user.op in SHAPE_INPUTS and all(i in SHAPE_INPUTS[user.op] for i in uses):
            if shape_entries(table.graph, table.producers, name) is None:
                return False
            continue
        data_only = user.op in ("Gather", "Slice") and any(i > 0 for i in uses)
        if data_only or user.op not in VECTOR_OPS:
            return False
        if not all(only_feeds_targets(table, out, depth + 1) for out in user.outputs if out):
            return False
    return True
