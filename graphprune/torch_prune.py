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

import contextlib
import copy
import math
import re
import time
from dataclasses import dataclass

import torch
from torch.utils import _pytree as pytree

from .activation_importance import (ACTIVATION_CRITERIA, AUTO, activation_importance, default_criterion,
                                   needed_statistics)
from .budget import Budget, select_for_budget
from .calibration import calibration_report, split_held_out
from .channels import analyse
from .emit.torch import emit_torch, repair_attributes, stale_attributes
from .errors import InputError, VerificationError
from .frontends.concrete import TRACER as CONCRETE
from .frontends.concrete import NeedsExport
from .frontends.fx import FxModel, trace
from .hf import build_memo, fit_config, is_hf_model, rebuilt_buffers_agree, sync_attributes, undo_edits, validation_veto
from .importance import CRITERIA, TORCH_CRITERIA, importance
from .metrics import total_macs
from .plan_io import plan_from_kept, read_plan
from .progress import step
from .repair import REPAIRS, plan_repair, repair_inputs
from .report import build_report
from .selection import Plan, check_allocation, select
from .torch_calibration import batch_rows, calibration_inputs, collect_statistics
from .torch_importance import torch_importance
from .torch_repair import apply_repair, float_outputs
from .torch_rotation import rotate_streams
from .verify import Verification
from .verify_torch import (NeedsGraphs, OracleGraph, check_inputs, compare_outputs, noise_floor, reference_outputs,
                           snapshot)


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


@dataclass
class Calibration:
    """What calibration data drives: the samples, the repair and the BatchNorm re-estimate."""

    data: object = None
    samples: int | None = None
    repair: str = "auto"  # "auto": least squares with calibration data, else none
    recalibrate_bn: bool | None = None  # None: with calibration data
    budget: object = None  # graphprune.budget.Budget: prune to a MACs/params fraction instead of a ratio
    rotate: bool = False  # rotate RMSNorm residual streams into principal axes first (graphprune.rotation)


def prune_module(module: torch.nn.Module, ratio: float = 0.5, example_inputs=None, importance_name: str | None = None,
                 global_ranking: bool = False, round_to: int = 1, keep: str | None = None,
                 verify: bool = True, max_group_ratio: float = 0.9, tolerance: float = 1e-4,
                 plan=None, loss_fn=None, exact: bool = False,
                 calibration: Calibration | None = None, *, allocation: str = "normalised") -> TorchPruneResult:
    if example_inputs is None:
        raise InputError("pruning an nn.Module needs example_inputs (a tensor or tuple of tensors)")
    calibration = calibration or Calibration()
    check_allocation(allocation)
    if importance_name is None:
        importance_name = AUTO if calibration.data is not None else "l2"
    known = CRITERIA + TORCH_CRITERIA + ACTIVATION_CRITERIA + (AUTO,)
    if importance_name not in known:
        raise InputError(f"unknown importance '{importance_name}': choose one of {', '.join(known)}")
    if importance_name in ACTIVATION_CRITERIA and calibration.data is None:
        raise InputError(f"importance '{importance_name}' needs calibration data (calibration=...)")
    if calibration.repair not in REPAIRS + ("auto",):
        raise InputError(f"unknown repair '{calibration.repair}': choose one of auto, {', '.join(REPAIRS)}")
    if calibration.repair in ("bias", "lsq") and calibration.data is None:
        raise InputError(f"repair '{calibration.repair}' needs calibration data (calibration=...)")
    if calibration.rotate and calibration.data is None:
        raise InputError("rotate=True needs calibration data (calibration=...): the rotation is chosen from "
                         "the residual stream's activations")
    if keep:
        try:
            re.compile(keep)
        except re.error as exc:
            raise InputError(f"--keep {keep!r} is not a valid regular expression: {exc}") from exc
    inputs = tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    was_training = module.training
    module.eval()
    settings = (module, was_training, ratio, inputs, importance_name, global_ranking, round_to, keep, verify,
                max_group_ratio, tolerance, plan, loss_fn, exact, calibration, allocation)
    try:
        try:  # a concrete trace first where nothing runs the graph at other inputs than the checks
            concrete = concrete_first(module, calibration)
            try:
                return _prune(*settings, concrete=concrete)
            except NeedsGraphs:  # (the module is as it was) the noise floor runs the checks' graphs
                return _prune(*settings, concrete=concrete, replay=False)
        except NeedsExport:  # the module is as it was: prune from a shape-generic trace instead
            return _prune(*settings, concrete=False)
    finally:
        module.train(was_training)


def concrete_first(module: torch.nn.Module, calibration: Calibration) -> bool:
    """Whether a concrete trace (:mod:`.frontends.concrete`) is tried before torch.export: for a
    Hugging Face model without calibration data. Its class is kept (its sizes live in its config,
    which the prune updates), so the graph is never returned; calibration would run the graph at
    other shapes. Elsewhere a graph must often be returned (torchvision's ViT and Swin), and the
    concrete attempt would be lost time."""
    return calibration.data is None and is_hf_model(module)


def _set_mode(model: torch.nn.Module, training: bool) -> None:
    """``train()``/``eval()``; torch.export's modules refuse both and keep their traced mode."""
    try:
        model.train(training)
    except NotImplementedError:
        pass


def _prune(module, was_training, ratio, inputs, criterion, global_ranking, round_to, keep, verify, max_group_ratio,
           tolerance, plan_source, loss_fn, exact, calibration, allocation, concrete: bool,
           replay: bool = True) -> TorchPruneResult:
    start = time.perf_counter()
    samples = calibration_inputs(calibration.data, inputs, module, calibration.samples)
    fit, held_out = split_held_out(samples)
    repair_mode = calibration.repair if calibration.repair != "auto" else ("lsq" if samples else "none")
    with without_cache(module):
        with step("tracing"):
            traced = trace(module, inputs, concrete=concrete and not samples)
        graph = traced.graph
        macs_before, params_before = total_macs(graph), _params(module)
        analysis = analyse(graph)
        rotation = None
        if calibration.rotate and not exact:
            with step("rotation"):
                rotation = rotate_streams(traced, analysis, fit, held_out + [tuple(inputs)])
            if rotation["rotated"]:  # the weights changed: trace the rotated module afresh
                with step("tracing"):
                    traced = trace(module, inputs)
                graph = traced.graph
                analysis = analyse(graph)
        budget = _budget_of_original(calibration.budget, params_before, _params(module))
        if keep:
            analysis.pin_matching(keep)
        if exact:
            analysis.pin_approximate()
        fallbacks, stats, budget_outcome = 0, {}, None
        if criterion == AUTO:
            criterion = default_criterion(needed_statistics(analysis), repair_mode) if samples else "l2"
        if samples and (criterion in ACTIVATION_CRITERIA or repair_mode != "none"):
            wanted = needed_statistics(analysis)
            stats = collect_statistics(traced, fit, wanted,
                                       gram=set(wanted) if criterion == "reconstruction" else frozenset())
        if plan_source is not None:
            plan = plan_from_kept(analysis, read_plan(plan_source), target="torch")
        else:
            if criterion in TORCH_CRITERIA:
                with step(f"importance ({criterion})"):
                    scores, fallbacks = torch_importance(traced, analysis, criterion, fit or [inputs], loss_fn)
            elif criterion in ACTIVATION_CRITERIA:
                scores, fallbacks = activation_importance(analysis, stats, criterion)
            else:
                scores = importance(analysis, criterion)
            if budget is not None:
                plan, budget_outcome = select_for_budget(analysis, scores, budget, round_to, max_group_ratio,
                                                         allocation)
            else:
                plan = select(analysis, scores, ratio, global_ranking, round_to, max_group_ratio, allocation)
        repair = None
        if repair_mode != "none" and plan.channels_removed:
            if repair_mode == "lsq" and criterion != "reconstruction":  # else every Gram is there
                pruned_inputs = repair_inputs(analysis, plan, stats)
                stats.update(collect_statistics(traced, fit, pruned_inputs, gram=set(pruned_inputs)))
            repair = plan_repair(analysis, plan, stats, repair_mode)
        originals = float_outputs(traced.gm, held_out) if samples else []
        reference, checks, noise, uncovered, graphs, before = None, [tuple(inputs)], 0.0, [], [], None
        if verify:
            with step("verification: oracle outputs"):
                reference, checks, uncovered, graphs = reference_outputs(traced, plan, check_inputs(inputs),
                                                                         replay=replay)
            if any(g.gm is traced.gm for g in graphs):  # for the noise floor, measured only if the tolerance
                before = snapshot(traced.gm)  # is exceeded (emission edits the traced graph)
            graphs = [OracleGraph(before, g.masks, g.norms) if g.gm is traced.gm else g for g in graphs]
        # the sequential refit fits the pruned linears to the original's outputs: keep a copy
        original = copy.deepcopy(module) if repair_mode == "lsq" and plan.channels_removed else None
        with step("emission"):
            emission = emit_torch(traced, plan)
        approx = next((analysis.groups[g].approximate for g in plan.removed
                       if plan.removed[g].any() and analysis.groups[g].approximate), None)
        if approx is not None and verify and not uncovered:
            approx = None  # every statistic over a pruned axis was taken over kept channels: exact
        repaired = []
        try:
            with step("verification" if verify else "checking the returned module"):
                # with the oracle, it decides whether the original class still works
                if verify and approx is None:
                    pruned, verification, repaired, rounding, outputs = _verify_first_passing(
                        traced, emission, reference, checks, tolerance)
                    if rounding:  # the oracle's own rounding may explain it
                        if any(g.gm is None for g in graphs):
                            raise NeedsGraphs("the noise floor runs the oracle's graph at each check")
                        with step("verification: noise floor"):
                            noise = noise_floor(traced, plan, checks, reference, graphs)
                        if NOISE_MARGIN * noise > tolerance:
                            tolerance = NOISE_MARGIN * noise
                            pruned, verification, repaired, _, outputs = _verify_first_passing(
                                traced, emission, reference, checks, tolerance)
                        verification.noise_floor = noise
                    del before, graphs
                else:
                    pruned, repaired = _choose(traced, emission, checks)
                    _set_mode(pruned, False)
                    outputs = []
                    verification = (compare_outputs(reference, pruned, checks, tolerance, approx, outputs) if verify
                                    else Verification("skipped", tolerance=tolerance))
                if traced.tracer == CONCRETE and (pruned is not module or not verification.ok):
                    raise NeedsExport("the pruned class does not reproduce the concrete oracle: the "
                                      "shape-generic trace decides (and gives the graph if it must be returned)")
        except BaseException:
            emission.rollback()
            raise
        if not verification.ok:
            emission.rollback()
            raise VerificationError(f"verification failed: {verification.message}", verification)
        with step("repair") if samples else contextlib.nullcontext():
            calibrated = apply_repair(pruned, traced, emission, repair, fit, held_out, originals,
                                      _recalibrate(calibration, samples),
                                      original if pruned is module else None) if samples else None
        del original
    verification.shapes = [[list(x.shape) for x in c if isinstance(x, torch.Tensor)] for c in checks]
    sliced = {name: axes for name, axes in emission.sliced.items() if name in traced.params}
    settings = {"ratio": ratio, "importance": criterion, "global": global_ranking, "round_to": round_to,
                "keep": keep, "exact": exact, "max_group_ratio": max_group_ratio, "repair": repair_mode,
                "allocation": allocation}
    if calibration.budget is not None:
        settings["target_" + calibration.budget.metric] = calibration.budget.target
    if plan_source is not None:
        settings = {"plan": str(plan_source) if not isinstance(plan_source, dict) else "(report dict)"}
    report = build_report(plan, sliced, (params_before, _params(pruned)), (macs_before, total_macs(graph)),
                          verification, settings)
    report["torch"] = {
        "tracer": traced.tracer,
        "returned": "original module" if pruned is module else "torch.fx.GraphModule",
        "repaired_attributes": repaired,
        "stale_attributes": stale_attributes(traced, emission) if pruned is not module else [],
        "rewritten_literals": emission.literals,
        "untranslated_calls": traced.untranslated,
        "importance_fallbacks": fallbacks,
        "plan_skipped": plan.skipped,
        "noise_floor": noise,
        "seconds": round(time.perf_counter() - start, 3),
    }
    if budget_outcome is not None:
        report["budget"] = budget_outcome
    if rotation is not None:
        report["rotation"] = rotation
    if calibrated is not None:
        report["calibration"] = calibration_report([batch_rows(b) for b in samples], fit, held_out, len(stats),
                                                   calibrated)
    if pruned is module and is_hf_model(module):
        # the verification's outputs of the module stand for a forward before the fit (none if calibrated after)
        report["hf"] = _fit_hf_config(module, plan, checks[0], repaired, outputs[0] if outputs and not samples
                                      else None)
    _set_mode(pruned, was_training)
    return TorchPruneResult(pruned, report, plan, verification, traced)


def _fit_hf_config(module, plan, inputs, repaired: list[str], before=None) -> dict:
    """Make ``module.config`` describe the pruned sizes (see :mod:`graphprune.hf`), unless the
    forward reads a fitted field (Gemma scales embeddings by √hidden_size): then it stays as is
    and :func:`graphprune.hf.from_pretrained` rebuilds the sizes from the saved sidecar. The
    config fields the attribute repair set already (Phi-3 reads its head count from the
    config) are among the edits reported. ``before``: the module's outputs on ``inputs`` now,
    if known (the verification ran it)."""
    table = plan.analysis.table
    changed: dict[int, set[int]] = {}
    for did in plan.changed_dims():
        kept = plan.kept(did)
        if kept is not None and isinstance(table.sizes[did], int):
            changed.setdefault(table.sizes[did], set()).add(len(kept))
    with build_memo():
        with without_cache(module):
            fits, edits = fit_config(module, changed)
            if fits and before is None:  # the outputs with the config as it was
                undo_edits(module.config, edits)
                before = _forward(module, inputs)
                for key, (_, new) in edits.items():
                    setattr(module.config, key, new)
            same = fits and _same_outputs(before, _forward(module, inputs)) and rebuilt_buffers_agree(module)
            if same:
                undo = sync_attributes(module)
                if undo and not _same_outputs(before, _forward(module, inputs)):
                    for step in reversed(undo):
                        step()
        if not same:
            undo_edits(module.config, edits)
        veto = validation_veto(module, changed) if not fits else ""
    reason = "" if same else (f"the config's own validation refuses the pruned sizes ({veto}); a round_to "
                              "that keeps them valid (e.g. the head count) lets the config state them" if veto
                              else ("no setting of the config's size fields rebuilds these shapes (sizes "
                                    "that differ by layer, or one the class derives from others)") if not fits
                              else "the forward or a buffer rebuilt on reload reads a field the fit "
                                   "would change")
    for change in repaired:  # "config.field: old -> new"
        if change.startswith("config.") and same:
            field, sizes = change[len("config."):].split(": ")
            edits = {field: tuple(int(v) for v in sizes.split(" -> ")), **edits}
    return {"config_fits": same, "config_edits": {k: list(v) for k, v in edits.items()} if same else {},
            "reload": "transformers from_pretrained" if same else "graphprune.hf.from_pretrained",
            "reason": reason}


def _same_outputs(a, b) -> bool:
    x = [t for t in pytree.tree_leaves(a) if isinstance(t, torch.Tensor)]
    y = [t for t in pytree.tree_leaves(b) if isinstance(t, torch.Tensor)]
    return len(x) == len(y) and all(p.shape == q.shape and torch.equal(p, q) for p, q in zip(x, y))


NOISE_MARGIN = 16  # a correct prune stays within this many times the oracle's own float32 rounding


@contextlib.contextmanager
def without_cache(module: torch.nn.Module):
    """Trace and check with ``config.use_cache`` off (Hugging Face models as loaded have it on).

    A key/value cache in the outputs is a container no tracer can return;
    the cache is not part of the function being pruned, and the original
    class, when returned, still builds and uses its cache.
    """
    configs = {id(c): c for m in module.modules() if (c := getattr(m, "config", None)) is not None
               and getattr(c, "use_cache", None)}  # encoder-decoders keep a copy per stack
    for c in configs.values():
        c.use_cache = False
    try:
        yield
    finally:
        for c in configs.values():
            c.use_cache = True


def _verify_first_passing(traced: FxModel, emission, reference, checks, tolerance):
    """The original module if it reproduces the oracle (as is, or with its size attributes
    repaired), else the GraphModule; with the verdict, the repaired attributes and whether
    any candidate failed on rounding alone (then the noise floor may explain it, even where
    the last candidate tried, a concrete trace's graph, cannot run at the other shape), and the
    returned model's outputs on the checks (the config fit compares against them)."""
    module = traced.module
    _set_mode(module, False)
    got: list = []
    verification = compare_outputs(reference, module, checks, tolerance, None, got)
    if verification.ok:
        return module, verification, [], False, got
    numeric = _numeric_failure(verification)
    changes, undo = repair_attributes(traced, emission, lambda: _forward(module, checks[0]))
    if changes:
        got = []
        repaired = compare_outputs(reference, module, checks, tolerance, None, got)
        if repaired.ok:
            emission.restore.extend(undo)
            return module, repaired, changes, False, got
        numeric = numeric or _numeric_failure(repaired)
        for step in reversed(undo):
            step()
    _set_mode(traced.gm, False)
    got = []
    verification = compare_outputs(reference, traced.gm, checks, tolerance, None, got)
    return traced.gm, verification, [], numeric or _numeric_failure(verification), got


def _numeric_failure(verification) -> bool:
    """Failed on a finite relative error alone (not a shape, a crash or an integer output)."""
    return (verification.status == "failed" and math.isfinite(verification.max_relative_error)
            and verification.max_relative_error > verification.tolerance)


def _choose(traced: FxModel, emission, checks) -> tuple[torch.nn.Module, list[str]]:
    """The original module if it still runs and agrees with the pruned graph on every check input
    (as is, or with its size attributes repaired), else the graph."""
    module, gm = traced.module, traced.gm
    if traced.tracer != "symbolic_trace" and not emission.sliced:
        return module, []
    if _agrees(module, gm, checks):
        return module, []
    changes, undo = repair_attributes(traced, emission, lambda: _forward(module, checks[0]))
    if changes and _agrees(module, gm, checks):
        emission.restore.extend(undo)
        return module, changes
    for step in reversed(undo):
        step()
    return gm, []


def _budget_of_original(budget, params_before: int, params_now: int):
    """A parameter budget stays a fraction of the module as given, also when untying
    embeddings for a rotation added parameters."""
    if budget is None or budget.metric != "params" or params_now == params_before:
        return budget
    return Budget("params", min(1.0, budget.target * params_before / params_now))


def _recalibrate(calibration: Calibration, samples) -> bool:
    return bool(samples) if calibration.recalibrate_bn is None else calibration.recalibrate_bn


def _forward(module, inputs):
    with torch.no_grad():
        return module(*inputs)


def _agrees(module, gm, checks) -> bool:
    _set_mode(module, False)
    with torch.no_grad():
        for inputs in checks:
            try:
                expected = gm(*inputs)
                got = module(*inputs)
            except Exception:
                return False
            a = [t for t in pytree.tree_leaves(expected) if isinstance(t, torch.Tensor)]
            b = [t for t in pytree.tree_leaves(got) if isinstance(t, torch.Tensor)]
            if len(a) != len(b) or any(x.shape != y.shape or not torch.allclose(x, y, rtol=1e-4, atol=1e-5)
                                       for x, y in zip(a, b)):
                return False
    return True
