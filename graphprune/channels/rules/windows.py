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


def _tie_columns(ctx, image: str, columns: str) -> None:
    """``image [B, C, *spatial]`` and ``columns [B, C·K, L]`` (no ``B`` when unbatched): channel
    ``c`` is columns ``c·K … c·K + K − 1``."""
    batched = ctx.rank(columns) == 3
    if batched:
        ctx.same(ctx.dim(image, 0), ctx.dim(columns, 0))
    channel = 1 if batched else 0
    ctx.blocks(ctx.dim(columns, channel), ctx.dim(image, channel), ctx.node.attrs["kernel_elements"])


@rule("TorchIm2Col")
def im2col(ctx):
    _tie_columns(ctx, ctx.node.input(0), ctx.node.outputs[0])


@rule("TorchCol2Im")
def col2im(ctx):
    _tie_columns(ctx, ctx.node.outputs[0], ctx.node.input(0))


@rule("TorchWindows")
def windows(ctx):
    x, y = ctx.node.input(0), ctx.node.outputs[0]
    rank = ctx.rank(x)
    axis = ctx.node.attrs["axis"] % rank
    others = [a for a in range(rank) if a != axis]
    ctx.same_axes(x, y, others, others)
