"""Normalisations.

BatchNormalization (inference) and InstanceNormalization act per channel:
scale, bias (and BN's running statistics) are sliced with axis 1. Training-mode
BN updates statistics and is left pinned.

LayerNormalization normalises over the trailing axes: removing channels there
changes the mean and variance of the kept ones, so those groups are marked
*approximate* (the oracle checks shapes and finiteness instead of equality).
"""

from ..dims import Unsupported
from . import emitter, rule


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


@rule("GroupNormalization")
def group_norm(ctx):
    """``num_groups`` groups of ``C / G`` consecutive channels, each normalised over its channels
    and the spatial axes. Removing whole groups is exact (the channel axis is ``G`` blocks and
    ``num_groups`` is rewritten); with one group the statistic spans every channel, so it is
    approximate like LayerNorm. Scale and bias are per channel (opset 21, the torch path) or
    per group (opset 18)."""
    x, y = ctx.node.input(0), ctx.node.outputs[0]
    rank = ctx.rank(x)
    ctx.same_axes(x, y, range(rank), range(rank))
    groups, channels = ctx.attr("num_groups"), ctx.shape(x)[1]
    if not isinstance(channels, int) or groups is None or channels % groups:
        raise Unsupported(f"GroupNormalization '{ctx.node.name}': {channels} channels in {groups} groups")
    channel = ctx.dim(x, 1)
    per_group = None
    if groups == 1:
        ctx.approximate(channel, f"GroupNormalization '{ctx.node.name}' normalises over every channel")
    else:
        per_group = ctx.virtual("norm groups", groups)
        ctx.blocks(channel, per_group, channels // groups)
    for param in ctx.node.inputs[1:3]:
        if not param:
            continue
        size = ctx.shape(param)[0]
        if size == channels:
            ctx.same(ctx.dim(param, 0), channel)
        elif size == groups and per_group is not None:
            ctx.same(ctx.dim(param, 0), per_group)
        elif size != groups:
            raise Unsupported(f"GroupNormalization '{ctx.node.name}': scale of {size} for {channels} channels")


@emitter("GroupNormalization")
def group_norm_groups(ctx):
    groups = ctx.node.attr("num_groups")
    x = ctx.node.input(0)
    if groups and groups > 1 and ctx.changed(x, 1):
        ctx.node.set_attr("num_groups", ctx.new_size(x, 1) // (ctx.old_size(x, 1) // groups))
