"""Conv and ConvTranspose, 1D/2D/3D, any ``group``.

Conv ``W[Cout, Cin/g, k...]``. With ``g == 1`` input channel *c* is weight
column *c* (a contraction) and output channel *o* is weight row *o*. With
``g > 1`` channels are tied to their group: input *c* to group ``c // (Cin/g)``
and output *o* to group ``o // (Cout/g)`` through a virtual dim of ``g``
elements, so pruning removes whole groups (a depthwise conv, ``Cin/g == 1``,
is the special case where a group is one input channel). ``group`` is then
rewritten to the number of groups kept.

ConvTranspose ``W[Cin, Cout/g, k...]`` is the mirror image.
"""

from ..dims import Unsupported
from . import emitter, rule


def _couple_groups(ctx, x_dim, y_dim, groups, cin_g, cout_g):
    g_dim = ctx.virtual("groups", groups)
    ctx.blocks(x_dim, g_dim, cin_g)
    ctx.blocks(y_dim, g_dim, cout_g)


@rule("Conv")
def conv(ctx):
    x, w, b = ctx.node.input(0), ctx.node.input(1), ctx.node.input(2)
    y = ctx.node.outputs[0]
    g = ctx.attr("group", 1)
    cin, cout, cin_g = ctx.shape(x)[1], ctx.shape(w)[0], ctx.shape(w)[1]
    ctx.same(ctx.dim(x, 0), ctx.dim(y, 0))
    ctx.same(ctx.dim(w, 0), ctx.dim(y, 1))
    if b:
        ctx.same(ctx.dim(b, 0), ctx.dim(y, 1))
    ctx.contracts(0, 1, weight=(1, 1 if g == 1 else None, 0), out_axis=1)
    if g == 1:
        ctx.same(ctx.dim(x, 1), ctx.dim(w, 1))
    elif isinstance(cin, int) and isinstance(cout, int):
        _couple_groups(ctx, ctx.dim(x, 1), ctx.dim(y, 1), g, cin_g, cout // g)
    else:  # rows alone would be pruned without keeping the groups whole
        raise Unsupported(f"grouped conv input '{x}' has no static channel count")


@rule("ConvTranspose")
def conv_transpose(ctx):
    x, w, b = ctx.node.input(0), ctx.node.input(1), ctx.node.input(2)
    y = ctx.node.outputs[0]
    g = ctx.attr("group", 1)
    cin, cout_g = ctx.shape(w)[0], ctx.shape(w)[1]
    ctx.same(ctx.dim(x, 0), ctx.dim(y, 0))
    ctx.same(ctx.dim(w, 0), ctx.dim(x, 1))
    if b:
        ctx.same(ctx.dim(b, 0), ctx.dim(y, 1))
    ctx.contracts(0, 1, weight=(1, 0, 1) if g == 1 else None, out_axis=1)
    if g == 1:
        ctx.same(ctx.dim(w, 1), ctx.dim(y, 1))
    elif isinstance(cin, int) and isinstance(cout_g, int):
        _couple_groups(ctx, ctx.dim(x, 1), ctx.dim(y, 1), g, cin // g, cout_g)
    else:
        raise Unsupported(f"grouped conv weight '{w}' has no static shape")


@emitter("Conv", "ConvTranspose")
def conv_groups(ctx):
    g = ctx.node.attr("group", 1)
    x = ctx.node.input(0)
    if g > 1 and ctx.changed(x, 1):
        cin_per_group = ctx.old_size(x, 1) // g
        ctx.node.set_attr("group", ctx.new_size(x, 1) // cin_per_group)
