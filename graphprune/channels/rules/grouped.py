"""GroupedMatMul: one matmul per expert over contiguous token segments (Mixture of Experts).

``GroupedMatMul(x, W, offs)`` is graphprune's own op (no ONNX equivalent; only
the PyTorch front end emits it, from ``aten._grouped_mm`` and Hugging Face's
``transformers.grouped_mm_fallback``). With ``x`` [N, K] sorted by expert,
``W`` [E, K, M] and ``offs`` [E] the cumulative token counts::

    y[s, m] = Σ_k x[s, k] · W[e, k, m]      for offs[e-1] <= s < offs[e]  (offs[-1] read as 0)

It is a MatMul whose right operand is chosen per row, so it couples like one:
``K`` of ``x`` and of ``W`` are the same channels and are summed over (a
contraction: the oracle zeroes removed ones in ``x``), and ``M`` of ``W``
carries through to ``y``.

The expert axis of ``W`` and the token axis of ``x`` and ``y`` are owned by
the routing (the sort, the offsets, the gather and scatter of tokens) and stay
pinned. Every expert therefore shares one kept set along ``K`` and ``M``: the
same channels are removed in every expert. That is exact (each expert's
matmul only loses terms, or output columns, the oracle zeroes too) and simpler
than per-expert groups, which a dense ``[E, K, M]`` parameter could not hold
anyway.

The fused kernels (``F.grouped_mm`` on CPU, and on CUDA) also need ``K`` and
``M`` to be multiples of 16 bytes, so both are kept at a multiple of
:data:`ALIGNMENT` elements (16 bytes of bfloat16/float16; the IR records
bfloat16 as float32, so the element size is not trusted).
"""

from ..dims import Unsupported
from . import rule

ALIGNMENT = 8


@rule("GroupedMatMul")
def grouped_matmul(ctx):
    x, w, offs = ctx.node.input(0), ctx.node.input(1), ctx.node.input(2)
    y = ctx.node.outputs[0]
    if (ctx.rank(x), ctx.rank(w), ctx.rank(y)) != (2, 3, 2):
        raise Unsupported(f"grouped matmul of ranks {ctx.rank(x)} × {ctx.rank(w)} (only 2-D × 3-D)")
    ctx.same(ctx.dim(x, 1), ctx.dim(w, 1))
    ctx.contracts(0, 1, weight=(1, 1, 2), out_axis=1)
    ctx.same(ctx.dim(w, 2), ctx.dim(y, 1))
    for axis in (1, 2):
        ctx.multiple(ctx.dim(w, axis), ALIGNMENT)
    reason = f"GroupedMatMul node '{ctx.node.name}': experts and tokens are the routing's"
    for tensor, axis in ((w, 0), (x, 0), (y, 0), (offs, 0)):
        if tensor:
            ctx.pin(ctx.dim(tensor, axis), reason)
