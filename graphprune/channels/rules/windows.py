"""Sliding windows on the PyTorch path: ``F.unfold`` (im2col), ``F.fold`` (col2im) and
``Tensor.unfold`` (windows along one axis). ONNX has no such ops; exporters lower them to
gathers, which the ONNX rules pin.

``F.unfold`` turns ``[B, C, *spatial]`` into ``[B, C·K, L]`` with ``K`` the kernel's element
count: column ``c·K + k`` is channel ``c`` at kernel offset ``k`` (channels outermost), so the
channel axis is tied to the column axis in blocks of ``K``; ``F.fold`` is the reverse, summing
overlapping windows within each channel. ``Tensor.unfold(d, size, step)`` slices axis ``d``
into windows along a new last axis: every other axis passes through. Without a batch axis
(unbatched ``F.unfold``/``F.fold``) the channel axis is the first. The windowed, spatial and
column-position axes are left unmapped, so they are pinned.
"""

from __future__ import annotations

from . import rule


@rule("TorchIm2Col")
def im2col(ctx):
    x, y = ctx.node.input(0), ctx.node.outputs[0]
    batched = ctx.rank(y) == 3
    if batched:
        ctx.same(ctx.dim(x, 0), ctx.dim(y, 0))
    channel = 1 if batched else 0
    ctx.blocks(ctx.dim(y, channel), ctx.dim(x, channel), ctx.node.attrs["kernel_elements"])


@rule("TorchCol2Im")
def col2im(ctx):
    x, y = ctx.node.input(0), ctx.node.outputs[0]
    batched = ctx.rank(x) == 3
    if batched:
        ctx.same(ctx.dim(x, 0), ctx.dim(y, 0))
    channel = 1 if batched else 0
    ctx.blocks(ctx.dim(x, channel), ctx.dim(y, channel), ctx.node.attrs["kernel_elements"])


@rule("TorchWindows")
def windows(ctx):
    x, y = ctx.node.input(0), ctx.node.outputs[0]
    rank = ctx.rank(x)
    axis = ctx.node.attrs["axis"] % rank
    others = [a for a in range(rank) if a != axis]
    ctx.same_axes(x, y, others, others)
