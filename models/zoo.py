"""Name -> model and name -> example input, with reproducible random weights.

No weights can be downloaded, so every model is built with ``weights=None``
under a fixed seed; two builds of the same name are bit-identical, which is
what lets tests compare a pruned export against a fresh torch model.
"""

import torch
import torchvision
from torch import nn

from .attention import AttentionBlock, AttentionMLPBlock
from .small import SMALL_MODELS

SEED = 0

CORE_MODELS = [
    "resnet18",
    "resnet50",
    "mobilenet_v2",
    "mobilenet_v3_large",
    "efficientnet_b0",
    "densenet121",
    "googlenet",
    "regnet_y_400mf",
    "vgg11_bn",
    "resnext50_32x4d",
    "mha_block",
]
"""The models every pruning feature is expected to handle."""

OWN_MODELS = {**SMALL_MODELS, "mha_block": AttentionBlock, "vit_block": AttentionMLPBlock}

# Inception-style constructors default to aux heads (extra outputs) and warn
# unless told how to initialise; the zoo wants one output and no noise.
_TORCHVISION_KWARGS = {
    "googlenet": {"aux_logits": False, "init_weights": True},
    "inception_v3": {"aux_logits": False, "init_weights": True},
}

DEFAULT_INPUT_SHAPE = (1, 3, 224, 224)
_INPUT_SHAPES = {
    **{name: (1, 3, 32, 32) for name in SMALL_MODELS},
    "mha_block": (1, 16, 64),
    "vit_block": (1, 16, 64),
    "inception_v3": (1, 3, 299, 299),
}


def available_models():
    """Every name ``build`` accepts: our own nets, then torchvision's classifiers."""
    return sorted(OWN_MODELS) + torchvision.models.list_models(module=torchvision.models)


def _check_name(name):
    if name not in OWN_MODELS and name not in torchvision.models.list_models(module=torchvision.models):
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(available_models())}")


def randomize_batchnorm(module, generator=None):
    """Give every BatchNorm non-trivial affine params and running stats, in place.

    Fresh BNs are identities in eval mode (mean 0, var 1, weight 1, bias 0),
    so a BN-folding or channel-slicing bug that picks the wrong BN entries
    would go unnoticed. Variances stay in [0.5, 1.5] to keep them positive and
    activations bounded. Pass a ``generator`` for reproducibility outside ``build``.
    """
    norms = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
    with torch.no_grad():
        for bn in module.modules():
            if not isinstance(bn, norms):
                continue
            if bn.affine:
                bn.weight.uniform_(0.5, 1.5, generator=generator)
                bn.bias.normal_(0.0, 0.1, generator=generator)
            if bn.track_running_stats:
                bn.running_mean.normal_(0.0, 0.1, generator=generator)
                bn.running_var.uniform_(0.5, 1.5, generator=generator)
    return module


def build(name, seed=SEED):
    """An eval-mode model with seeded random weights and randomised BatchNorms.

    The global RNG state is restored afterwards, so building a model does not
    change what other code draws from ``torch.randn``.
    """
    _check_name(name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if name in OWN_MODELS:
            model = OWN_MODELS[name]()
        else:
            model = torchvision.models.get_model(name, weights=None, **_TORCHVISION_KWARGS.get(name, {}))
        randomize_batchnorm(model)
    return model.eval()


def input_shape(name):
    """The static input shape used for ``name`` (and baked into its ONNX export)."""
    _check_name(name)
    return _INPUT_SHAPES.get(name, DEFAULT_INPUT_SHAPE)


def example_input(name, seed=SEED):
    """A seeded random input of ``input_shape(name)``; deterministic across calls."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(input_shape(name), generator=generator)
