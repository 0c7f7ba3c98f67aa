"""Layout ops: concat, split, slice, transpose and the reshape family.

Concat/Split/Slice map element *j* of a part to ``offset + j`` of the whole.
Reshape-like ops (Reshape, Flatten, Squeeze, Unsqueeze) are matched axis
groups by running products of the static shapes: a group of one axis ↔ one
axis is 1:1; one axis ↔ several (``C → C·H·W`` features after flatten, or
``H·D → (H, D)`` heads) ties each element of the single axis to the element of
the *outermost* axis it falls in (``blocks``); the inner axes stay pinned, so
features are pruned in whole channels and attention in whole heads. A fused
projection split three ways with a small leading factor (``3·H·D → (3, H, D)``
for q/k/v, ``2·H·D`` for k/v) ties to the *middle* axis instead, the heads.
"""

from __future__ import annotations

import numpy as np

from ..dims import Unsupported
from ..shape_sources import couple_target, only_feeds_targets, pin_reads, rewrite_target, target_rewrites
from ...shape_folding import shape_range
from ...symbolic import dims_equal, divides, product
from . import emitter, rule


@rule("Transpose")
def transpose(ctx):
    x, y = ctx.node.input(0), ctx.node.outputs[0]
    rank = ctx.rank(x)
    perm = ctx.attr("perm") or list(reversed(range(rank)))
    ctx.same_axes(x, y, perm, range(rank))


@rule("Concat")
def concat(ctx):
    """Input *k*'s element *j* on the axis is the output's ``offset_k + j``.

    When a size on the concat axis is symbolic (anchors of detector heads,
    tokens of a cached sequence) the offsets are unknown: the axis is pinned
    and the other axes still couple 1:1.
    """
    y = ctx.node.outputs[0]
    rank = ctx.rank(y)
    axis = ctx.attr("axis", 1 if ctx.opset < 4 else None)  # Concat-1 defaulted to 1
    if axis is None:
        raise Unsupported("Concat has no axis attribute")
    axis %= rank
    others = [a for a in range(rank) if a != axis]
    sizes = [ctx.shape(x)[axis] for x in ctx.node.inputs]
    static = all(isinstance(size, int) for size in sizes)
    start = 0
    for x, size in zip(ctx.node.inputs, sizes):
        ctx.same_axes(x, y, others, others)
        if not static:
            ctx.pin(ctx.dim(x, axis), f"Concat node '{ctx.node.name}': '{x}' has no static size on the concat axis")
            continue
        if size:
            ctx.offset(ctx.dim(x, axis), ctx.dim(y, axis), start)
        start += size
    if not static:
        ctx.pin(ctx.dim(y, axis), f"Concat node '{ctx.node.name}': the concat axis has symbolic sizes")


def _split_sizes(ctx, axis_size: int) -> list[int] | None:
    """Sizes of the parts, or None when they are computed at run time."""
    outputs = ctx.node.outputs
    if ctx.opset >= 13:
        name = ctx.node.input(1)
        if name and ctx.const(name) is None:
            return None
        split = ctx.const_ints(1, "split sizes")
    else:
        split = ctx.attr("split")
    if split:
        return split
    if not isinstance(axis_size, int):
        return None
    n = len(outputs)
    chunk = -(-axis_size // n)  # ceil, the opset-18 rule; equal when divisible
    return [min(chunk, axis_size - i * chunk) for i in range(n)]


@rule("Split")
def split(ctx):
    x = ctx.node.input(0)
    rank = ctx.rank(x)
    axis = ctx.attr("axis", 0) % rank
    size = ctx.shape(x)[axis]
    others = [a for a in range(rank) if a != axis]
    parts = _split_sizes(ctx, size) if isinstance(size, int) else None
    x_dim = ctx.dim(x, axis)
    if parts is None:  # offsets unknown: the split axis stays, the other axes couple
        reason = f"Split node '{ctx.node.name}': the split axis or its sizes are not static"
        ctx.pin(x_dim, reason)
    start = 0
    for i, y in enumerate(ctx.node.outputs):
        if not y:
            continue
        ctx.same_axes(x, y, others, others)
        if parts is None:
            ctx.pin(ctx.dim(y, axis), reason)
            continue
        if parts[i]:  # an empty part holds no channel (left pinned, like Concat's)
            ctx.offset(ctx.dim(y, axis), x_dim, start)
        start += parts[i]


@emitter("Split")
def split_sizes(ctx):
    x = ctx.node.input(0)
    if ctx.graph.shape(x) is None:
        return  # the rule pinned this node
    axis = ctx.node.attr("axis", 0) % len(ctx.graph.shape(x))
    if not ctx.changed(x, axis):
        return
    sizes = np.array([ctx.new_size(y, axis) for y in ctx.node.outputs], dtype=np.int64)
    if ctx.graph.opset >= 13:
        ctx.node.attrs.pop("num_outputs", None)
        ctx.node.raw_attrs.pop("num_outputs", None)
        if ctx.node.input(1):
            ctx.replace_constant_input(1, sizes)
        else:
            ctx.add_constant_input(1, sizes)
    else:
        ctx.node.set_attr("split", [int(s) for s in sizes])


def _slice_params(ctx, rank):
    if ctx.opset < 10:
        starts, ends = ctx.attr("starts"), ctx.attr("ends")
        axes, steps = ctx.attr("axes"), None
    else:
        starts, ends = ctx.const_ints(1, "slice starts"), ctx.const_ints(2, "slice ends")
        axes, steps = ctx.const_ints(3, "slice axes"), ctx.const_ints(4, "slice steps")
    axes = [a % rank for a in axes] if axes else list(range(len(starts)))
    steps = steps or [1] * len(axes)
    return starts, ends, axes, steps


def _clamp(v: int, size: int) -> int:
    return min(max(v + size if v < 0 else v, 0), size)


def _runtime_slice_axes(ctx, rank: int) -> list[int]:
    """The axes a Slice with run-time starts/ends touches (constant ``axes``, or the
    leading ones when ``starts`` has a static length)."""
    axes = ctx.const_ints(3, "slice axes")
    if axes:
        return [a % rank for a in axes]
    starts = ctx.graph.shape(ctx.node.input(1))
    if starts is None or len(starts) != 1 or not isinstance(starts[0], int):
        raise Unsupported("slice starts are computed at run time and their length is unknown")
    return list(range(starts[0]))


@rule("Slice")
def slice_(ctx):
    x, y = ctx.node.input(0), ctx.node.outputs[0]
    shape = ctx.shape(x)
    runtime = ctx.opset >= 10 and any(ctx.node.input(i) and ctx.const(ctx.node.input(i)) is None
                                      for i in (1, 2, 4))
    if runtime:  # bounds known only at run time: the sliced axes stay, the others couple 1:1
        sliced = set(_runtime_slice_axes(ctx, len(shape)))
        pin_reads(ctx.table, ctx.node, (1, 2, 4))  # the sizes the bounds are computed from
        for a in range(len(shape)):
            if a not in sliced:
                ctx.same(ctx.dim(x, a), ctx.dim(y, a))
        return
    starts, ends, axes, steps = _slice_params(ctx, len(shape))
    sliced = dict(zip(axes, zip(starts, ends, steps)))
    for a in range(len(shape)):
        if a not in sliced:
            ctx.same(ctx.dim(x, a), ctx.dim(y, a))
            continue
        start, end, step = sliced[a]
        if step != 1 or not isinstance(shape[a], int):
            continue  # strided slices stay pinned
        if ctx.rank(y) == len(shape) and ctx.shape(y)[a] == 0:
            ctx.dim(x, a)  # an empty slice holds no channel; the input stays free
            continue
        ctx.offset(ctx.dim(y, a), ctx.dim(x, a), _clamp(start, shape[a]))


@emitter("Slice")
def slice_bounds(ctx):
    x = ctx.node.input(0)
    shape = ctx.graph.shape(x)
    bounds = [ctx.node.input(i) for i in (1, 2, 3) if ctx.graph.opset >= 10 and ctx.node.input(i)]
    if shape is None or any(b not in ctx.graph.constants for b in bounds):
        return  # the rule pinned this node
    rank = len(shape)
    if ctx.graph.opset < 10:
        starts, ends, axes = list(ctx.node.attr("starts")), list(ctx.node.attr("ends")), ctx.node.attr("axes")
    else:
        starts = [int(v) for v in ctx.graph.constants[ctx.node.input(1)].reshape(-1)]
        ends = [int(v) for v in ctx.graph.constants[ctx.node.input(2)].reshape(-1)]
        axes = ctx.node.input(3) and [int(v) for v in ctx.graph.constants[ctx.node.input(3)].reshape(-1)]
    axes = [a % rank for a in axes] if axes else list(range(len(starts)))
    touched = False
    for i, a in enumerate(axes):
        if not ctx.changed(x, a):
            continue
        kept = ctx.kept(x, a)
        begin = int(np.searchsorted(kept, _clamp(starts[i], shape[a])))
        end = begin + ctx.new_size(ctx.node.outputs[0], a)
        open_end = ends[i] > shape[a] and end == len(kept)  # "to the end" (INT64_MAX) stays open, so a
        starts[i], ends[i] = begin, ends[i] if open_end else end  # batch merged into the axis still varies
        touched = True
    if not touched:
        return
    if ctx.graph.opset < 10:
        ctx.node.set_attr("starts", starts)
        ctx.node.set_attr("ends", ends)
    else:
        dtype = ctx.graph.constants[ctx.node.input(1)].dtype  # Tind: int32 or int64, shared
        ctx.replace_constant_input(1, np.array(starts, dtype=dtype))
        ctx.replace_constant_input(2, np.array(ends, dtype=dtype))


def axis_groups(src: tuple, dst: tuple) -> list[tuple[list[int], list[int]]] | None:
    """Match the axes of two shapes with equal element counts into groups of equal product.

    Size-1 axes form groups on their own. Symbolic sizes take part through
    their expressions (``(B, S, 256)`` ↔ ``(B*S, 256)``: ``B`` grows into
    ``B*S``). Returns None when the shapes cannot be matched (unknown sizes,
    products the graph does not prove equal).
    """
    groups, i, j = [], 0, 0
    while i < len(src) or j < len(dst):
        a = src[i] if i < len(src) else None
        b = dst[j] if j < len(dst) else None
        if a == 1 or b == 1:
            groups.append(([i] if a == 1 else [], [j] if b == 1 else []))
            i, j = i + (a == 1), j + (b == 1)
            continue
        if a is None or b is None:
            return None
        ga, gb, pa, pb = [i], [j], a, b
        i, j = i + 1, j + 1
        while not dims_equal(pa, pb):
            both_static = isinstance(pa, int) and isinstance(pb, int)
            if (pa < pb if both_static else divides(pa, pb)) and i < len(src):  # source side smaller
                pa = product([pa, src[i]])
                ga.append(i)
                i += 1
            elif (pb < pa if both_static else divides(pb, pa)) and j < len(dst):
                pb = product([pb, dst[j]])
                gb.append(j)
                j += 1
            else:
                return None
            if pa is None or pb is None:
                return None
        groups.append((ga, gb))
    return groups


FUSED_FACTOR_MAX = 4  # q/k/v (3) or k/v (2) stacked in front of the heads


def _carrier(sizes: list) -> int:
    """Which of the split axes carries the channels: the heads of a fused projection, else the outermost."""
    return 1 if len(sizes) == 3 and sizes[0] <= FUSED_FACTOR_MAX else 0


def _tie(ctx, flat: str, flat_axis: int, split: str, axes: list[int], sizes: list) -> None:
    """Tie the one ``flat`` axis to the axis of ``split`` that carries its channels.

    Leading symbolic sizes (the batch merged into the heads, ``(B, H) → B·H``
    as exporters flatten attention) make ``flat`` *periodic*: its channels
    repeat every ``H·block`` elements, so one period is what gets coupled.
    A symbolic size after a static one leaves the axes unmapped (pinned).
    """
    n_sym = next((i for i, d in enumerate(sizes) if isinstance(d, int)), len(sizes))
    static = sizes[n_sym:]
    if not static or not all(isinstance(d, int) for d in static):
        return
    k = n_sym + _carrier(static)
    block = int(np.prod(sizes[k + 1:]))
    outer = int(np.prod(sizes[n_sym:k]))
    ctx.blocks(ctx.dim(flat, flat_axis), ctx.dim(split, axes[k]), block, outer, periodic=n_sym > 0)


def _unify_unknowns(sx: tuple, sy: tuple) -> tuple:
    """One symbolic size on each side and equal static products: the two are equal
    (a reshape keeps the element count), so ``sy``'s takes ``sx``'s name."""
    free_x = [i for i, d in enumerate(sx) if not isinstance(d, int)]
    free_y = [i for i, d in enumerate(sy) if not isinstance(d, int)]
    if len(free_x) != 1 or len(free_y) != 1 or sx[free_x[0]] is None or sy[free_y[0]] is None:
        return sy
    static_x = int(np.prod([d for d in sx if isinstance(d, int)]))
    static_y = int(np.prod([d for d in sy if isinstance(d, int)]))
    if static_x != static_y:
        return sy
    return tuple(sx[free_x[0]] if i == free_y[0] else d for i, d in enumerate(sy))


def couple_reshape(ctx, x: str, y: str) -> None:
    sx, sy = ctx.shape(x), ctx.shape(y)
    sy = _unify_unknowns(sx, sy)
    groups = axis_groups(sx, sy)
    if groups is None:
        raise Unsupported(f"cannot match the axes of {sx} and {sy}")
    for ga, gb in groups:
        ga = [a for a in ga if sx[a] != 1]
        gb = [b for b in gb if sy[b] != 1]
        if len(ga) == 1 and len(gb) == 1:
            ctx.same(ctx.dim(x, ga[0]), ctx.dim(y, gb[0]))
            _single_kv(ctx, x, ga[0], y)
        elif len(ga) == 1 and gb:
            _tie(ctx, x, ga[0], y, gb, [sy[b] for b in gb])
        elif len(gb) == 1 and ga:
            if not _factor(ctx, x, ga, y, gb[0]):
                _tie(ctx, y, gb[0], x, ga, [sx[a] for a in ga])


def _factor(ctx, x: str, axes: list[int], y: str, flat_axis: int) -> bool:
    """``[O, I] → O·I`` where ``I`` is an Expand's broadcast axis (the query heads of each
    key/value head, ``repeat_kv``): recorded as a factorisation (:meth:`RuleContext.factor`)."""
    table = ctx.table
    if table.gqa_heads == "kv" or len(axes) != 2:
        return False
    sizes = [ctx.shape(x)[a] for a in axes]
    if not all(isinstance(s, int) for s in sizes) or not _broadcast_copy(table, x, axes[1]):
        return False
    ctx.factor(ctx.dim(y, flat_axis), ctx.dim(x, axes[0]), ctx.dim(x, axes[1]))
    return True


COPIES = ("Identity", "Cast")  # ops between the Expand and the merge that keep every element (clone, contiguous)


def _broadcast_chain(table, x: str, axis: int, depth: int = 4) -> list[int] | None:
    """The dims from axis ``axis`` of ``x`` back to an Expand's broadcast axis through copies
    (each marked as broadcast), or None when it is not one."""
    did = table.ids.get((x, axis))
    if did in table.broadcast:
        return [did]
    producer = table.producers.get(x)
    if did is None or depth == 0 or producer is None or producer.op not in COPIES or \
            table.graph.shape(producer.input(0)) != table.graph.shape(x):
        return None
    chain = _broadcast_chain(table, producer.input(0), axis, depth - 1)
    if chain is None:
        return None
    table.broadcast.add(did)
    return [did, *chain]


def _broadcast_copy(table, x: str, axis: int) -> bool:
    return _broadcast_chain(table, x, axis) is not None


def _single_kv(ctx, x: str, axis: int, y: str) -> None:
    """``[1, R] → R`` with ``R`` an Expand's broadcast axis: one key/value head repeated for
    ``R`` query heads (multi-query attention). The query heads and the copies are one group;
    its broadcast axes are marked so :func:`..factors.factor_groups` leaves it prunable."""
    table = ctx.table
    sx = ctx.shape(x)
    if table.gqa_heads == "kv" or axis == 0 or sx[axis - 1] != 1 or ctx.rank(y) != len(sx) - 1:
        return
    chain = _broadcast_chain(table, x, axis)
    if chain is not None:
        table.single_kv.update(chain)


RESHAPE_INERT = (0, -1)  # "copy the input's size" and "whatever is left" follow a prune by themselves


@rule("Reshape")
def reshape(ctx):
    couple_target(ctx, 1, ctx.node.outputs[0], RESHAPE_INERT)
    couple_reshape(ctx, ctx.node.input(0), ctx.node.outputs[0])


@rule("Shape")
def shape(ctx):
    """``Shape`` reads sizes, not values. An axis it reads keeps its size unless the
    vector only feeds Reshape/Expand targets, whose rules account for each entry."""
    x = ctx.node.input(0)
    rank = ctx.rank(x)
    lo, hi = shape_range(ctx.node, rank)
    followed = only_feeds_targets(ctx.table, ctx.node.outputs[0])
    for axis in range(rank):
        did = ctx.dim(x, axis)
        if lo <= axis < hi and not followed:
            ctx.pin(did, f"its size is read at run time by Shape node '{ctx.node.name}'")


@rule("Flatten", "Squeeze", "Unsqueeze")
def reshape_like(ctx):
    couple_reshape(ctx, ctx.node.input(0), ctx.node.outputs[0])


@emitter("Reshape")
def reshape_target(ctx):
    """Entries of the target on pruned output axes take the new size (constant or run-time target)."""
    rewrite_target(ctx, 1, target_rewrites(ctx, 1, ctx.node.outputs[0], RESHAPE_INERT))


@rule("Tile")
def tile(ctx):
    """``Tile(x, repeats)``: output axis ``a`` is ``repeats[a]`` copies of ``x``'s axis back to
    back, element ``o·n + j`` being ``x``'s ``j`` (``blocks`` with ``outer = repeats[a]``). The
    repeats are multipliers, so a pruned axis needs no rewrite. An axis tiled from size 1 is a
    new axis (pinned); repeats computed at run time or a symbolic tiled axis pin."""
    x, y = ctx.node.input(0), ctx.node.outputs[0]
    repeats = ctx.const_ints(1, "Tile repeats")
    sx = ctx.shape(x)
    if repeats is None or len(repeats) != len(sx):
        raise Unsupported(f"Tile repeats {repeats} do not match the rank of '{x}'")
    for axis, (size, times) in enumerate(zip(sx, repeats)):
        if times == 1:
            ctx.same(ctx.dim(x, axis), ctx.dim(y, axis))
        elif isinstance(size, int) and size > 1 and times > 1:
            ctx.blocks(ctx.dim(y, axis), ctx.dim(x, axis), 1, times)


@rule("Gather")
def gather(ctx):
    """``out = data.shape[:axis] + indices.shape + data.shape[axis+1:]``.

    Every data axis but ``axis`` carries through (an embedding table's width,
    the head axis of a fused qkv tensor), and so does every index axis; the
    gathered axis itself is pinned, since the index values refer to it.
    """
    data, indices, y = ctx.node.input(0), ctx.node.input(1), ctx.node.outputs[0]
    rank = ctx.rank(data)
    axis = ctx.attr("axis", 0) % rank
    index_rank = ctx.rank(indices)
    before, after = list(range(axis)), list(range(axis + 1, rank))
    ctx.same_axes(data, y, before, before)
    ctx.same_axes(data, y, after, [a - 1 + index_rank for a in after])
    ctx.same_axes(indices, y, range(index_rank), [axis + i for i in range(index_rank)])


@rule("Einsum")
def einsum(ctx):
    """Explicit-output einsum: a letter in the output carries through; a letter only in
    inputs is summed over (coupled across operands, contracted on the first that has it)."""
    equation = ctx.attr("equation", "")
    if isinstance(equation, bytes):
        equation = equation.decode()
    equation = equation.replace(" ", "")
    if "->" not in equation or "." in equation:
        raise Unsupported("only explicit einsum equations without ellipsis are mapped")
    lhs, out = equation.split("->")
    terms = lhs.split(",")
    y = ctx.node.outputs[0]
    if len(terms) != len(ctx.node.inputs) or any(len(set(t)) != len(t) for t in (*terms, out)):
        raise Unsupported(f"einsum '{equation}' repeats a letter within an operand")
    contracted = set()
    for i, (x, term) in enumerate(zip(ctx.node.inputs, terms)):
        if len(term) != ctx.rank(x):
            raise Unsupported(f"einsum term '{term}' does not match the rank of '{x}'")
        for a, letter in enumerate(term):
            if letter in out:
                ctx.same(ctx.dim(x, a), ctx.dim(y, out.index(letter)))
            else:
                first = next(j for j, t in enumerate(terms) if letter in t)
                ctx.same(ctx.dim(x, a), ctx.dim(ctx.node.inputs[first], terms[first].index(letter)))
                if letter not in contracted:
                    contracted.add(letter)
                    ctx.contracts(first, terms[first].index(letter))
