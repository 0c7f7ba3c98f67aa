"""Importance criteria that need the live PyTorch module.

* ``taylor`` — first-order Taylor expansion of the loss (Molchanov et al.):
  removing weight ``w`` changes the loss by about ``w·∂L/∂w``, so a channel
  scores ``Σ |w·∂L/∂w|`` over every parameter slice it owns. One forward and
  backward pass on the given inputs; ``loss_fn(output)`` defaults to the mean
  squared output (the output's energy) when no task loss is given.
* ``bn_scale`` — network slimming (Liu et al.): a channel scores the ``|γ|``
  of the BatchNorm layers in its group. Groups with no BatchNorm fall back to
  the L2 norm of their weights.

Both produce per-parameter arrays that :func:`graphprune.importance.group_importance`
aggregates onto channels exactly like the weight norms.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils import _pytree as pytree

from .frontends.fx import FxModel
from .importance import group_importance


def default_loss(output) -> torch.Tensor:
    tensors = [t for t in pytree.tree_leaves(output) if isinstance(t, torch.Tensor) and t.is_floating_point()]
    return sum(t.float().pow(2).mean() for t in tensors)


def taylor_values(model: FxModel, batches: list[tuple], loss_fn=None) -> dict[str, np.ndarray]:
    """``|w·∂L/∂w|`` per parameter, the gradients summed over ``batches`` (input tuples)."""
    params = {name: p for name, p in model.params.items()
              if isinstance(p, torch.nn.Parameter) and p.is_floating_point()}
    saved = {name: p.grad for name, p in params.items()}
    flags = {name: p.requires_grad for name, p in params.items()}
    try:
        for p in params.values():
            p.grad = None
            p.requires_grad_(True)
        with torch.enable_grad():
            for inputs in batches:
                loss = (loss_fn or default_loss)(model.gm(*inputs))
                loss.backward()
        return {name: (p.detach() * p.grad).abs().float().cpu().numpy()
                for name, p in params.items() if p.grad is not None}
    finally:
        for name, p in params.items():
            p.grad = saved[name]
            p.requires_grad_(flags[name])


def bn_scale_values(model: FxModel) -> dict[str, np.ndarray]:
    scales = {}
    for node in model.graph.nodes:
        if node.op == "BatchNormalization" and node.input(1) in model.params:
            scales[node.input(1)] = np.abs(model.graph.constants[node.input(1)]).astype(np.float32)
    return scales


def torch_importance(model: FxModel, analysis, criterion: str, batches: list[tuple], loss_fn=None):
    """Scores per prunable group and the number of groups that fell back to L2; ``taylor``
    takes its gradients on ``batches`` (the calibration data, else the example inputs)."""
    values = taylor_values(model, batches, loss_fn) if criterion == "taylor" else bn_scale_values(model)
    scores, fallbacks = {}, 0
    for g in analysis.prunable_groups():
        names = {analysis.table.keys[d][0] for d in analysis.constant_dims(g)}
        if names & values.keys():
            scores[g.id] = group_importance(analysis, g, "l1", values)
        else:
            scores[g.id] = group_importance(analysis, g, "l2")
            fallbacks += 1
    return scores, fallbacks
