"""Tile, repeat, repeat_interleave, every padding and upsampling mode, F.unfold, F.fold and
Tensor.unfold on the PyTorch path: the channels they copy, pad or window stay prunable, on
symbolic_trace and on both ATen tracers (``export_only``: the concrete trace, or torch.export),
and the pruned module equals the original with the
removed channels cut off, at another batch and size."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import graphprune


def prune_exactly(model: nn.Module, export_only, tracer_used):
    """``(result, original)``: ``model`` (conv ``a`` 3→16 first) pruned at 0.5 on the tracer the
    test means, exact, every call translated, ``a`` halved."""
    original = copy.deepcopy(model)
    result = graphprune.prune(model, 0.5, example_inputs=(torch.randn(2, 3, 12, 12),))
    torch_report = result.report["torch"]
    assert torch_report["tracer"] == tracer_used(export_only or "symbolic_trace", result.report)
    assert torch_report["untranslated_calls"] == []
    assert result.verification.status == "exact"
    assert result.model.a.weight.shape[0] == 8  # the copied channels were pruned, not pinned
    return result, original


def assert_equal_at_another_shape(result, reference: nn.Module, export_only: bool) -> None:
    # torch.export keeps an image's spatial size static (frontends.fx.dynamic_axes): vary the batch only
    other = torch.randn(3, 3, 12, 12) if export_only else torch.randn(3, 3, 10, 14)
    with torch.no_grad():
        torch.testing.assert_close(result.model(other), reference(other), rtol=1e-5, atol=1e-5)


class Copies(nn.Module):
    """conv(3→16) → a channel-copying or spatial-padding op → conv(→8)."""

    WIDE = ("repeat", "tile", "interleave", "repeat_5d")

    def __init__(self, mode, export_only=False):
        super().__init__()
        self.mode, self.export_only = mode, export_only
        padding_mode = {"conv_reflect": "reflect", "conv_replicate": "replicate",
                        "conv_circular": "circular"}.get(mode, "zeros")
        self.a = nn.Conv2d(3, 16, 3, padding=1, padding_mode=padding_mode)
        self.b = nn.Conv2d(32 if mode in self.WIDE else 16, 8, 1)

    def forward(self, x):
        if self.export_only and x.size(1) != 3:  # control flow on a size: only torch.export traces it
            return x
        y = self.a(x).relu()
        mode = self.mode
        if mode == "repeat":
            y = y.repeat(1, 2, 1, 1)
        elif mode == "tile":
            y = torch.tile(y, (2, 1, 1))  # shorter than the rank: leading 1s
        elif mode == "repeat_5d":
            y = y.repeat(1, 1, 2, 1, 1).flatten(0, 1).reshape(x.shape[0], 32, y.shape[2], y.shape[3])
        elif mode == "interleave":
            y = y.repeat_interleave(2, dim=1)
        elif mode == "repeat_run_time":  # a count computed from a size the prune does not touch
            y = y.repeat(1, 1, x.shape[2] // x.shape[2], 1)
        elif mode in ("reflect", "replicate", "circular"):
            y = nn.functional.pad(y, (1, 2, 2, 1), mode=mode)
        return self.b(y)


def cut_off(original: nn.Module, kept: list[int], mode: str) -> nn.Module:
    """The original with the channels the prune removed from ``a`` zeroed in ``a`` and in every
    column of ``b`` they reach through the copy."""
    reference = copy.deepcopy(original)
    removed = sorted(set(range(16)) - set(kept))
    with torch.no_grad():
        reference.a.weight[removed] = 0
        reference.a.bias[removed] = 0
        if mode in ("repeat", "tile", "repeat_5d"):
            columns = removed + [16 + j for j in removed]
        elif mode == "interleave":
            columns = [2 * j + k for j in removed for k in (0, 1)]
        else:
            columns = removed
        reference.b.weight[:, columns] = 0
    return reference


MODES = ["repeat", "tile", "repeat_5d", "interleave", "repeat_run_time", "reflect", "replicate", "circular",
         "conv_reflect", "conv_replicate", "conv_circular"]


@pytest.mark.parametrize("export_only", [False, "concrete", "torch.export"])
@pytest.mark.parametrize("mode", MODES)
def test_copies_and_pads_keep_their_channels_prunable(mode, export_only, tracer_used):
    torch.manual_seed(0)
    result, original = prune_exactly(Copies(mode, export_only).eval(), export_only, tracer_used)
    assert result.model.b.weight.shape[1] == (16 if mode in Copies.WIDE else 8)
    reference = cut_off(original, result.report["initializers"]["a.weight"]["0"], mode)
    assert_equal_at_another_shape(result, reference, export_only)


def test_repeat_interleave_with_per_element_repeats_pins_rather_than_guesses():
    class PerElement(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 4, 1), nn.Conv2d(7, 2, 1)

        def forward(self, x):
            return self.b(self.a(x).repeat_interleave(torch.tensor([1, 2, 3, 1]), dim=1))

    result = graphprune.prune(PerElement().eval(), 0.5, example_inputs=(torch.randn(1, 3, 4, 4),))
    assert result.verification.status == "exact"
    assert result.model.a.weight.shape[0] == 4  # not understood: pinned


class Resized(nn.Module):
    def __init__(self, options, export_only):
        super().__init__()
        self.options, self.export_only = options, export_only
        conv = nn.Conv1d if options["mode"] == "linear" else nn.Conv2d
        self.a, self.b = conv(3, 16, 3, padding=1), conv(16, 8, 1)

    def forward(self, x):
        if self.export_only and x.size(1) != 3:
            return x
        return self.b(nn.functional.interpolate(self.a(x), **self.options))


@pytest.mark.parametrize("export_only", [False, "concrete", "torch.export"])
@pytest.mark.parametrize("options", [dict(mode="linear", scale_factor=2), dict(mode="nearest-exact", scale_factor=2),
                                     dict(mode="bicubic", size=(20, 20), antialias=True),
                                     dict(mode="bilinear", size=(6, 6), antialias=True)],
                         ids=["linear1d", "nearest_exact", "bicubic_aa", "bilinear_aa"])
def test_every_upsampling_keeps_the_channels_prunable(options, export_only):
    """aten's upsample_linear1d, _upsample_nearest_exact2d, _upsample_bicubic2d_aa, … resize
    the spatial axes only."""
    x = torch.randn(2, 3, 12) if options["mode"] == "linear" else torch.randn(2, 3, 12, 12)
    result = graphprune.prune(Resized(options, export_only).eval(), 0.5, example_inputs=(x,))
    assert result.report["torch"]["untranslated_calls"] == []
    assert result.verification.status == "exact"
    assert result.model.a.weight.shape[0] == 8


class Windows(nn.Module):
    def __init__(self, mode, export_only=False):
        super().__init__()
        self.mode, self.export_only = mode, export_only
        self.a = nn.Conv2d(3, 16, 3, padding=1)
        self.lin = nn.Linear(16 * 9, 8)
        self.b = nn.Conv2d(16, 8, 1)

    def forward(self, x):
        if self.export_only and x.size(1) != 3:  # control flow on a size: only torch.export traces it
            return x
        y = self.a(x).relu()
        if self.mode == "unfold":  # columns c·9 + k feed a linear
            return self.lin(F.unfold(y, 3, padding=1).transpose(1, 2))
        if self.mode == "fold":  # non-overlapping and overlapping windows summed back
            cols = F.unfold(y, 3, padding=1, stride=1)
            return self.b(F.fold(cols.sigmoid(), y.shape[-2:], 3, padding=1))
        if self.mode == "unbatched":
            return self.lin(F.unfold(y[0], 3, padding=1).transpose(0, 1))
        return self.b(y.unfold(3, 4, 2).amax(-1))  # Tensor.unfold: windows along the width


def cut_off_windows(original, kept):
    reference = copy.deepcopy(original)
    removed = sorted(set(range(16)) - set(kept))
    with torch.no_grad():
        reference.a.weight[removed] = 0
        reference.a.bias[removed] = 0
        reference.b.weight[:, removed] = 0
        reference.lin.weight[:, [c * 9 + k for c in removed for k in range(9)]] = 0
    return reference


@pytest.mark.parametrize("export_only", [False, "concrete", "torch.export"])
@pytest.mark.parametrize("mode", ["unfold", "fold", "unbatched", "windows"])
def test_sliding_windows_keep_their_channels_prunable(mode, export_only, tracer_used):
    torch.manual_seed(1)
    result, original = prune_exactly(Windows(mode, export_only).eval(), export_only, tracer_used)
    if mode in ("unfold", "unbatched"):
        assert result.model.lin.weight.shape[1] == 8 * 9
    reference = cut_off_windows(original, result.report["initializers"]["a.weight"]["0"])
    assert_equal_at_another_shape(result, reference, export_only)
