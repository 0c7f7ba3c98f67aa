"""Channel-wise ops: every output element depends on the same element of the inputs.

Unary ops couple all axes of input 0 with each output; broadcasting ops
couple each input axis with the result axis it aligns to (numpy rules), so a
per-channel constant ``[C,1,1]`` is sliced with the activation it scales.
"""

from ..shape_sources import couple_target, rewrite_target, target_rewrites
from . import emitter, rule

UNARY = (
    "Relu", "LeakyRelu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Elu",
    "Selu", "Celu", "ThresholdedRelu", "Softplus", "Softsign", "Gelu", "Erf", "Mish",
    "Swish", "Shrink", "Exp", "Log", "Sqrt", "Reciprocal", "Neg", "Abs", "Sin", "Cos",
    "Floor", "Ceil", "Round", "Sign", "Not", "IsNaN", "IsInf", "Identity", "Dropout",
    "Cast", "CastLike",
)
BROADCAST = (
    "Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "PRelu", "Where",
    "Mod", "Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual", "And", "Or", "Xor",
    "BitShift", "BitwiseAnd", "BitwiseOr", "BitwiseXor",
)


@rule(*UNARY)
def unary(ctx):
    x = ctx.node.input(0)
    for y in ctx.node.outputs:
        if y:  # Dropout's mask has the input's shape too
            ctx.broadcast(x, y)
    if ctx.node.op == "CastLike":  # only the dtype of target_type is read: its axes are free
        target = ctx.node.input(1)
        for axis in range(ctx.rank(target)):
            ctx.dim(target, axis)


@rule(*BROADCAST)
def broadcasting(ctx):
    y = ctx.node.outputs[0]
    for x in ctx.node.inputs:
        if x:
            ctx.broadcast(x, y)


EXPAND_INERT = (1,)  # a 1 in the target keeps the input's size


@rule("Expand")
def expand(ctx):
    """``Expand(x, shape)`` broadcasts ``x`` to ``shape``: axes of equal size carry
    through; axes ``x`` lacks or has as 1 are new and stay pinned. A target
    computed at run time is followed (:mod:`..shape_sources`); positions that
    cannot be rewritten pin their axis."""
    x, y = ctx.node.input(0), ctx.node.outputs[0]
    ctx.broadcast(x, y)
    if ctx.node.input(1):
        couple_target(ctx, 1, y, EXPAND_INERT)
    if ctx.table.gqa_heads != "kv":
        _broadcast_axes(ctx, x, y)


def _broadcast_axes(ctx, x: str, y: str) -> None:
    """Axes the Expand makes from a size-1 axis (``[KV, 1] → [KV, R]``, the query heads
    sharing a key/value head) are left free for a Reshape that merges them as the inner
    factor of a head axis (:meth:`RuleContext.factor`). Every element of such an axis is the
    same copy, so keeping fewer of them only needs a smaller target entry; an axis that does
    not end up as a proved factor is pinned (:func:`..factors.factor_groups`)."""
    sx, sy = ctx.shape(x), ctx.shape(y)
    lead = len(sy) - len(sx)
    for axis, size in enumerate(sy):
        if axis >= lead and sx[axis - lead] == 1 and isinstance(size, int) and size > 1:
            ctx.table.broadcast.add(ctx.dim(y, axis))


@emitter("Expand")
def expand_shape(ctx):
    """Entries of the target above 1 on pruned axes take the new size."""
    rewrite_target(ctx, 1, target_rewrites(ctx, 1, ctx.node.outputs[0], EXPAND_INERT))


@rule("ConstantOfShape")
def constant_of_shape(ctx):
    """``ConstantOfShape(shape)`` fills a tensor of a shape given as a vector (a recurrent
    layer's zero initial state, ``[dirs, batch, hidden]``): every output axis follows its entry
    of the vector, like a Reshape target; a filled constant has nothing to zero or slice."""
    y = ctx.node.outputs[0]
    couple_target(ctx, 0, y, ())
    for axis in range(ctx.rank(y)):
        ctx.dim(y, axis)  # each axis is what its entry says: mapped, its channels chosen downstream


@emitter("ConstantOfShape")
def constant_of_shape_target(ctx):
    rewrite_target(ctx, 0, target_rewrites(ctx, 0, ctx.node.outputs[0], ()))
