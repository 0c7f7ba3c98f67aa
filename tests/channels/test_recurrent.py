"""LSTM, GRU and RNN: hidden units pruned across gates, recurrence, states and outputs."""

import io

import numpy as np
import onnx
import pytest

import graphprune

from .graphs import Builder, attr, group_at, initializer, kept, prune_ok

GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
SEQ, BATCH, FEATURES, HIDDEN = 5, 2, 6, 8


def _recurrent(op: str, layout: int = 0, bias: bool = True, states: bool = True, peephole: bool = False,
               direction: str = "forward", **attrs) -> onnx.ModelProto:
    """``x -> op -> Y (per direction) -> MatMul -> y`` with every optional input present or not."""
    b = Builder(opset=14)
    dirs = 2 if direction == "bidirectional" else 1
    g = GATES[op]
    x = b.input([BATCH, SEQ, FEATURES] if layout else [SEQ, BATCH, FEATURES])
    inputs = [x, b.weight(dirs, g * HIDDEN, FEATURES, name="W"), b.weight(dirs, g * HIDDEN, HIDDEN, name="R"),
              b.weight(dirs, 2 * g * HIDDEN, name="B") if bias else ""]
    state_shape = (BATCH, dirs, HIDDEN) if layout else (dirs, BATCH, HIDDEN)
    if states:
        inputs += ["", b.weight(*state_shape, name="h0")]
        if op == "LSTM":
            inputs.append(b.weight(*state_shape, name="c0"))
    if peephole:
        inputs += [""] * (7 - len(inputs)) + [b.weight(dirs, 3 * HIDDEN, name="P")]
    while inputs and inputs[-1] == "":
        inputs.pop()
    outputs = b.op(op, *inputs, outputs=2, name="rnn", hidden_size=HIDDEN, layout=layout, direction=direction,
                   **attrs)
    y = outputs[0]  # [seq, dirs, batch, H] or [batch, seq, dirs, H]
    out = b.op("MatMul", y, b.weight(HIDDEN, 3, name="consumer_w"))  # per direction: the hidden axis last
    return b.build(out)


@pytest.mark.parametrize("op", sorted(GATES))
@pytest.mark.parametrize("layout", [0, 1])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
def test_hidden_units_are_removed_in_every_gate(op, layout, direction):
    model = _recurrent(op, layout=layout, direction=direction)
    if layout == 0:
        result = prune_ok(model)
    else:  # onnxruntime runs no batch-first recurrent op: the slicing is checked, not executed
        result = graphprune.prune(model, ratio=0.5, verify=False)
        onnx.checker.check_model(result.model, full_check=True)
        onnx.shape_inference.infer_shapes(result.model, strict_mode=True)
    units = kept(result, "R", 2)
    assert len(units) == HIDDEN // 2
    rows = [gate * HIDDEN + j for gate in range(GATES[op]) for j in units]
    assert kept(result, "W", 1) == rows and kept(result, "R", 1) == rows
    assert kept(result, "B", 1) == rows + [GATES[op] * HIDDEN + r for r in rows]
    assert kept(result, "h0", 2) == units and kept(result, "consumer_w", 0) == units
    assert attr(result.model, "rnn", "hidden_size") == len(units)
    assert initializer(result.model, "W").shape[0] == (2 if direction == "bidirectional" else 1)


@pytest.mark.parametrize("op, attrs", [("LSTM", {"input_forget": 1}), ("LSTM", {"clip": 3.0}),
                                       ("GRU", {"linear_before_reset": 1}),
                                       ("RNN", {"activations": ["Relu"]})])
def test_per_unit_attributes_need_nothing(op, attrs):
    result = prune_ok(_recurrent(op, **attrs))
    assert len(kept(result, "R", 2)) == HIDDEN // 2


def test_peepholes_and_missing_optional_inputs():
    result = prune_ok(_recurrent("LSTM", peephole=True))
    units = kept(result, "R", 2)
    assert kept(result, "P", 1) == [k * HIDDEN + j for k in range(3) for j in units]
    result = prune_ok(_recurrent("GRU", bias=False, states=False))
    assert len(kept(result, "R", 2)) == HIDDEN // 2


def test_directions_and_input_features_are_not_hidden_units():
    model = _recurrent("LSTM", direction="bidirectional")
    assert group_at(model, "W", 0).pinned  # the directions (here also reaching the output)
    assert group_at(model, "W", 0).id != group_at(model, "R", 2).id
    assert group_at(model, "W", 2).pinned  # the graph input's features
    assert group_at(model, "R", 2).id != group_at(model, "W", 2).id


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("layers", [1, 2])
def test_torch_exports_with_zero_initial_states(kind, layers):
    """The legacy exporter builds the initial state with ConstantOfShape([dirs, batch, H])."""
    torch = pytest.importorskip("torch")
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = getattr(nn, kind)(FEATURES, 16, num_layers=layers)
            self.fc = nn.Linear(16, 3)

        def forward(self, x):
            return self.fc(self.rnn(x)[0])

    torch.manual_seed(0)
    buffer = io.BytesIO()
    torch.onnx.export(Net().eval(), (torch.randn(SEQ, BATCH, FEATURES),), buffer, dynamo=False,
                      input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "seq", 1: "batch"}})
    model = onnx.load_from_string(buffer.getvalue())
    assert any(n.op_type == "ConstantOfShape" for n in model.graph.node)
    result = prune_ok(model)
    sizes = [attr(result.model, n.name, "hidden_size") for n in result.model.graph.node if n.op_type == kind]
    assert len(sizes) == layers and all(s == 8 for s in sizes)
    assert np.isfinite(result.report["params"][1])
