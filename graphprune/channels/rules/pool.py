"""Pooling, reductions, softmax, resize and pad: channel-wise along the kept axes.

Spatial axes are not mentioned (so they stay pinned); only axes the op leaves
untouched are coupled. Reductions and softmax over an axis mix its elements,
so that axis is pinned rather than guessed.
"""

import numpy as np

from ..dims import Unsupported
from ..shape_sources import shape_entries
from ...symbolic import dims_equal
from . import emitter, rule


@rule("MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool")
def pool(ctx):
    x, y = ctx.node.input(0), ctx.node.outputs[0]
    if ctx.node.op == "MaxPool" and len(ctx.node.outputs) > 1 and ctx.node.outputs[1]:
        # Indices are flat offsets into the whole input (over C·H·W): their values change
        # when channels are removed, and no rule can rewrite them.
        raise Unsupported("its Indices output encodes channel positions")
    ctx.same_axes(x, y, (0, 1), (0, 1))


@rule("MaxRoiPool")
def roi_pool(ctx):
    """``Y[num_rois, C, ph, pw]``: axis 0 is the RoI index, not the input's batch axis."""
    ctx.same(ctx.dim(ctx.node.input(0), 1), ctx.dim(ctx.node.outputs[0], 1))


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


NORM_STATISTICS = ("ReduceMean", "ReduceL2")


@rule(*REDUCE)
def reduce(ctx):
    """Kept axes are coupled; a reduced axis is pinned, unless the node is a norm statistic.

    ``ReduceMean`` / ``ReduceL2`` over the last axis alone, keeping it as size
    1, is how RMSNorm, a decomposed LayerNorm and ``F.normalize`` compute the
    statistic they divide by. Removing channels there changes the statistic
    of the kept ones, as in LayerNormalization: the axis is left prunable and
    its groups are marked approximate.
    """
    x, y = ctx.node.input(0), ctx.node.outputs[0]
    rank = ctx.rank(x)
    axes = reduced_axes(ctx, rank)
    kept = [a for a in range(rank) if a not in axes]
    keepdims = ctx.attr("keepdims", 1)
    out_axes = kept if keepdims else range(len(kept))
    ctx.same_axes(x, y, kept, out_axes)
    if ctx.node.op in NORM_STATISTICS and keepdims and axes == {rank - 1} and rank > 1:
        ctx.approximate(ctx.dim(x, rank - 1),
                        f"{ctx.node.op} '{ctx.node.name}' takes a normalisation statistic over it")


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


def _text(ctx, name: str, default: str) -> str:
    """A string attribute (ONNX stores them as bytes)."""
    value = ctx.attr(name, default)
    return value.decode() if isinstance(value, bytes) else value


def _crop_roi(ctx, axes: list[int]):
    """Per-axis (start, end) of a ``tf_crop_and_resize`` RoI, or None for other modes."""
    if ctx.node.op != "Resize" or ctx.opset < 11 or \
            _text(ctx, "coordinate_transformation_mode", "half_pixel") != "tf_crop_and_resize":
        return None
    name = ctx.node.input(1)
    roi = ctx.const(name)
    if roi is None:
        raise Unsupported("tf_crop_and_resize RoI is absent or computed at run time")
    roi = np.asarray(roi, dtype=np.float64).reshape(-1)
    if roi.size != 2 * len(axes):
        raise Unsupported(f"tf_crop_and_resize RoI has {roi.size} values for {len(axes)} axes")
    roi = roi.reshape(2, len(axes))
    return dict(zip(axes, roi.T.tolist()))


@rule("Resize", "Upsample")
def resize(ctx):
    """An axis maps 1:1 only if it is left alone: outside ``axes``, or resized by exactly 1.

    Every coordinate mode maps output index *i* to input *i* when the scale is 1,
    except ``tf_crop_and_resize`` with an RoI other than [0, 1] on that axis. With a
    ``keep_aspect_ratio_policy`` other than ``stretch``, the ``sizes`` only set one
    common scale, so the output size itself must show the axis is unchanged.
    """
    x, y = ctx.node.input(0), ctx.node.outputs[0]
    rank = ctx.rank(x)
    if _runtime_sizes(ctx, x, y, rank):
        return
    scales, sizes, axes = _resize_inputs(ctx)
    axes = [a % rank for a in axes] if axes else list(range(rank))
    in_shape, out_shape = ctx.shape(x), ctx.graph.shape(y)
    roi = _crop_roi(ctx, axes)
    common_scale = sizes is not None and _text(ctx, "keep_aspect_ratio_policy", "stretch") != "stretch"
    for i, a in enumerate(axes):
        unchanged = (scales is not None and i < len(scales) and scales[i] == 1.0) or (
            sizes is not None and i < len(sizes) and sizes[i] == in_shape[a])
        if roi is not None and roi[a] != [0.0, 1.0]:
            unchanged = False  # the axis is cropped and resampled
        if common_scale and not (out_shape and len(out_shape) == rank
                                 and isinstance(in_shape[a], int) and out_shape[a] == in_shape[a]):
            unchanged = False
        if unchanged:
            ctx.same(ctx.dim(x, a), ctx.dim(y, a))
    for a in set(range(rank)) - set(axes):
        ctx.same(ctx.dim(x, a), ctx.dim(y, a))


def _runtime_sizes(ctx, x: str, y: str, rank: int) -> bool:
    """``sizes`` computed at run time (``Concat(Shape(x)[0:2], hw)``): an axis whose entry
    is exactly that axis's own run-time size is left alone, so it maps 1:1 and follows a
    prune by itself; the other axes stay pinned. False when this does not apply."""
    name = ctx.node.input(3) if ctx.node.op == "Resize" and ctx.opset >= 11 else ""
    if not name or ctx.const(name) is not None or \
            _text(ctx, "coordinate_transformation_mode", "half_pixel") == "tf_crop_and_resize":
        return False
    entries = shape_entries(ctx.graph, ctx.table.producers, name)
    if entries is None:
        raise Unsupported(f"Resize sizes ('{name}') are computed at run time in a way that cannot be followed")
    axes = [a % rank for a in ctx.attr("axes") or range(rank)]
    if len(entries) != len(axes) or _text(ctx, "keep_aspect_ratio_policy", "stretch") != "stretch":
        raise Unsupported(f"Resize sizes ('{name}') computed at run time do not name every axis once")
    for entry, a in zip(entries, axes):
        source = entry.size_of
        shape = ctx.graph.shape(source[0]) if source else None
        if shape is not None and dims_equal(shape[source[1]], ctx.shape(x)[a]):
            # the axis keeps the run-time size of an axis that is pruned with it: left alone
            ctx.same(ctx.dim(x, a), ctx.dim(y, a))
            ctx.same(ctx.dim(x, a), ctx.table.dim(*source))
        else:
            for tensor, axis in entry.reads:
                ctx.pin(ctx.table.dim(tensor, axis), f"its size is read at run time by Resize node "
                                                     f"'{ctx.node.name}'")
    for a in set(range(rank)) - set(axes):
        ctx.same(ctx.dim(x, a), ctx.dim(y, a))
    return True


@emitter("Resize")
def resize_sizes(ctx):
    if ctx.node.op != "Resize" or ctx.graph.opset < 11 or not ctx.node.input(3):
        return
    if ctx.node.input(3) not in ctx.graph.constants or ctx.graph.shape(ctx.node.input(0)) is None:
        return  # run-time sizes or unknown rank: the rule pinned this node
    sizes = ctx.graph.constants[ctx.node.input(3)].copy()
    rank = len(ctx.graph.shape(ctx.node.input(0)))
    axes = [a % rank for a in ctx.node.attr("axes") or range(rank)]
    x = ctx.node.input(0)
    for i, a in enumerate(axes):
        if ctx.changed(x, a):
            sizes[i] = ctx.new_size(x, a)
    if not np.array_equal(sizes, ctx.graph.constants[ctx.node.input(3)]):
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
