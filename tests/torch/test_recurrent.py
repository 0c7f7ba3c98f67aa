"""``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN`` pruned on the torch path (timm's sequencer is made of them).

A hidden unit ``j`` is row ``g·H + j`` of every gate block and column ``j`` of ``weight_hh``; removing
it is exact when its state is cut off from the kept units (``weight_hh`` column ``j``) and from the
consumers of the output. The independent check below builds exactly that from the original module.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import graphprune


class Tagger(nn.Module):
    def __init__(self, mode: str, layers: int, bidirectional: bool, batch_first: bool, use_state=False):
        super().__init__()
        self.batch_first, self.use_state = batch_first, use_state
        self.embed = nn.Linear(6, 12)
        self.rnn = getattr(nn, mode)(12, 16, num_layers=layers, bidirectional=bidirectional,
                                     batch_first=batch_first)
        self.head = nn.Linear(16 * (2 if bidirectional else 1), 5)
        self.state_head = nn.Linear(16, 5)

    def forward(self, x):
        h = self.embed(x)
        if not self.batch_first:
            h = h.transpose(0, 1)
        y, state = self.rnn(h)
        if not self.batch_first:
            y = y.transpose(0, 1)
        out = self.head(y)
        if self.use_state:  # h_n: [layers·dirs, batch, H]; its last row read by a linear
            h_n = state[0] if self.rnn.mode == "LSTM" else state
            out = out + self.state_head(h_n[-1])[:, None, :]
        return out


def kept(result, name: str, axis: int) -> list[int]:
    return result.report["initializers"][name][str(axis)]


@pytest.mark.parametrize("mode", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("batch_first", [True, False])
def test_one_layer_prunes_exactly_and_matches_the_cut_off_units(mode, bidirectional, batch_first):
    torch.manual_seed(0)
    model = Tagger(mode, 1, bidirectional, batch_first).eval()
    original = copy.deepcopy(model)
    x = torch.randn(2, 7, 6)
    result = graphprune.prune(model, 0.5, example_inputs=(x,))
    assert result.verification.status == "exact"
    rnn = result.model.rnn
    assert (rnn.hidden_size, rnn.input_size) == (8, 6)
    gates = {"LSTM": 4, "GRU": 3, "RNN": 1}[mode]
    assert rnn.weight_ih_l0.shape == (gates * 8, 6) and rnn.weight_hh_l0.shape == (gates * 8, 8)
    units = kept(result, "rnn.weight_hh_l0", 1)
    removed = sorted(set(range(16)) - set(units))
    features = sorted(set(range(12)) - set(kept(result, "rnn.weight_ih_l0", 1)))  # the embedding's too
    assert kept(result, "rnn.weight_ih_l0", 0) == [g * 16 + j for g in range(gates) for j in units]
    # independently: the original with the removed units cut off from everything they feed
    with torch.no_grad():
        for suffix in ["", "_reverse"] if bidirectional else [""]:
            getattr(original.rnn, f"weight_hh_l0{suffix}")[:, removed] = 0
            getattr(original.rnn, f"weight_ih_l0{suffix}")[:, features] = 0
        for d in range(2 if bidirectional else 1):
            original.head.weight[:, [d * 16 + j for j in removed]] = 0
        other = torch.randn(3, 9, 6)
        torch.testing.assert_close(result.model(other), original(other), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["LSTM", "GRU"])
def test_stacked_layers_and_a_consumed_state_keep_one_hidden_size(mode):
    torch.manual_seed(1)
    model = Tagger(mode, 2, True, True, use_state=True).eval()
    x = torch.randn(2, 5, 6)
    result = graphprune.prune(model, 0.25, example_inputs=(x,))
    assert result.verification.status == "exact"
    rnn = result.model.rnn
    assert rnn.hidden_size == 12
    assert rnn.weight_ih_l1.shape[1] == 2 * 12  # the layer above reads both directions' kept units
    assert kept(result, "rnn.weight_hh_l0", 1) == kept(result, "rnn.weight_hh_l1", 1)
    assert result.model(torch.randn(1, 11, 6)).shape == (1, 11, 5)


class WithInitialState(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(6, 8, batch_first=True)
        self.h0 = nn.Parameter(torch.randn(1, 1, 8))
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        y, _ = self.rnn(x, self.h0.expand(1, x.shape[0], 8).contiguous())
        return self.head(y)


def test_an_initial_state_pins_the_layer_with_a_reason():
    torch.manual_seed(2)
    result = graphprune.prune(WithInitialState().eval(), 0.5, example_inputs=(torch.randn(2, 4, 6),))
    assert result.model.rnn.hidden_size == 8
    assert any("initial state" in call for call in result.report["torch"]["untranslated_calls"])


def test_timm_sequencer_prunes_its_lstms():
    timm = pytest.importorskip("timm")
    from timm.models.sequencer import Sequencer2d

    torch.manual_seed(3)
    model = Sequencer2d(num_classes=10, layers=(1, 1, 1, 1), embed_dims=(32, 48, 64, 64),
                        hidden_sizes=(16, 24, 32, 32), img_size=32, patch_sizes=(4, 2, 1, 1)).eval()
    lstm = model.stages[0].blocks[0].rnn_tokens.rnn_v
    result = graphprune.prune(model, 0.5, example_inputs=(torch.randn(1, 3, 32, 32),))
    assert result.verification.status == "exact"
    assert lstm.hidden_size == 8 and lstm.weight_hh_l0.shape == (32, 8)
    assert result.report["params"][1] < 0.6 * result.report["params"][0]
    assert result.model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


class ExportOnlyTagger(Tagger):
    """The same tagger with control flow on a size, so only ``torch.export`` traces it
    (``aten.lstm.input`` and friends, zero initial states built in the graph)."""

    def forward(self, x):
        if x.size(-1) != 6:
            return x
        return super().forward(x)


@pytest.mark.parametrize("tracer", ["concrete", "torch.export"])
@pytest.mark.parametrize("mode", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("bidirectional", [True, False])
def test_the_export_path_prunes_the_aten_recurrent_call(mode, bidirectional, tracer, tracer_used):
    torch.manual_seed(4)
    model = ExportOnlyTagger(mode, 2, bidirectional, True, use_state=True).eval()
    original = copy.deepcopy(model)
    x = torch.randn(2, 5, 6)
    result = graphprune.prune(model, 0.5, example_inputs=(x,))
    assert result.report["torch"]["tracer"] == tracer_used(tracer, result.report)
    assert result.report["torch"]["untranslated_calls"] == []
    assert result.verification.status == "exact"
    assert result.model.rnn.hidden_size == 8
    units = kept(result, "rnn.weight_hh_l0", 1)
    assert units == kept(result, "rnn.weight_hh_l1", 1)
    with torch.no_grad():  # the original with the removed units cut off, at another batch and length
        removed = sorted(set(range(16)) - set(units))
        features = sorted(set(range(12)) - set(kept(result, "rnn.weight_ih_l0", 1)))
        dirs = 2 if bidirectional else 1
        for suffix in ["", "_reverse"][:dirs]:
            for layer in (0, 1):
                getattr(original.rnn, f"weight_hh_l{layer}{suffix}")[:, removed] = 0
            getattr(original.rnn, f"weight_ih_l0{suffix}")[:, features] = 0
            getattr(original.rnn, f"weight_ih_l1{suffix}")[:, [d * 16 + j for d in range(dirs) for j in removed]] = 0
        original.head.weight[:, [d * 16 + j for d in range(dirs) for j in removed]] = 0
        original.state_head.weight[:, removed] = 0
        other = torch.randn(3, 9, 6)
        torch.testing.assert_close(result.model(other), original(other), rtol=1e-5, atol=1e-5)


def test_the_export_path_pins_a_given_initial_state():
    class Given(WithInitialState):
        def forward(self, x):
            if x.size(-1) != 6:
                return x
            return super().forward(x)

    torch.manual_seed(5)
    result = graphprune.prune(Given().eval(), 0.5, example_inputs=(torch.randn(2, 4, 6),))
    assert result.report["torch"]["tracer"] == "torch.export"
    assert result.model.rnn.hidden_size == 8
    assert any("initial state" in call for call in result.report["torch"]["untranslated_calls"])
