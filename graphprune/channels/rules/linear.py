"""Gemm and MatMul: contractions over the inner dimension.

``Y = A·B``: A's inner axis and B's inner axis are the same channels and are
summed over (the oracle zeroes removed ones there); A's rows and B's columns
carry through to Y. Batch axes of MatMul broadcast like elementwise ops, so
the head axis of attention (``Q·Kᵀ``, ``attn·V``) couples Q, K, V and the
result per head.
"""

from ..dims import Unsupported
from ...symbolic import dims_equal
from . import rule


@rule("Gemm")
def gemm(ctx):
    a, b, c = ctx.node.input(0), ctx.node.input(1), ctx.node.input(2)
    y = ctx.node.outputs[0]
    a_m, a_k = (1, 0) if ctx.attr("transA", 0) else (0, 1)
    b_k, b_n = (1, 0) if ctx.attr("transB", 0) else (0, 1)
    ctx.same(ctx.dim(a, a_m), ctx.dim(y, 0))
    ctx.same(ctx.dim(a, a_k), ctx.dim(b, b_k))
    ctx.contracts(0, a_k, weight=(1, b_k, b_n), out_axis=1)
    ctx.same(ctx.dim(b, b_n), ctx.dim(y, 1))
    if c:
        ctx.broadcast(c, y)


def _batch_broadcast(ctx, x, y, x_batch_rank, y_batch_rank):
    sx, sy = ctx.shape(x), ctx.shape(y)
    lead = y_batch_rank - x_batch_rank
    for ax in range(x_batch_rank):
        if dims_equal(sx[ax], sy[ax + lead]):
            ctx.same(ctx.dim(x, ax), ctx.dim(y, ax + lead))
        elif isinstance(sx[ax], int) and isinstance(sy[ax + lead], int) and sx[ax] != 1:
            raise Unsupported(f"batch axis {ax} of '{x}' does not broadcast to '{y}'")
        elif sx[ax] != 1:  # symbolic sizes the graph cannot relate: pinned, not guessed
            reason = f"MatMul batch axis {ax} of '{x}' ({sx[ax]}) is not provably that of '{y}'"
            ctx.pin(ctx.dim(x, ax), reason)
            ctx.pin(ctx.dim(y, ax + lead), reason)


@rule("MatMul")
def matmul(ctx):
    a, b = ctx.node.input(0), ctx.node.input(1)
    y = ctx.node.outputs[0]
    ra, rb, ry = ctx.rank(a), ctx.rank(b), ctx.rank(y)
    ctx.same(ctx.dim(a, ra - 1), ctx.dim(b, 0 if rb == 1 else rb - 2))
    if rb == 1:
        ctx.contracts(0, ra - 1, weight=(1, 0, None))
    else:
        ctx.contracts(0, ra - 1, weight=(1, rb - 2, rb - 1), out_axis=ry - 1)
    if ra == 1:  # [K] @ [..., K, N] -> [..., N]
        _batch_broadcast(ctx, b, y, rb - 2, ry - 1)
        ctx.same(ctx.dim(b, rb - 1), ctx.dim(y, ry - 1))
    elif rb == 1:  # [..., M, K] @ [K] -> [..., M]
        _batch_broadcast(ctx, a, y, ra - 2, ry - 1)
        ctx.same(ctx.dim(a, ra - 2), ctx.dim(y, ry - 1))
    else:
        _batch_broadcast(ctx, a, y, ra - 2, ry - 2)
        _batch_broadcast(ctx, b, y, rb - 2, ry - 2)
        ctx.same(ctx.dim(a, ra - 2), ctx.dim(y, ry - 2))
        ctx.same(ctx.dim(b, rb - 1), ctx.dim(y, ry - 1))
