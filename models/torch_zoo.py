"""The PyTorch zoo: every torchvision model the PyTorch front end must prune.

Classification (every name in ``torchvision.models.list_models(module=torchvision.models)``),
semantic segmentation (FCN, DeepLabV3, LRASPP) and the backbones of the
detection models (with their FPN where they have one), all with random
weights under a fixed seed and randomised BatchNorm statistics so the oracle
sees non-trivial normalisation.
"""

from __future__ import annotations

import torch
import torchvision

from .zoo import _TORCHVISION_KWARGS, randomize_batchnorm

SEGMENTATION = torchvision.models.list_models(module=torchvision.models.segmentation)
DETECTION = torchvision.models.list_models(module=torchvision.models.detection)


def classification_names() -> list[str]:
    return torchvision.models.list_models(module=torchvision.models)


def torch_model_names() -> list[str]:
    """Classification names, then segmentation names, then ``<detector>.backbone``."""
    return classification_names() + SEGMENTATION + [f"{d}.backbone" for d in DETECTION]


def input_shape(name: str) -> tuple:
    if name.startswith("inception_v3"):
        return (1, 3, 299, 299)
    if name.endswith(".backbone") and "ssd300" in name:
        return (1, 3, 300, 300)
    return (1, 3, 224, 224)


def build_torch(name: str, seed: int = 0) -> tuple[torch.nn.Module, torch.Tensor]:
    """``(model in eval mode, example input)`` for a name of :func:`torch_model_names`."""
    torch.manual_seed(seed)
    if name.endswith(".backbone"):
        detector = torchvision.models.get_model(name[: -len(".backbone")], weights=None, weights_backbone=None)
        model = detector.backbone
    elif name in SEGMENTATION:
        model = torchvision.models.get_model(name, weights=None, weights_backbone=None)
    elif name in classification_names():
        model = torchvision.models.get_model(name, weights=None, **_TORCHVISION_KWARGS.get(name, {}))
    else:
        raise ValueError(f"unknown model {name!r}; see graphprune.models.torch_zoo.torch_model_names()")
    randomize_batchnorm(model, torch.Generator().manual_seed(seed))
    model.eval()
    example = torch.randn(input_shape(name), generator=torch.Generator().manual_seed(seed + 1))
    return model, example
