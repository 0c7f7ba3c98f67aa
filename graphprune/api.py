"""The Python entry points; the CLI is a thin layer over these."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import numpy as np
import onnx

from .activation_importance import AUTO
from .budget import budget_from
from .calibration import calibration_report, load_npz, split_held_out, take
from .latency import macs_for_latency
from .channels import ChannelAnalysis, analyse
from .channels import gqa_heads as gqa_heads_mode
from .emit.onnx import save_onnx, to_onnx
from .errors import InputError, VerificationError
from .gc_heap import heap_frozen
from .frontends.onnx import load_onnx, read_model
from .ir import Graph
from .metrics import layer_table, total_macs
from .report import build_report, group_summary, pinned_parameter_groups
from .selection import Plan
from .pipeline import Pass, build_pipeline
from .plan_io import read_plan
from .progress import reporting, step as progress_step
from .verify import Verification, compare, verify_prune
from .onnx_calibration import apply_onnx_repair
from .onnx_rotation import rotate_onnx_streams
from .passes.prune_channels import PruneChannels
from .repair import REPAIRS

@dataclass
class PruneResult:
    """``model``: the pruned ModelProto; ``report``: the ``--report`` dict."""

    model: onnx.ModelProto
    report: dict
    plan: Plan
    verification: Verification


def load(model, input_shapes: dict | None = None) -> Graph:
    """Read an ONNX path or ModelProto into the IR (shapes inferred, shape arithmetic folded).

    ``input_shapes`` (input name → sizes) fixes dynamic axes for metrics and verification.
    """
    return load_onnx(model, input_shapes=input_shapes)


def save(model, path: str | os.PathLike, external_data: bool | None = None, shard_bytes: int | None = None):
    """Write a ModelProto (or IR graph) atomically; external data for models over 2 GB and for
    memory-mapped ones, split into files of at most ``shard_bytes`` when given."""
    if isinstance(model, Graph):
        model = to_onnx(model)
    if not isinstance(model, onnx.ModelProto):
        raise InputError(f"save() takes an onnx.ModelProto or graphprune Graph, not {type(model).__name__}")
    with progress_step(f"writing {os.fspath(path)}"):
        return save_onnx(model, path, external_data, shard_bytes)


def _gqa_mode(fn):
    """Decorator: the call analyses grouped-query attention as its keyword ``gqa_heads``
    (see :func:`graphprune.channels.gqa_heads`); None keeps the enclosing mode ("kv" by default)."""
    @functools.wraps(fn)
    def inner(*args, **kwargs):
        if kwargs.get("gqa_heads") is None:
            return fn(*args, **kwargs)
        with gqa_heads_mode(kwargs["gqa_heads"]):
            return fn(*args, **kwargs)
    return inner


@heap_frozen
@reporting
@_gqa_mode
def inspect(model, input_shapes: dict | None = None, *, progress=None, gqa_heads: str | None = None) -> dict:
    """Channel groups (prunable and pinned, with reasons), params and MACs per layer.

    MACs are counted at ``input_shapes`` where inputs have dynamic axes (else at
    the first shape the oracle would try); ``macs_at`` says which. ``progress``:
    see :mod:`graphprune.progress` (silent by default).
    """
    return inspect_analysis(model, input_shapes, gqa_heads=gqa_heads)[0]


@_gqa_mode
def inspect_analysis(model, input_shapes: dict | None = None, *, gqa_heads: str | None = None) -> tuple[dict, ChannelAnalysis]:
    """:func:`inspect`'s dict and the channel analysis it came from (for reports that show
    which tensors each group couples)."""
    with progress_step("load + shape inference"):
        graph = load_onnx(model, input_shapes=input_shapes)
    analysis = analyse(graph)
    return {
        "params": graph.param_count(),
        "macs": total_macs(graph),
        "macs_at": metric_shapes(graph),
        "groups": [group_summary(analysis, g) for g in analysis.prunable_groups()],
        "pinned": pinned_parameter_groups(analysis),
        "layers": layer_table(graph),
    }, analysis


@heap_frozen
@reporting
@_gqa_mode
def prune(model, ratio: float = 0.5, importance: str | None = None, global_ranking: bool = False,
          round_to: int = 1, keep: str | None = None, verify: bool = True,
          max_group_ratio: float = 0.9, tolerance: float = 1e-4, plan=None,
          example_inputs=None, loss_fn=None, input_shapes: dict | None = None, exact: bool = False,
          calibration=None, calibration_samples: int | None = None, repair: str = "auto",
          recalibrate_bn: bool | None = None, target_macs: float | None = None,
          target_params: float | None = None, target_latency: float | None = None, rotate: bool = False,
          *, progress=None, gqa_heads: str | None = None, allocation: str = "normalised"):
    """Structurally prune an ONNX model or a PyTorch module.

    Args:
        model: path to an ``.onnx`` file, an ``onnx.ModelProto``, or a
            ``torch.nn.Module`` (then ``example_inputs`` is required and the
            result's ``.model`` is the pruned module; see :mod:`graphprune.torch_prune`).
        ratio: fraction of each group's channels to remove (``[0, 1)``).
        importance: ``"l1"`` or ``"l2"`` norm over every parameter slice of a
            channel; for modules also ``"taylor"`` (``Σ|w·∂L/∂w|``, with
            ``loss_fn(output)``) and ``"bn_scale"`` (``|γ|``, network slimming);
            with calibration data ``"activation"`` (``‖W[:, j]‖·‖x_j‖``, the
            default then), ``"fluctuation"`` (``‖W[:, j]‖·std(x_j)``) and
            ``"reconstruction"`` (the error a least-squares refit leaves), see
            :mod:`graphprune.activation_importance`. Default: ``"l2"``; with
            calibration data the criterion matching ``repair`` (none:
            activation, bias: fluctuation, lsq: reconstruction when its Gram
            matrices fit in 2 GB, else activation).
        global_ranking: rank channels across groups instead of per group.
        round_to: keep a multiple of this many channels per group.
        keep: regex; groups touching a matching node or tensor name are not pruned.
        verify: check the result against the oracle (raises ``VerificationError``).
        max_group_ratio: with ``global_ranking``, the most any group may lose.
        allocation: how the global ranking (and a budget) compares groups:
            ``"normalised"`` (each score over its group's mean) or ``"cost"``
            (squared removal error per parameter removed, per MAC under
            ``target_macs``; for the activation-aware criteria); see :mod:`graphprune.selection`.
        tolerance: relative error allowed by the oracle.
        plan: replay a previous prune instead of choosing channels: a report
            dict or the path of a ``--report`` JSON (its ``initializers``).
            Reports are keyed by parameter names, so a plan made on a module
            replays on its ONNX export and vice versa.
        example_inputs: a tensor or tuple of tensors (modules only).
        loss_fn: ``output -> scalar`` for ``taylor`` importance (modules only).
        input_shapes: input name → sizes for inputs with dynamic axes (ONNX):
            the shapes verification runs at first and MACs are counted at.
        exact: prune only groups the oracle checks exactly: groups normalised
            by a LayerNorm/RMSNorm (the residual stream of a transformer, its
            hidden size) are kept instead of being pruned as *approximate*.
        calibration: samples for activation statistics (modules: an iterable
            or ``DataLoader`` of tensors, input tuples — a longer tuple such as
            ``(inputs, labels)`` is cut to the model's inputs — or dicts keyed
            by ``forward``'s argument names). A quarter of the batches (at
            least one, when there are two or more) is held out to judge the repair.
        calibration_samples: use at most this many calibration samples.
        repair: ``"lsq"`` (least-squares re-fit of each consumer of a removed
            channel, bias folded in), ``"bias"`` (bias compensation only),
            ``"none"``; ``"auto"``: ``lsq`` with calibration data. A repair
            step that raises the held-out output error is undone.
        recalibrate_bn: re-estimate BatchNorm statistics on the calibration
            data after pruning (default: with calibration data; on ONNX the
            ``BatchNormalization`` nodes an exporter left unfolded).
        target_macs, target_params: a budget instead of a ratio: keep at most
            this fraction of the MACs (or parameters), channels ranked globally
            (see :mod:`graphprune.budget`); ``report["budget"]`` gives the
            achieved fraction.
        target_latency: (ONNX) keep at most this fraction of the onnxruntime
            latency, measured at the verification shapes; met through the
            MACs budget a secant search finds (see :mod:`graphprune.latency`).
        rotate: before pruning, rotate every residual stream read
            through RMSNorms into the principal axes of its calibration
            activations, norm scales folded into their readers (SliceGPT's
            idea with one rotation, see :mod:`graphprune.rotation`); checked
            to leave the function unchanged, reported in ``report["rotation"]``.
            Hidden-size pruning then removes low-energy directions. Tied
            input/output embeddings are untied (the LM head gets a copy).
        gqa_heads: how grouped-query attention is pruned: ``"kv"`` (the default; None keeps
            an enclosing ``graphprune.channels.gqa_heads`` block's mode)
            removes whole key/value groups (a kv head with its query heads);
            ``"query"`` keeps every kv head and removes the same query heads
            inside every kv group; ``"both"`` offers both.
        progress: who hears about the long steps (load, shape inference,
            grouping, importance, calibration, emission, verification): None
            keeps the current reporter (silent unless the CLI installed one),
            True shows bars on stderr, a callable gets a
            :class:`graphprune.progress.Event` per start/advance/end; see
            :mod:`graphprune.progress`.
    """
    if target_latency is not None:
        if _is_torch_module(model):
            raise InputError("target_latency is measured in onnxruntime: prune the ONNX export, or give "
                             "target_macs for a module")
        if target_macs is not None or target_params is not None:
            raise InputError("give one budget: --target-latency, --target-macs or --target-params")
        source = read_model(model)
        options = dict(ratio=ratio, importance=importance, global_ranking=global_ranking, round_to=round_to,
                       keep=keep, max_group_ratio=max_group_ratio, input_shapes=input_shapes, exact=exact,
                       calibration=calibration, calibration_samples=calibration_samples, rotate=rotate,
                       allocation=allocation)
        macs, measured = macs_for_latency(
            lambda m: prune(source, verify=False, repair="none", target_macs=m, **options).model,
            source, target_latency, input_shapes)
        result = prune(source, verify=verify, tolerance=tolerance, repair=repair, target_macs=macs, **options)
        measured["macs"] = result.report["budget"]
        result.report["budget"] = measured
        result.report["settings"]["target_latency"] = target_latency
        return result
    budget = budget_from(target_macs, target_params)
    if _is_torch_module(model):
        from .torch_prune import prune_module

        from .torch_prune import Calibration

        return prune_module(model, ratio, example_inputs, importance, global_ranking, round_to, keep,
                            verify, max_group_ratio, tolerance, plan, loss_fn, exact,
                            Calibration(calibration, calibration_samples, repair, recalibrate_bn, budget, rotate),
                            allocation=allocation)
    batches = onnx_calibration_batches(calibration, calibration_samples)
    fit, held_out = split_held_out(batches)
    importance = importance or (AUTO if batches else "l2")
    repair = repair if repair != "auto" else ("lsq" if batches else "none")
    if repair not in REPAIRS:
        raise InputError(f"unknown repair '{repair}': choose one of auto, {', '.join(REPAIRS)}")
    with progress_step("load"):
        source = read_model(model)
    if batches:
        _check_calibration_inputs(source, batches, calibration)
    with progress_step("shape inference"):
        graph = load_onnx(source, input_shapes=input_shapes, validated=True)
    macs_at = metric_shapes(graph)
    rotation, oracle_source = None, source
    if rotate:
        if not batches:
            raise InputError("--rotate needs calibration data (--calibration FILE.npz): the rotation is "
                             "chosen from the residual stream's activations")
        if not exact:
            rotation = rotate_onnx_streams(graph, fit, held_out or fit[:1])
            if rotation["rotated"]:
                oracle_source = to_onnx(graph)  # the oracle zeroes channels of the rotated model
    step = PruneChannels(ratio=ratio, importance=importance, global_ranking=global_ranking,
                         round_to=round_to, keep=keep or "", exact=exact, max_group_ratio=max_group_ratio,
                         allocation=allocation,
                         target_macs=budget.target if budget and budget.metric == "macs" else 0.0,
                         target_params=budget.target if budget and budget.metric == "params" else 0.0,
                         repair=repair, calibration=fit,
                         replay=read_plan(plan) if plan is not None else None)
    outcome = step(graph)  # reports its own steps (prune-channels: grouping, importance, ...)
    with progress_step("emission"):
        pruned = to_onnx(graph)
    with progress_step("verification"):
        verification = (verify_prune(oracle_source, pruned, step.plan, tolerance, input_shapes=input_shapes,
                                     calibration=batches or None) if verify
                        else Verification("skipped", tolerance=tolerance))
    settings = {"ratio": ratio, "importance": step.importance, "global": global_ranking,
                "round_to": round_to, "keep": keep, "exact": exact, "max_group_ratio": max_group_ratio,
                "repair": repair, "allocation": allocation}
    if budget is not None:
        settings["target_" + budget.metric] = budget.target
    if plan is not None:
        settings = {"plan": str(plan) if not isinstance(plan, dict) else "(report dict)"}
    if not verification.ok:
        raise VerificationError(f"verification failed: {verification.message}", verification)
    calibrated = None
    if batches:
        with progress_step("repair"):
            pruned, calibrated = apply_onnx_repair(source, pruned, step.planned_repair, step.sliced, fit, held_out,
                                                   recalibrate_bn is not False)
    report = build_report(step.plan, step.sliced, outcome.params, outcome.macs, verification, settings)
    report["macs_at"] = macs_at
    if plan is not None:
        report["plan_skipped"] = step.plan.skipped
    if step.budget_outcome is not None:
        report["budget"] = step.budget_outcome
    if rotation is not None:
        report["rotation"] = rotation
    if calibrated is not None:
        report["calibration"] = calibration_report([_batch_rows(b) for b in batches], fit, held_out,
                                                   step.statistics, calibrated)
    return PruneResult(pruned, report, step.plan, verification)


def _check_calibration_inputs(model: onnx.ModelProto, batches: list[dict], calibration) -> None:
    """Every model input has a calibration array and no array names something else."""
    inits = {i.name for i in model.graph.initializer}
    names = [i.name for i in model.graph.input if i.name not in inits]
    where = f"calibration data '{calibration}'" if isinstance(calibration, (str, os.PathLike)) \
        else "calibration data"
    for batch in batches[:1]:
        missing = [n for n in names if n not in batch]
        extra = sorted(set(batch) - set(names))
        if missing or extra:
            raise InputError(f"{where}: the model's inputs are {', '.join(names)}; "
                             + (f"no array for {', '.join(missing)}" if missing else "")
                             + ("; " if missing and extra else "")
                             + (f"arrays {', '.join(extra)} match no input" if extra else ""))


def _batch_rows(batch: dict) -> int:
    return int(next(iter(batch.values())).shape[0]) if batch else 0


def onnx_calibration_batches(calibration, limit: int | None) -> list[dict]:
    """Calibration for an ONNX model: a ``.npz`` path or directory, or an iterable of feed dicts
    (input name → array, the first axis the batch)."""
    if calibration is None:
        return []
    if isinstance(calibration, (str, os.PathLike)):
        return load_npz(calibration, limit)
    batches = take([calibration] if isinstance(calibration, dict) else calibration, None)
    for b in batches:
        if not isinstance(b, dict):
            raise InputError("calibration for an ONNX model is a .npz file or directory, or feed dicts "
                             f"(input name -> array); got a {type(b).__name__}")
    out, seen = [], 0
    for b in batches:
        rows = _batch_rows(b)
        if limit is not None and seen + rows > limit:
            b = {k: np.asarray(v)[:limit - seen] for k, v in b.items()}
        out.append({k: np.asarray(v) for k, v in b.items()})
        seen += _batch_rows(out[-1])
        if limit is not None and seen >= limit:
            break
    if not out:
        raise InputError("the calibration data is empty")
    return out


def _is_torch_module(model) -> bool:
    torch = __import__("sys").modules.get("torch")
    return torch is not None and isinstance(model, torch.nn.Module)


def metric_shapes(graph: Graph) -> dict[str, list]:
    """The input shapes MACs are counted at (symbols replaced by ``graph.symbol_values``)."""
    from .symbolic import evaluate

    return {name: [evaluate(d, graph.symbol_values, default=1) for d in (graph.shape(name) or ())]
            for name in graph.inputs}


@heap_frozen
@reporting
def run_pipeline(model, pipeline, verify: bool = True, input_shapes: dict | None = None, *, progress=None):
    """Run a pipeline (a Pipeline, a spec string or TOML path) on a model.

    Returns ``(ModelProto, PassResult)``. With ``verify``, a lossless pipeline
    is checked end to end against the input model (the result must reproduce
    it); when that check fails, the pipeline is run again from the input with
    every pass checked as it runs, so the error names the pass at fault. A
    pipeline with a lossy pass checks every modifying pass as it runs
    (lossless ones against their input, pruning against its oracle).
    ``progress``: see :func:`prune`.
    """
    if not isinstance(pipeline, Pass):
        pipeline = build_pipeline(pipeline)
    with progress_step("load"):
        source = read_model(model)
    with progress_step("shape inference"):
        graph = load_onnx(source, input_shapes=input_shapes, validated=True)
    lossless = pipeline.lossless
    result = pipeline(graph, verify=verify and not lossless)
    with progress_step("emission"):
        out = to_onnx(graph)
    if verify and result.modified and lossless:
        with progress_step("verification (end to end)"):
            end_to_end = compare(source, out, input_shapes=input_shapes)
        if not end_to_end.ok:
            # run again, every pass checked: raises naming the pass at fault
            pipeline(load_onnx(source, input_shapes=input_shapes, validated=True), verify=True)
            raise VerificationError(f"pipeline: {end_to_end.message}", end_to_end)
        result.verification = end_to_end
    return out, result


@heap_frozen
@reporting
def fold(model, verify: bool = True, input_shapes: dict | None = None, *, progress=None):
    """The default lossless pipeline (``graphprune fold``), to a fixed point; ``progress``: see
    :func:`prune`."""
    import graphprune.passes as builtin

    names = [n for n in builtin.DEFAULT_FOLD if n in builtin.PASSES]
    return run_pipeline(model, build_pipeline([(n, {}) for n in names], fixed_point=True), verify,
                        input_shapes)


def analyse_model(model) -> ChannelAnalysis:
    """The channel analysis of a model (for tools that want the groups themselves)."""
    return analyse(load_onnx(model))
