"""Normalisations.

BatchNormalization (inference) and InstanceNormalization act per channel:
scale, bias (and BN's running statistics) are sliced with axis 1. Training-mode
BN updates statistics and is left pinned.

LayerNormalization normalises over the trailing axes: removing channels there
changes the mean and variance of the kept ones, so those groups are marked
*approximate* (the oracle checks shapes and finiteness instead of equality).
"""

from ..dims import Unsupported
from . import rule


@rule("BatchNormalization")
def batch_norm(ctx):
    if ctx.attr("training_mode", 0) or len([o for o in ctx.node.outputs if o]) > 1:
        raise Unsupported("training-mode BatchNormalization updates running statistics")
    x, y = ctx.node.input(0), ctx.node.outputs[0]
    ctx.same_axes(x, y, range(ctx.rank(x)), range(ctx.rank(y)))
    channel = ctx.dim(x, 1)
    for param in ctx.node.inputs[1:5]:
        if param:
            ctx.same(ctx.dim(param, 0), channel)
    ctx.statistics(ctx.node.input(3))
    ctx.statistics(ctx.node.input(4))


@rule("InstanceNormalization")
def instance_norm(ctx):
    x, y = ctx.node.input(0), ctx.node.outputs[0]
    ctx.same_axes(x, y, range(ctx.rank(x)), range(ctx.rank(y)))
    for param in ctx.node.inputs[1:3]:
        ctx.same(ctx.dim(param, 0), ctx.dim(x, 1))


@rule("LayerNormalization")
def layer_norm(ctx):
    x, y = ctx.node.input(0), ctx.node.outputs[0]
    rank = ctx.rank(x)
    axis = ctx.attr("axis", -1) % rank
    ctx.same_axes(x, y, range(rank), range(rank))
    for a in range(axis, rank):
        ctx.approximate(ctx.dim(x, a), f"LayerNormalization '{ctx.node.name}' normalises over it")
    for param in ctx.node.inputs[1:3]:
        if param:
            ctx.broadcast(param, x)
