"""Every torchvision model through the PyTorch front end, zero configuration (``-m zoo``).

Classification (all of ``torchvision.models.list_models``), segmentation and
the detection backbones with their FPN: each is pruned at ratio 0.5, verified
by the torch oracle (exact, or approximate only where a pruned group passes a
LayerNorm), must lose MACs, and the returned model must run on the example.
"""

from __future__ import annotations

import pytest
import torch

import graphprune
from graphprune.models.torch_zoo import build_torch, torch_model_names

pytestmark = pytest.mark.zoo

LAYER_NORM_FAMILIES = ("convnext", "swin", "maxvit", "vit_")


@pytest.mark.parametrize("name", torch_model_names())
def test_torchvision_model_prunes(name):
    model, x = build_torch(name)
    with torch.no_grad():
        expected_shapes = [t.shape for t in torch.utils._pytree.tree_leaves(model(x))
                           if isinstance(t, torch.Tensor)]
    result = graphprune.prune(model, 0.5, example_inputs=x)
    status = result.verification.status
    assert status == "exact" or (status == "approximate" and name.startswith(LAYER_NORM_FAMILIES)), status
    before, after = result.report["macs"]
    assert after < 0.75 * before, result.report["macs"]
    with torch.no_grad():
        shapes = [t.shape for t in torch.utils._pytree.tree_leaves(result.model(x))
                  if isinstance(t, torch.Tensor)]
    assert shapes == expected_shapes


@pytest.mark.parametrize("name", [n for n in torch_model_names() if n.startswith(LAYER_NORM_FAMILIES)
                                  and not n.startswith(("vit_h", "vit_l"))])
def test_layer_norm_model_is_exact_without_the_normalised_groups(name):
    """Approximate results only check shapes: keep the LayerNorm'd groups and the rest must be exact."""
    model, x = build_torch(name)
    result = graphprune.prune(model, 0.5, example_inputs=x, keep=r"norm|\.ln|layer_scale")
    assert result.verification.status == "exact", result.verification.message
    assert result.report["macs"][1] < result.report["macs"][0]
