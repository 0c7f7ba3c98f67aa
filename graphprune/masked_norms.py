"""Normalisations over kept channels only: what makes norm-approximate groups exactly checkable.

Removing channels of an axis a LayerNorm, RMSNorm or ``F.normalize``
normalises over changes the statistic the kept channels are divided by, so
the pruned model is not the original with channels zeroed. It *is* the
original with every such statistic taken over the kept channels only
(``K`` of them, mask ``m``):

    mean_K(x)  = Σ m·x / K
    var_K(x)   = Σ m·(x - mean_K)² / (K - correction)
    LayerNorm  = (x - mean_K) / √(var_K + ε) · γ + β      (correction 0)
    ‖x‖_K      = √(Σ m·x²)
    GroupNorm with one group: LayerNorm over the kept channels and every position

The torch oracle evaluates those at the fx calls that compute the statistics
(:func:`norm_masks` finds them from the IR nodes whose rule marked the axis
approximate), so a prune that removes hidden channels is verified exactly
instead of only for finite outputs. A statistic computed by a call outside
this table leaves the prune approximate.
"""

from __future__ import annotations

import torch
from torch import nn

from .frontends.fx import FxModel, _fetch, _target_name

STATISTIC_OPS = ("LayerNormalization", "ReduceMean", "ReduceL2", "GroupNormalization")


def _mask_like(keep: torch.Tensor, x: torch.Tensor, axis: int) -> torch.Tensor:
    shape = [1] * x.dim()
    shape[axis] = -1
    return keep.view(shape).to(x.dtype)


def _mean(x, axis, keep, keepdim=True):
    m = _mask_like(keep, x, axis)
    return (x * m).sum(axis, keepdim=keepdim) / m.sum()


def _var(x, axis, keep, correction=1.0, keepdim=True):
    m = _mask_like(keep, x, axis)
    mean = (x * m).sum(axis, keepdim=True) / m.sum()
    var = (m * (x - mean) ** 2).sum(axis, keepdim=keepdim) / (m.sum() - correction)
    return var


def layer_norm(x, axis, keep, weight=None, bias=None, eps=1e-5):
    mean = _mean(x, axis, keep)
    var = _var(x, axis, keep, correction=0.0)
    y = (x - mean) / torch.sqrt(var + eps)
    if weight is not None:
        y = y * weight
    return y + bias if bias is not None else y


def rms_norm(x, axis, keep, weight=None, eps=None):
    eps = torch.finfo(x.dtype).eps if eps is None else eps
    y = x / torch.sqrt((x * x * _mask_like(keep, x, axis)).sum(axis, keepdim=True) / keep.sum() + eps)
    return y * weight if weight is not None else y


def group_norm(x, keep, weight=None, bias=None, eps=1e-5):
    """One group (``num_groups=1``): statistics over the kept channels and every spatial position."""
    m = _mask_like(keep, x, 1)
    axes = tuple(range(1, x.dim()))
    count = m.sum() * x[0, 0].numel()
    mean = (x * m).sum(axes, keepdim=True) / count
    var = (m * (x - mean) ** 2).sum(axes, keepdim=True) / count
    y = (x - mean) / torch.sqrt(var + eps)
    shape = [1, -1] + [1] * (x.dim() - 2)
    if weight is not None:
        y = y * weight.view(shape)
    return y + bias.view(shape) if bias is not None else y


def _one_group_norm_call(root, node, name, args, kwargs, x, keep):
    if node.op == "call_module":
        module = _fetch(root, node.target)
        if isinstance(module, nn.GroupNorm) and module.num_groups == 1:
            return group_norm(x, keep, module.weight, module.bias, module.eps)
        return None
    if name != "group_norm":
        return None
    groups = args[1] if len(args) > 1 else kwargs.get("num_groups")
    weight = args[2] if len(args) > 2 else kwargs.get("weight")
    bias = args[3] if len(args) > 3 else kwargs.get("bias")
    eps = args[4] if len(args) > 4 else kwargs.get("eps", 1e-5)
    return group_norm(x, keep, weight, bias, eps) if groups == 1 else None


def _axes(dims, x) -> list[int]:
    dims = [dims] if isinstance(dims, int) else list(dims or [])
    return [d % x.dim() for d in dims]


def _correction(args, kwargs) -> float:
    if "correction" in kwargs and kwargs["correction"] is not None:
        return float(kwargs["correction"])
    unbiased = kwargs.get("unbiased", args[2] if len(args) > 2 and isinstance(args[2], bool) else True)
    return 1.0 if unbiased else 0.0


def evaluate(root: nn.Module, node, args, kwargs, axis: int, keep: torch.Tensor):
    """The call ``node`` with its statistic over kept channels; None if the form is not handled."""
    name = _target_name(node)
    x = args[0] if args else kwargs.get("input")
    if isinstance(x, torch.Tensor) and axis == 1 and x.dim() > 2:
        return _one_group_norm_call(root, node, name, args, kwargs, x, keep)
    if not isinstance(x, torch.Tensor) or axis != x.dim() - 1:
        return None
    if node.op == "call_module":
        module = _fetch(root, node.target)
        if isinstance(module, nn.LayerNorm) and len(module.normalized_shape) == 1:
            return layer_norm(x, axis, keep, module.weight, module.bias, module.eps)
        if isinstance(module, nn.RMSNorm) and len(module.normalized_shape) == 1:
            return rms_norm(x, axis, keep, module.weight, module.eps)
        return None
    if name == "layer_norm":
        shape = args[1] if len(args) > 1 else kwargs.get("normalized_shape")
        if len(shape) != 1:
            return None
        weight = args[2] if len(args) > 2 else kwargs.get("weight")
        bias = args[3] if len(args) > 3 else kwargs.get("bias")
        eps = args[4] if len(args) > 4 else kwargs.get("eps", 1e-5)
        return layer_norm(x, axis, keep, weight, bias, eps)
    if name == "rms_norm":  # (input, normalized_shape, weight, eps)
        shape = args[1] if len(args) > 1 else kwargs.get("normalized_shape")
        weight = args[2] if len(args) > 2 else kwargs.get("weight")
        eps = args[3] if len(args) > 3 else kwargs.get("eps")
        return rms_norm(x, axis, keep, weight, eps) if len(shape) == 1 else None
    if name == "normalize":  # (input, p, dim, eps)
        order = args[1] if len(args) > 1 else kwargs.get("p", 2.0)
        dim = args[2] if len(args) > 2 else kwargs.get("dim", 1)
        eps = args[3] if len(args) > 3 else kwargs.get("eps", 1e-12)
        if order not in (2, 2.0) or dim % x.dim() != axis:
            return None
        norm = torch.sqrt(((x * _mask_like(keep, x, axis)) ** 2).sum(axis, keepdim=True))
        return x / norm.clamp_min(eps)
    if name == "linalg_vector_norm":  # (input, ord, dim, keepdim)
        order = args[1] if len(args) > 1 else kwargs.get("ord", 2)
        dims = args[2] if len(args) > 2 else kwargs.get("dim")
        keepdim = bool(args[3] if len(args) > 3 else kwargs.get("keepdim", False))
        if order not in (2, 2.0) or _axes(dims, x) != [axis]:
            return None
        return torch.sqrt(((x * _mask_like(keep, x, axis)) ** 2).sum(axis, keepdim=keepdim))
    dims = args[1] if len(args) > 1 else kwargs.get("dim")  # mean / var / std: (input, dim, …, keepdim)
    if _axes(dims, x) != [axis]:
        return None
    position = 2 if name == "mean" else 3  # var/std(input, dim, unbiased, keepdim)
    keepdim = bool(args[position] if len(args) > position else kwargs.get("keepdim", False))
    if name == "mean" and kwargs.get("dtype") is None:
        return _mean(x, axis, keep, keepdim)
    if name in ("var", "std"):
        var = _var(x, axis, keep, _correction(args, kwargs), keepdim)
        return var if name == "var" else torch.sqrt(var)
    return None


def norm_masks(model: FxModel, plan) -> tuple[dict[str, tuple[int, torch.Tensor]], list[str]]:
    """``({fx node: (axis, kept mask)}, [statistics no form here handles])`` for every
    statistic over an axis that lost channels."""
    table = plan.analysis.table
    masks, uncovered = {}, []
    for node in model.graph.nodes:
        if node.op not in STATISTIC_OPS or not node.inputs:
            continue
        shape = model.graph.shape(node.inputs[0])
        if not shape:
            continue
        axis = 1 if node.op == "GroupNormalization" else len(shape) - 1
        did = table.ids.get((node.inputs[0], axis))
        kept = plan.kept(did) if did is not None and did in table.approx else None
        if kept is None:
            continue
        fx_node = model.origin[node.name]
        keep = torch.zeros(table.sizes[did], dtype=torch.bool)
        keep[torch.as_tensor(kept, dtype=torch.long)] = True
        if _target_name(fx_node) in HANDLED or fx_node.op == "call_module":
            masks[fx_node.name] = (axis, keep)
        else:
            uncovered.append(f"{node.op} '{node.name}' ({_target_name(fx_node)})")
    return masks, uncovered


HANDLED = ("layer_norm", "rms_norm", "normalize", "group_norm", "mean", "var", "std", "linalg_vector_norm")

__all__ = ["evaluate", "norm_masks", "layer_norm", "rms_norm"]
