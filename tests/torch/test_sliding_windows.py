"""F.unfold (im2col), F.fold (col2im) and Tensor.unfold on the PyTorch path: the channels
they carry stay prunable on symbolic_trace and torch.export, and the pruned module equals the
original with the removed channels cut off."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import graphprune


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


def cut_off(original, kept, mode):
    reference = copy.deepcopy(original)
    removed = sorted(set(range(16)) - set(kept))
    with torch.no_grad():
        reference.a.weight[removed] = 0
        reference.a.bias[removed] = 0
        reference.b.weight[:, removed] = 0
        reference.lin.weight[:, [c * 9 + k for c in removed for k in range(9)]] = 0
    return reference


@pytest.mark.parametrize("export_only", [False, True])
@pytest.mark.parametrize("mode", ["unfold", "fold", "unbatched", "windows"])
def test_sliding_windows_keep_their_channels_prunable(mode, export_only):
    torch.manual_seed(1)
    model = Windows(mode, export_only).eval()
    original = copy.deepcopy(model)
    x = torch.randn(2, 3, 12, 12)
    result = graphprune.prune(model, 0.5, example_inputs=(x,))
    assert result.report["torch"]["tracer"] == ("torch.export" if export_only else "symbolic_trace")
    assert result.report["torch"]["untranslated_calls"] == []
    assert result.verification.status == "exact"
    assert result.model.a.weight.shape[0] == 8
    if mode in ("unfold", "unbatched"):
        assert result.model.lin.weight.shape[1] == 8 * 9
    reference = cut_off(original, result.report["initializers"]["a.weight"]["0"], mode)
    other = torch.randn(3, 3, 12, 12) if export_only else torch.randn(3, 3, 10, 14)
    with torch.no_grad():
        torch.testing.assert_close(result.model(other), reference(other), rtol=1e-5, atol=1e-5)
