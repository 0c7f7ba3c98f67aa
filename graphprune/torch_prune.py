"""Pruning a PyTorch module: trace, analyse, select, emit, verify.

The same pipeline as for ONNX (one rule table, one selection policy, one
report schema keyed by ``state_dict`` names); what differs is the front end
(:mod:`graphprune.frontends.fx`), the emitter (:mod:`graphprune.emit.torch`)
and where the oracle runs (:mod:`graphprune.verify_torch`).

What is returned: the original module, sliced in place, when it still runs
and agrees with the pruned graph; otherwise (its forward holds sizes as
literals or attributes, e.g. ViT's ``hidden_dim``) the recompiled
``GraphModule``, with the stale attributes of the original classes listed in
the report. A failed verification restores the module and raises.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

import torch
from torch.utils import _pytree as pytree

from .channels import analyse
from .emit.torch import emit_torch, stale_attributes
from .errors import InputError, VerificationError
from .frontends.fx import FxModel, trace
from .importance import CRITERIA, TORCH_CRITERIA, importance
from .metrics import total_macs
from .plan_io import plan_from_kept, read_plan
from .report import build_report
from .selection import Plan, select
from .torch_importance import torch_importance
from .verify import Verification
from .verify_torch import compare_outputs, random_inputs, reference_outputs


@dataclass
class TorchPruneResult:
    """``model``: the pruned module (original class or GraphModule); ``report``: as for ONNX."""

    model: torch.nn.Module
    report: dict
    plan: Plan
    verification: Verification
    traced: FxModel


def _params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def prune_module(module: torch.nn.Module, ratio: float = 0.5, example_inputs=None, importance_name: str = "l2",
                 global_ranking: bool = False, round_to: int = 1, keep: str | None = None,
                 verify: bool = True, max_group_ratio: float = 0.9, tolerance: float = 1e-4,
                 plan=None, loss_fn=None) -> TorchPruneResult:
    if example_inputs is None:
        raise InputError("pruning an nn.Module needs example_inputs (a tensor or tuple of tensors)")
    if importance_name not in CRITERIA + TORCH_CRITERIA:
        raise InputError(f"unknown importance '{importance_name}': choose one of "
                         f"{', '.join(CRITERIA + TORCH_CRITERIA)}")
    if keep:
        try:
            re.compile(keep)
        except re.error as exc:
            raise InputError(f"--keep {keep!r} is not a valid regular expression: {exc}") from exc
    inputs = tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    was_training = module.training
    module.eval()
    try:
        return _prune(module, was_training, ratio, inputs, importance_name, global_ranking, round_to, keep, verify,
                      max_group_ratio, tolerance, plan, loss_fn)
    finally:
        module.train(was_training)


def _set_mode(model: torch.nn.Module, training: bool) -> None:
    """``train()``/``eval()``; torch.export's modules refuse both and keep their traced mode."""
    try:
        model.train(training)
    except NotImplementedError:
        pass


def _prune(module, was_training, ratio, inputs, criterion, global_ranking, round_to, keep, verify, max_group_ratio,
           tolerance, plan_source, loss_fn) -> TorchPruneResult:
    start = time.perf_counter()
    traced = trace(module, inputs)
    graph = traced.graph
    macs_before, params_before = total_macs(graph), _params(module)
    analysis = analyse(graph)
    if keep:
        analysis.pin_matching(keep)
    fallbacks = 0
    if plan_source is not None:
        plan = plan_from_kept(analysis, read_plan(plan_source), target="torch")
    else:
        if criterion in TORCH_CRITERIA:
            scores, fallbacks = torch_importance(traced, analysis, criterion, inputs, loss_fn)
        else:
            scores = importance(analysis, criterion)
        plan = select(analysis, scores, ratio, global_ranking, round_to, max_group_ratio)
    checks = random_inputs(inputs)
    reference = reference_outputs(traced, plan, checks) if verify else None
    emission = emit_torch(traced, plan)
    approx = next((analysis.groups[g].approximate for g in plan.removed
                   if plan.removed[g].any() and analysis.groups[g].approximate), None)
    try:
        if verify and approx is None:  # the oracle itself decides whether the original class still works
            pruned, verification = _verify_first_passing(traced, reference, checks, tolerance)
        else:
            pruned = _choose(traced, emission, inputs)
            _set_mode(pruned, False)
            verification = (compare_outputs(reference, pruned, checks, tolerance, approx) if verify
                            else Verification("skipped", tolerance=tolerance))
    except BaseException:
        emission.rollback()
        raise
    if not verification.ok:
        emission.rollback()
        raise VerificationError(f"verification failed: {verification.message}", verification)
    sliced = {name: axes for name, axes in emission.sliced.items() if name in traced.params}
    settings = {"ratio": ratio, "importance": criterion, "global": global_ranking, "round_to": round_to,
                "keep": keep, "max_group_ratio": max_group_ratio}
    if plan_source is not None:
        settings = {"plan": str(plan_source) if not isinstance(plan_source, dict) else "(report dict)"}
    report = build_report(plan, sliced, (params_before, _params(pruned)), (macs_before, total_macs(graph)),
                          verification, settings)
    report["torch"] = {
        "tracer": traced.tracer,
        "returned": "original module" if pruned is module else "torch.fx.GraphModule",
        "stale_attributes": stale_attributes(traced, emission) if pruned is not module else [],
        "rewritten_literals": emission.literals,
        "untranslated_calls": traced.untranslated,
        "importance_fallbacks": fallbacks,
        "plan_skipped": plan.skipped,
        "seconds": round(time.perf_counter() - start, 3),
    }
    _set_mode(pruned, was_training)
    return TorchPruneResult(pruned, report, plan, verification, traced)


def _verify_first_passing(traced: FxModel, reference, checks, tolerance):
    """The original module if it reproduces the oracle, else the GraphModule (with its verdict)."""
    verification = None
    for candidate in (traced.module, traced.gm):
        _set_mode(candidate, False)
        verification = compare_outputs(reference, candidate, checks, tolerance, None)
        if verification.ok:
            return candidate, verification
    return traced.gm, verification


def _choose(traced: FxModel, emission, inputs) -> torch.nn.Module:
    """The original module if it still runs and agrees with the pruned graph, else the graph."""
    module, gm = traced.module, traced.gm
    if traced.tracer != "symbolic_trace" and not emission.sliced:
        return module
    with torch.no_grad():
        try:
            expected = gm(*inputs)
            got = module(*inputs)
        except Exception:
            return gm
    a = [t for t in pytree.tree_leaves(expected) if isinstance(t, torch.Tensor)]
    b = [t for t in pytree.tree_leaves(got) if isinstance(t, torch.Tensor)]
    if len(a) != len(b) or any(x.shape != y.shape or not torch.allclose(x, y, rtol=1e-4, atol=1e-5)
                               for x, y in zip(a, b)):
        return gm
    return module
