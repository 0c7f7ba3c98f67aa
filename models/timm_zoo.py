"""The timm zoo: the smallest variant of every timm model family, random weights.

A *family* is the timm module that registers the model (``resnet``,
``vision_transformer``, ``efficientnet``, …; ``timm.models._registry``). Its
representative is the registered variant with the fewest parameters, counted
by building every variant on the ``meta`` device (no memory, no weights).
That takes minutes for all of ``timm.list_models()``, so the per-model counts
are cached per timm version under :func:`models.export.cache_root`.

Models are built with ``pretrained=False`` under a fixed seed, then every
BatchNorm gets random statistics (:func:`models.zoo.randomize_batchnorm`) and
every parameter that timm initialises to one constant (zero heads, layer
scales, LayerNorm affines, relative-position tables) gets a random spread, so
the oracle never compares outputs that cannot depend on the pruned channels.
"""

from __future__ import annotations

import json
import warnings
from functools import lru_cache

import torch

from .export import cache_root, write_cached
from .zoo import randomize_batchnorm

MAX_SIZE = 224
"""The largest side an example input gets; larger defaults are shrunk when the model allows it."""

SMALLER_SIDES = (224, 192, 160, 128)


def _timm():
    import timm

    return timm


def family_of(name: str) -> str:
    """The timm module that registers ``name`` (its family)."""
    from timm.models import _registry

    return _registry._model_to_module[name]


def _meta_param_count(name: str) -> int | None:
    """Parameters of ``name`` built on the meta device (``None`` if it cannot be built)."""
    try:
        with warnings.catch_warnings(), torch.device("meta"):
            warnings.simplefilter("ignore")
            model = _timm().create_model(name, pretrained=False)
    except Exception:  # a variant that does not build is simply not a candidate
        return None
    return sum(p.numel() for p in model.parameters())


def _counts_path():
    return cache_root() / f"timm-{_timm().__version__}-param-counts.json"


@lru_cache(maxsize=1)
def param_counts() -> dict[str, int | None]:
    """``{model name: parameter count}`` for every timm model (cached on disk per timm version)."""
    path = _counts_path()
    names = _timm().list_models()
    if path.exists():
        counts = json.loads(path.read_text())
        if set(counts) == set(names):
            return counts
    counts = {name: _meta_param_count(name) for name in names}
    write_cached(path, "timm parameter counts", lambda tmp: open(tmp, "w").write(json.dumps(counts, indent=0)))
    return counts


def _default_side(name: str) -> int:
    cfg = _timm().get_pretrained_cfg(name)
    return max(cfg.input_size[1:]) if cfg is not None else MAX_SIZE


def smallest_variants() -> dict[str, str]:
    """``{family: its variant with the fewest parameters}`` (ties: smaller input, then name)."""
    best: dict[str, tuple] = {}
    for name, count in param_counts().items():
        if count is None:
            continue
        key = (count, _default_side(name), name)
        family = family_of(name)
        if family not in best or key < best[family]:
            best[family] = key
    return {family: key[2] for family, key in sorted(best.items())}


def timm_family_names() -> list[str]:
    """One model name per timm family: the smallest variant, families in alphabetical order."""
    return list(smallest_variants().values())


# -- building ----------------------------------------------------------------

def _runs_on_meta(name: str, shape: tuple, kwargs: dict) -> bool:
    """Whether ``name`` built with ``kwargs`` accepts an input of ``shape`` (checked on meta)."""
    try:
        with warnings.catch_warnings(), torch.device("meta"), torch.no_grad():
            warnings.simplefilter("ignore")
            model = _timm().create_model(name, pretrained=False, **kwargs).eval()
            model(torch.empty(shape))
    except Exception:
        return False
    return True


@lru_cache(maxsize=None)
def input_shape(name: str, max_size: int = MAX_SIZE) -> tuple[tuple, dict]:
    """``(example input shape, create_model kwargs)`` for ``name``, each side at most ``max_size``.

    The default input size (``pretrained_cfg.input_size``) is kept when it fits.
    Otherwise smaller square sizes are tried, first through ``img_size=`` (ViT
    style models bake the size into position embeddings and patch grids), then,
    unless timm marks the input size fixed, as a plain input; the first one that
    runs on the meta device wins. A model that accepts none keeps its default.
    """
    cfg = _timm().get_pretrained_cfg(name)
    channels, height, width = cfg.input_size if cfg is not None else (3, MAX_SIZE, MAX_SIZE)
    if max(height, width) <= max_size:
        return (1, channels, height, width), {}
    fixed = cfg is not None and cfg.fixed_input_size  # another size is refused or resized inside
    for side in (s for s in SMALLER_SIDES if s <= max_size):
        shape = (1, channels, side, side)
        for kwargs in ({"img_size": side},) if fixed else ({"img_size": side}, {}):
            if _runs_on_meta(name, shape, kwargs):
                return shape, kwargs
    return (1, channels, height, width), {}


def randomize_constant_parameters(module: torch.nn.Module, generator=None) -> torch.nn.Module:
    """Spread every parameter whose entries are all equal, in place.

    timm zero-initialises classifier heads and some biases and position
    tables, and sets layer scales and norm affines to one value. An all-zero
    head makes the output constant; a constant scale hides a channel
    permutation. Zeros become ``N(0, 0.02)``; a constant ``v`` becomes
    ``v · U(0.5, 1.5)``, so magnitudes (a ``1e-5`` layer scale) are kept.
    """
    with torch.no_grad():
        for param in module.parameters():
            if param.numel() < 2 or not param.is_floating_point():
                continue
            flat = param.view(-1)
            if not bool((flat == flat[0]).all()):
                continue
            value = float(flat[0])
            if value == 0.0:
                param.normal_(0.0, 0.02, generator=generator)
            else:
                param.uniform_(0.5, 1.5, generator=generator).mul_(value)
    return module


def build_timm(name: str, seed: int = 0, max_size: int = MAX_SIZE) -> tuple[torch.nn.Module, torch.Tensor]:
    """``(model in eval mode, example input)`` for a timm model name, random weights.

    The global RNG state is restored afterwards, as for :func:`models.zoo.build`.
    """
    shape, kwargs = input_shape(name, max_size)
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(seed)
        model = _timm().create_model(name, pretrained=False, **kwargs)
    generator = torch.Generator().manual_seed(seed)
    randomize_batchnorm(model, generator)
    randomize_constant_parameters(model, generator)
    example = torch.randn(shape, generator=torch.Generator().manual_seed(seed + 1))
    return model.eval(), example


__all__ = ["MAX_SIZE", "build_timm", "family_of", "input_shape", "param_counts",
           "randomize_constant_parameters", "smallest_variants", "timm_family_names"]
