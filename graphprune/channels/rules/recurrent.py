"""Recurrent layers: LSTM (4 gates), GRU (3) and RNN (1), every direction, layout and attribute.

``W[dirs, G·H, in]``, ``R[dirs, G·H, H]``, ``B[dirs, 2·G·H]`` (input and
recurrent biases, gate-major), LSTM's peepholes ``P[dirs, 3·H]``;
``initial_h``/``initial_c`` ``[dirs, batch, H]`` and outputs ``Y[seq, dirs,
batch, H]``, ``Y_h``/``Y_c`` ``[dirs, batch, H]`` (``layout=1``: batch first,
``[batch, seq, dirs, H]`` and ``[batch, dirs, H]``).

One hidden unit ``j`` is row ``g·H + j`` of every gate block of ``W``, ``R``,
``B`` and ``P``, column ``j`` of ``R`` and entry ``j`` of the states and
outputs: a virtual dim of ``H`` elements tied to each of those in blocks.
Removing unit ``j`` is exact: its state reaches the other units only
through ``R``'s column ``j`` (the recurrent contraction, which the oracle
zeroes, declared as a contraction of ``R`` itself) and everything else only
through ``Y`` (zeroed where it is consumed). The input features are
contracted with ``W``'s last axis. The number of directions is pinned;
``hidden_size`` is rewritten on emission. Gate activations, ``clip``,
``input_forget`` and GRU's ``linear_before_reset`` act per unit and need
nothing.
"""

from ..dims import Unsupported
from . import emitter, rule

GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


@rule("LSTM", "GRU", "RNN")
def recurrent(ctx):
    op = ctx.node.op
    gates = GATES[op]
    x, w, r, b = (ctx.node.input(i) for i in range(4))
    initial = [ctx.node.input(5)] + ([ctx.node.input(6)] if op == "LSTM" else [])
    peephole = ctx.node.input(7) if op == "LSTM" else ""
    outputs = list(ctx.node.outputs) + [""] * 3
    y, states = outputs[0], [o for o in outputs[1:3 if op != "LSTM" else 3] if o]
    batch_first = ctx.attr("layout", 0) == 1
    hidden = ctx.attr("hidden_size")
    if hidden is None:
        shape = ctx.shape(r)
        hidden = shape[2] if shape and len(shape) == 3 else None
    if not isinstance(hidden, int):
        raise Unsupported(f"{op} '{ctx.node.name}' has no static hidden_size")
    unit = ctx.virtual("hidden units", hidden)
    ctx.blocks(ctx.dim(w, 1), unit, 1, gates)
    ctx.blocks(ctx.dim(r, 1), unit, 1, gates)
    ctx.same(ctx.dim(r, 2), unit)
    if b:
        ctx.blocks(ctx.dim(b, 1), unit, 1, 2 * gates)
    if peephole:
        ctx.blocks(ctx.dim(peephole, 1), unit, 1, 3)
    directions = ctx.dim(w, 0)
    ctx.pin(directions, f"{op} '{ctx.node.name}': the number of directions is fixed by 'direction'")
    for t in (r, b, peephole):
        if t:
            ctx.same(ctx.dim(t, 0), directions)
    # input features: contracted with W's last axis
    ctx.same(ctx.dim(x, 2), ctx.dim(w, 2))
    ctx.contracts(0, 2, weight=(1, 2, None))
    ctx.contracts(2, 2)  # the recurrence: R's column j carries unit j's state to every unit
    seq_axis, batch_axis = (1, 0) if batch_first else (0, 1)
    state_dirs, state_batch = (1, 0) if batch_first else (0, 1)
    for s in [t for t in initial if t] + states:
        ctx.same(ctx.dim(s, 2), unit)
        ctx.same(ctx.dim(s, state_dirs), directions)
        ctx.same(ctx.dim(s, state_batch), ctx.dim(x, batch_axis))
    if y:
        y_seq, y_dirs, y_batch = (1, 2, 0) if batch_first else (0, 1, 2)
        ctx.same(ctx.dim(y, 3), unit)
        ctx.same(ctx.dim(y, y_dirs), directions)
        ctx.same(ctx.dim(y, y_batch), ctx.dim(x, batch_axis))
        ctx.same(ctx.dim(y, y_seq), ctx.dim(x, seq_axis))


@emitter("LSTM", "GRU", "RNN")
def hidden_size(ctx):
    r = ctx.node.input(2)
    if ctx.changed(r, 2):
        ctx.node.set_attr("hidden_size", ctx.new_size(r, 2))


@rule("TorchRecurrent")
def torch_recurrent(ctx):
    """``nn.LSTM``/``nn.GRU``/``nn.RNN`` on the torch path, over the module's own parameters:
    inputs ``[x, weight_ih_l0, weight_hh_l0, (bias_ih_l0, bias_hh_l0), (…_reverse), …_l1…]``,
    outputs ``output[…, dirs·H]``, ``h_n`` (and LSTM's ``c_n``) ``[layers·dirs, batch, H]``.

    Each layer has its own hidden units: rows ``g·H + j`` of its ``weight_ih``/``weight_hh``/
    biases (``gates`` blocks, any gate order) and column ``j`` of ``weight_hh``, the recurrence,
    declared as a contraction of that parameter (the oracle zeroes the column). A layer above
    the first reads ``dirs`` blocks of the units below through its ``weight_ih`` columns, also
    a contraction of the parameter. The module has one ``hidden_size`` and its states stack
    every layer on one axis, so all layers keep the same units. On the ``torch.export`` path the
    zero initial states ``[layers·dirs, batch, H]`` follow as extra inputs."""
    a = ctx.node.attrs
    gates, layers, dirs, per = a["gates"], a["layers"], a["directions"], a["per_direction"]
    hidden = a["hidden_size"]
    x, params = ctx.node.input(0), list(ctx.node.inputs[1:1 + layers * dirs * per])
    initial = list(ctx.node.inputs[1 + layers * dirs * per:])  # torch.export's zero states
    y, states = ctx.node.outputs[0], [s for s in ctx.node.outputs[1:] if s]
    batch_first = a["batch_first"] == 1
    rank = ctx.rank(x)
    units = [ctx.virtual("hidden units", hidden)] * layers
    for k in range(layers):
        for d in range(dirs):
            base = 1 + (k * dirs + d) * per
            w_ih, w_hh = params[base - 1], params[base]
            ctx.blocks(ctx.dim(w_ih, 0), units[k], 1, gates)
            ctx.blocks(ctx.dim(w_hh, 0), units[k], 1, gates)
            ctx.same(ctx.dim(w_hh, 1), units[k])
            ctx.contracts(base + 1, 1)  # weight_hh's columns: the recurrence
            for bias in params[base + 1: base - 1 + per]:
                ctx.blocks(ctx.dim(bias, 0), units[k], 1, gates)
            if k == 0:
                ctx.same(ctx.dim(x, rank - 1), ctx.dim(w_ih, 1))
                if d == 0:  # one contraction of the input, whatever the directions
                    ctx.contracts(0, rank - 1, weight=(base, 1, 0))
            else:
                ctx.blocks(ctx.dim(w_ih, 1), units[k - 1], 1, dirs)
                ctx.contracts(base, 1)
    seq, batch = (1, 0) if batch_first else (0, 1)
    ctx.same(ctx.dim(y, seq), ctx.dim(x, seq))
    ctx.same(ctx.dim(y, batch), ctx.dim(x, batch))
    ctx.blocks(ctx.dim(y, 2), units[-1], 1, dirs)
    for s in states + initial:
        ctx.pin(ctx.dim(s, 0), f"'{ctx.node.name}': layers × directions of the states are fixed")
        ctx.same(ctx.dim(s, 1), ctx.dim(x, batch))
        ctx.same(ctx.dim(s, 2), units[0])
