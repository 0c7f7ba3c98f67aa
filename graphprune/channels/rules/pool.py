"""Pooling, reductions, softmax, resize and pad: channel-wise along the kept axes.

Spatial axes are not mentioned (so they stay pinned); only axes the op leaves
untouched are coupled. Reductions and softmax over an axis mix its elements,
so that axis is pinned rather than guessed.
"""

import numpy as np

from ..dims import Unsupported
from . import emitter, rule


@rule("MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool",
      "MaxRoiPool")
def pool(ctx):
    x, y = ctx.node.input(0), ctx.node.outputs[0]
    ctx.same_axes(x, y, (0, 1), (0, 1))


REDUCE = ("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1",
          "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare")


def reduced_axes(ctx, rank: int) -> set[int]:
    """Axes a Reduce* node reduces: attribute before opset 18 (13 for ReduceSum), input after."""
    takes_input = ctx.opset >= (13 if ctx.node.op == "ReduceSum" else 18)
    axes = ctx.const_ints(1, "reduction axes") if takes_input else ctx.attr("axes")
    if not axes:
        if takes_input and ctx.attr("noop_with_empty_axes", 0):
            return set()
        return set(range(rank))
    return {a % rank for a in axes}


@rule(*REDUCE)
def reduce(ctx):
    x, y = ctx.node.input(0), ctx.node.outputs[0]
    rank = ctx.rank(x)
    axes = reduced_axes(ctx, rank)
    kept = [a for a in range(rank) if a not in axes]
    out_axes = kept if ctx.attr("keepdims", 1) else range(len(kept))
    ctx.same_axes(x, y, kept, out_axes)


@rule("Softmax", "LogSoftmax", "Hardmax")
def softmax(ctx):
    x, y = ctx.node.input(0), ctx.node.outputs[0]
    rank = ctx.rank(x)
    if ctx.opset >= 13:
        axis = ctx.attr("axis", -1) % rank
        free = [a for a in range(rank) if a != axis]
    else:  # coerced to 2-D: every axis from `axis` on is mixed
        free = list(range(ctx.attr("axis", 1) % rank))
    ctx.same_axes(x, y, free, free)


def _resize_inputs(ctx):
    """(scales, sizes, axes) of a Resize/Upsample node as lists (or None)."""
    if ctx.node.op == "Upsample" or ctx.opset < 11:
        scales = None
        name = ctx.node.input(1)
        if name:
            value = ctx.const(name)
            if value is None:
                raise Unsupported(f"scales ('{name}') are computed at run time")
            scales = [float(v) for v in value.reshape(-1)]
        else:
            scales = list(ctx.attr("scales", []))
        return scales, None, None
    scales = None
    if ctx.node.input(2):
        value = ctx.const(ctx.node.input(2))
        if value is None:
            raise Unsupported("Resize scales are computed at run time")
        scales = [float(v) for v in value.reshape(-1)] or None
    sizes = ctx.const_ints(3, "Resize sizes")
    return scales, sizes, ctx.attr("axes")


@rule("Resize", "Upsample")
def resize(ctx):
    x, y = ctx.node.input(0), ctx.node.outputs[0]
    rank = ctx.rank(x)
    scales, sizes, axes = _resize_inputs(ctx)
    axes = [a % rank for a in axes] if axes else list(range(rank))
    in_shape = ctx.shape(x)
    for i, a in enumerate(axes):
        unchanged = (scales is not None and i < len(scales) and scales[i] == 1.0) or (
            sizes is not None and i < len(sizes) and sizes[i] == in_shape[a])
        if unchanged:
            ctx.same(ctx.dim(x, a), ctx.dim(y, a))
    for a in set(range(rank)) - set(axes):
        ctx.same(ctx.dim(x, a), ctx.dim(y, a))


@emitter("Resize")
def resize_sizes(ctx):
    if ctx.node.op != "Resize" or ctx.graph.opset < 11 or not ctx.node.input(3):
        return
    sizes = ctx.graph.constants[ctx.node.input(3)].copy()
    rank = len(ctx.graph.shape(ctx.node.input(0)))
    axes = [a % rank for a in ctx.node.attr("axes") or range(rank)]
    x = ctx.node.input(0)
    for i, a in enumerate(axes):
        if ctx.changed(x, a):
            sizes[i] = ctx.new_size(x, a)
    ctx.replace_constant_input(3, sizes)


@rule("Pad")
def pad(ctx):
    x, y = ctx.node.input(0), ctx.node.outputs[0]
    rank = ctx.rank(x)
    pads = ctx.attr("pads", ctx.attr("paddings")) if ctx.opset < 11 else ctx.const_ints(1, "pads")
    axes = ctx.const_ints(3, "pad axes") if ctx.opset >= 18 else None
    axes = [a % rank for a in axes] if axes else list(range(rank))
    pads = np.asarray(pads or [0] * (2 * len(axes))).reshape(2, len(axes))
    padded = {a for a, (lo, hi) in zip(axes, pads.T) if lo or hi}
    free = [a for a in range(rank) if a not in padded]
    ctx.same_axes(x, y, free, free)
