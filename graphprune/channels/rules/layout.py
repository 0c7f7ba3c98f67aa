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
from ..shape_sources import resolve_target
from . import emitter, rule


@rule("Transpose")
def transpose(ctx):
    x, y = ctx.node.input(0), ctx.node.outputs[0]
    rank = ctx.rank(x)
    perm = ctx.attr("perm") or list(reversed(range(rank)))
    ctx.same_axes(x, y, perm, range(rank))


@rule("Concat")
def concat(ctx):
    y = ctx.node.outputs[0]
    rank = ctx.rank(y)
    axis = ctx.attr("axis", 1 if ctx.opset < 4 else None)  # Concat-1 defaulted to 1
    if axis is None:
        raise Unsupported("Concat has no axis attribute")
    axis %= rank
    start = 0
    for x in ctx.node.inputs:
        size = ctx.shape(x)[axis]
        if not isinstance(size, int):
            raise Unsupported(f"'{x}' has no static size on the concat axis")
        others = [a for a in range(rank) if a != axis]
        ctx.same_axes(x, y, others, others)
        if size:
            ctx.offset(ctx.dim(x, axis), ctx.dim(y, axis), start)
        start += size


def _split_sizes(ctx, axis_size: int) -> list[int]:
    outputs = ctx.node.outputs
    split = ctx.const_ints(1, "split sizes") if ctx.opset >= 13 else ctx.attr("split")
    if split:
        return split
    n = len(outputs)
    chunk = -(-axis_size // n)  # ceil, the opset-18 rule; equal when divisible
    return [min(chunk, axis_size - i * chunk) for i in range(n)]


@rule("Split")
def split(ctx):
    x = ctx.node.input(0)
    rank = ctx.rank(x)
    axis = ctx.attr("axis", 0) % rank
    size = ctx.shape(x)[axis]
    if not isinstance(size, int):
        raise Unsupported("split axis has no static size")
    start = 0
    others = [a for a in range(rank) if a != axis]
    ctx.dim(x, axis)
    for y, part in zip(ctx.node.outputs, _split_sizes(ctx, size)):
        if y:
            ctx.same_axes(x, y, others, others)
            if part:  # an empty part holds no channel (left pinned, like Concat's)
                ctx.offset(ctx.dim(y, axis), ctx.dim(x, axis), start)
        start += part


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


@rule("Slice")
def slice_(ctx):
    x, y = ctx.node.input(0), ctx.node.outputs[0]
    shape = ctx.shape(x)
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
        starts[i], ends[i] = begin, begin + ctx.new_size(ctx.node.outputs[0], a)
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

    Size-1 axes form groups on their own. Returns None when the shapes cannot
    be matched (symbolic sizes that differ, unknown sizes).
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
        if not (isinstance(a, int) and isinstance(b, int)):
            if a != b:
                return None
            groups.append(([i], [j]))
            i, j = i + 1, j + 1
            continue
        ga, gb, pa, pb = [i], [j], a, b
        i, j = i + 1, j + 1
        while pa != pb:
            if pa < pb:
                if i >= len(src) or not isinstance(src[i], int):
                    return None
                pa *= src[i]
                ga.append(i)
                i += 1
            else:
                if j >= len(dst) or not isinstance(dst[j], int):
                    return None
                pb *= dst[j]
                gb.append(j)
                j += 1
        groups.append((ga, gb))
    return groups


FUSED_FACTOR_MAX = 4  # q/k/v (3) or k/v (2) stacked in front of the heads


def _carrier(sizes: list) -> int:
    """Which of the split axes carries the channels: the heads of a fused projection, else the outermost."""
    return 1 if len(sizes) == 3 and sizes[0] <= FUSED_FACTOR_MAX else 0


def _tie(ctx, flat: str, flat_axis: int, split: str, axes: list[int], sizes: list[int]) -> None:
    k = _carrier(sizes)
    block = int(np.prod(sizes[k + 1:]))
    outer = int(np.prod(sizes[:k]))
    ctx.blocks(ctx.dim(flat, flat_axis), ctx.dim(split, axes[k]), block, outer)


def couple_reshape(ctx, x: str, y: str) -> None:
    sx, sy = ctx.shape(x), ctx.shape(y)
    groups = axis_groups(sx, sy)
    if groups is None:
        raise Unsupported(f"cannot match the axes of {sx} and {sy}")
    for ga, gb in groups:
        ga = [a for a in ga if sx[a] != 1]
        gb = [b for b in gb if sy[b] != 1]
        if len(ga) == 1 and len(gb) == 1:
            ctx.same(ctx.dim(x, ga[0]), ctx.dim(y, gb[0]))
        elif len(ga) == 1 and gb:
            _tie(ctx, x, ga[0], y, gb, [sy[b] for b in gb])
        elif len(gb) == 1 and ga:
            _tie(ctx, y, gb[0], x, ga, [sx[a] for a in ga])


@rule("Reshape")
def reshape(ctx):
    target = ctx.node.input(1)
    if ctx.const(target) is None:
        # a run-time target is rewritable when its entries are constants or sizes of other axes
        resolved = resolve_target(ctx.graph, ctx.table.producers, target)
        if resolved is None:
            raise Unsupported(f"Reshape target ('{target}') is computed at run time")
        if len(ctx.table.consumers.get(target, [])) != 1 or target in ctx.graph.outputs:
            raise Unsupported(f"run-time Reshape target ('{target}') is shared with other nodes")
        for entry in resolved[1]:
            if entry.size_of is not None:
                ctx.pin(ctx.table.dim(*entry.size_of),
                        f"its size is read at run time by Reshape node '{ctx.node.name}'")
    couple_reshape(ctx, ctx.node.input(0), ctx.node.outputs[0])


@rule("Flatten", "Squeeze", "Unsqueeze")
def reshape_like(ctx):
    couple_reshape(ctx, ctx.node.input(0), ctx.node.outputs[0])


@emitter("Reshape")
def reshape_target(ctx):
    y = ctx.node.outputs[0]
    if ctx.node.input(1) not in ctx.graph.constants:
        _rewrite_runtime_target(ctx, y)
        return
    target = ctx.graph.constants[ctx.node.input(1)].copy()
    changed = False
    for a in range(len(target)):
        if target[a] > 0 and ctx.changed(y, a):
            target[a] = ctx.new_size(y, a)
            changed = True
    if changed:
        ctx.replace_constant_input(1, target)


def _rewrite_runtime_target(ctx, y: str) -> None:
    """Update the constant pieces of a run-time target's Concat for pruned output axes."""
    resolved = resolve_target(ctx.graph, ctx.producers, ctx.node.input(1))
    if resolved is None:
        return  # unresolvable: the rule pinned this node
    concat, entries = resolved
    pieces: dict[int, np.ndarray] = {}
    for axis, entry in enumerate(entries):
        if entry.piece is not None and entry.value > 0 and ctx.changed(y, axis):
            index, offset = entry.piece
            if index not in pieces:
                pieces[index] = ctx.graph.constants[concat.inputs[index]].copy()
            pieces[index].reshape(-1)[offset] = ctx.new_size(y, axis)
    for index, value in pieces.items():
        ctx.for_node(concat).replace_constant_input(index, value)


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
