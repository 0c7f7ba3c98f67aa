"""GroupNorm (``nn.GroupNorm``, ``F.group_norm``, ``aten.group_norm``, ONNX GroupNormalization).

timm's PoolFormer-v2, SHViT, LowFormer, CPU-Bone and the hybrid ViTs use it; it
had no rule, so it pinned its channels. With ``G`` groups of ``C / G``
consecutive channels, removing whole groups is exact and ``num_groups``
follows; with one group the statistic spans every channel and the oracle takes
it over the kept ones (torch path), or the prune is reported approximate (ONNX).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper
from torch import nn

import graphprune


class ConvNormConv(nn.Module):
    def __init__(self, groups: int, functional: bool, force_export: bool = False):
        super().__init__()
        self.groups, self.functional, self.force_export = groups, functional, force_export
        self.a = nn.Conv2d(3, 16, 3, padding=1)
        self.norm = nn.GroupNorm(groups, 16)
        self.b = nn.Conv2d(16, 4, 1)
        with torch.no_grad():
            self.norm.weight.uniform_(0.5, 1.5)
            self.norm.bias.uniform_(-0.5, 0.5)

    def forward(self, x):
        if self.force_export and x.size(1) != 3:  # control flow on a size: only torch.export traces it
            return x
        h = self.a(x)
        h = F.group_norm(h, self.groups, self.norm.weight, self.norm.bias) if self.functional else self.norm(h)
        return self.b(h.relu())


@pytest.mark.parametrize("force_export", [False, True], ids=["symbolic_trace", "torch.export"])
@pytest.mark.parametrize("functional", [False, True], ids=["module", "functional"])
@pytest.mark.parametrize("groups", [1, 4, 16])
def test_group_norm_channels_are_pruned_exactly(groups, functional, force_export):
    torch.manual_seed(0)
    model = ConvNormConv(groups, functional, force_export).eval()
    result = graphprune.prune(model, 0.5, example_inputs=(torch.randn(2, 3, 8, 8),))
    assert result.report["torch"]["untranslated_calls"] == []
    assert result.verification.status == "exact"
    assert result.model.a.weight.shape[0] == 8
    if groups > 1:  # whole groups went: two channels of each kept group of four, say, never
        kept = result.report["initializers"]["a.weight"]["0"]
        per_group = 16 // groups
        assert len(kept) % per_group == 0
        assert all(sum(1 for k in kept if k // per_group == g) in (0, per_group) for g in range(groups))
    if not functional:
        assert model.norm.num_groups == max(1, groups // 2) and model.norm.num_channels == 8
    assert result.model(torch.randn(1, 3, 10, 6)).shape == (1, 4, 10, 6)


def _onnx_group_norm(groups: int) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    arrays = {"w": rng.standard_normal((16, 3, 3, 3)), "b": rng.standard_normal(16), "s": rng.random(16) + 0.5,
              "t": rng.standard_normal(16), "w2": rng.standard_normal((4, 16, 1, 1))}
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("GroupNormalization", ["c", "s", "t"], ["g"], num_groups=groups, epsilon=1e-5),
             helper.make_node("Relu", ["g"], ["r"]), helper.make_node("Conv", ["r", "w2"], ["y"])]
    graph = helper.make_graph(nodes, "gn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 8, 8])],
                              [numpy_helper.from_array(v.astype(np.float32), k) for k, v in arrays.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    return model


@pytest.mark.parametrize("groups,status", [(4, "exact"), (1, "approximate")])
def test_onnx_group_normalization(groups, status):
    ort = pytest.importorskip("onnxruntime")
    result = graphprune.prune(_onnx_group_norm(groups), 0.5)
    assert result.verification.status == status
    shapes = {i.name: tuple(i.dims) for i in result.model.graph.initializer}
    assert shapes["w"] == (8, 3, 3, 3) and shapes["s"] == (8,)
    norm = next(n for n in result.model.graph.node if n.op_type == "GroupNormalization")
    assert helper.get_attribute_value(norm.attribute[[a.name for a in norm.attribute].index("num_groups")]) == \
        max(1, groups // 2)
    out = ort.InferenceSession(result.model.SerializeToString()).run(None, {"x": np.ones((2, 3, 8, 8), np.float32)})
    assert out[0].shape == (2, 4, 8, 8)
