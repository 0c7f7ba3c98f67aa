"""The verification oracle (DESIGN.md), run in onnxruntime.

Oracle: take the *original* model and zero every removed channel where it is
consumed — the contracted input of each Conv/Gemm/MatMul — with
``Where(mask, x, 0)`` (not ``x * mask``, so an inf or NaN in a removed channel
cannot leak through ``0 · inf``; models older than opset 9, which lack
``Where``, get ``x * mask``). If only channel-wise ops lie between
producers and contractions, the pruned model must reproduce this oracle on
any input; we check inputs from :mod:`.feeds` (realistic sizes for dynamic
axes, valid integer indices, two draws) to a relative error below
``tolerance`` (per dtype), at the graph outputs *and* right after every
contraction that reads a pruned group, so an output that saturates (a
sigmoid near 0, an argmax) cannot hide a wrong slice.

Groups marked approximate (a LayerNorm over the pruned axis, say) change the
function by design; when any of them was pruned the check is downgraded to
"same output shapes and all values finite".
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .errors import InputError, shorten
from .ort_types import ort_feeds, ort_values, readable
from .progress import step
from .weights import has_references, tensor_array



@dataclass
class Verification:
    status: str  # "exact" | "approximate" | "failed" | "skipped"
    max_relative_error: float = 0.0
    outputs: dict[str, float] = field(default_factory=dict)
    tolerance: float = 1e-4
    message: str = ""
    shapes: list = field(default_factory=list)  # the input shapes of each run
    noise_floor: float = 0.0  # the oracle's own float rounding on these inputs (see compare)
    regions: int = 0  # >0: the models ran region by region (graphprune.regions), in this many parts

    @property
    def ok(self) -> bool:
        return self.status != "failed"

    def to_dict(self) -> dict:
        return {"status": self.status, "max_relative_error": self.max_relative_error,
                "tolerance": self.tolerance, "outputs": self.outputs, "message": self.message,
                "noise_floor": self.noise_floor, "regions": self.regions,
                "shapes": self.shapes}


def session(model: onnx.ModelProto, optimize: bool = True, widen: bool = False):
    """An onnxruntime session; models over 2 GB go through a temporary file. ``optimize=False``
    runs the graph as written (no fusions): other rounding, the same function. ``widen``: the
    model computed in float64, float32 for a half-precision one (:func:`widened_type`).

    A model whose weights exceed ``regions.SESSION_BYTES`` (once widened) gets a
    :class:`~graphprune.regions.RegionSession` instead: the same calls, run region by
    region so memory stays bounded."""
    import onnxruntime as ort

    from .regions import SESSION_BYTES, RegionSession, tensor_bytes

    opts = ort.SessionOptions()
    opts.log_severity_level = 4  # errors reach the user through our own messages
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    to = widened_type(model) if widen else 0
    if sum(tensor_bytes(t, to) for t in model.graph.initializer) > SESSION_BYTES:
        return RegionSession(model, opts, widen=to)
    if widen:
        model = as_float64(model, to)
    if has_references(model):  # weights on disk: handed over as mapped arrays, no copy
        arrays = {t.name: tensor_array(t) for t in model.graph.initializer
                  if t.data_location == onnx.TensorProto.EXTERNAL}
        values = ort_values(arrays)
        opts.add_external_initializers(list(values), list(values.values()))
        sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        sess.graphprune_weights = (arrays, values)  # the mapped arrays must outlive the session
        return sess
    try:
        return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    except ValueError:  # protobuf refuses to serialise over 2 GB
        pass
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.onnx")
        onnx.save(model, path, save_as_external_data=True, location="model.data")
        return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def random_inputs(sess, seed: int = 0, symbolic: int = 1) -> dict[str, np.ndarray]:
    """Random feeds for every input of a session: normal floats, zero integers,
    symbolic sizes set to ``symbolic`` (for callers without a model; the oracle uses :mod:`.feeds`)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for inp in sess.get_inputs():
        shape = [d if isinstance(d, int) else symbolic for d in inp.shape]
        kind = inp.type[len("tensor("):-1]
        if "float" in kind or kind == "double":
            dtype = {"float": np.float32, "double": np.float64, "float16": np.float16}.get(kind, np.float32)
            feeds[inp.name] = rng.standard_normal(shape).astype(dtype)
        elif kind == "bool":
            feeds[inp.name] = np.zeros(shape, dtype=bool)
        else:
            feeds[inp.name] = np.zeros(shape, dtype=np.int64 if kind == "int64" else np.int32)
    return feeds


def oracle_model(original: onnx.ModelProto, plan) -> onnx.ModelProto:
    """The original model with removed channels zeroed at every contraction input."""
    table = plan.analysis.table
    graph = plan.analysis.graph
    masks: dict[str, list] = {}
    for c in table.contractions:
        kept = plan.kept(c.dim)
        if kept is not None:
            masks.setdefault(c.anchor, []).append((c, kept))
    model = onnx.ModelProto()
    model.CopyFrom(original)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
    nodes = []
    for node in model.graph.node:
        for c, kept in masks.get(node.output[0] if node.output else "", []):
            info = graph.tensors.get(c.tensor)
            dtype = info.dtype if info is not None and info.dtype is not None else np.dtype(np.float32)
            shape = [1] * c.rank
            shape[c.axis] = table.sizes[c.dim]
            mask = np.zeros(shape[c.axis], dtype=bool)
            mask[kept] = True
            base = f"graphprune_oracle_{len(nodes)}_{c.input_index}"
            if opset >= 9:  # Where: an inf or NaN in a removed channel cannot leak
                model.graph.initializer.extend([
                    numpy_helper.from_array(mask.reshape(shape), base + "_mask"),
                    numpy_helper.from_array(np.zeros((), dtype=dtype), base + "_zero")])
                nodes.append(helper.make_node("Where", [base + "_mask", c.tensor, base + "_zero"],
                                              [base + "_out"], name=base))
            else:  # Where does not exist before opset 9
                model.graph.initializer.append(
                    numpy_helper.from_array(mask.reshape(shape).astype(dtype), base + "_mask"))
                nodes.append(helper.make_node("Mul", [c.tensor, base + "_mask"], [base + "_out"], name=base))
            node.input[c.input_index] = base + "_out"
        nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    del model.graph.value_info[:]
    return model


DTYPE_TOLERANCE = {"float16": 1e-2, "bfloat16": 4e-2, "float32": 1e-4, "float64": 1e-8, "complex64": 1e-4,
                   "complex128": 1e-8, "float8_e4m3fn": 0.25, "float8_e4m3fnuz": 0.25, "float8_e5m2": 0.5,
                   "float8_e5m2fnuz": 0.5}
COARSE = ("float16", "bfloat16", "float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz")
RUNS = 2  # input draws per check, each at its own shapes where the model allows


def tolerance_for(dtype: np.dtype, tolerance: float) -> float:
    """``tolerance`` is the float32 figure; coarser types get their own floor, float64 a finer one."""
    name = np.dtype(dtype).name
    if name in ("float32", "complex64") or name not in DTYPE_TOLERANCE:
        return tolerance
    return max(tolerance, DTYPE_TOLERANCE[name]) if name in COARSE else min(tolerance, DTYPE_TOLERANCE[name])


def is_float(dtype) -> bool:
    """Float and complex types, including those numpy only knows through ml_dtypes (bfloat16, float8)."""
    dtype = np.dtype(dtype)
    return dtype.kind in "fc" or "float" in dtype.name


def relative_error(expected: np.ndarray, actual: np.ndarray) -> float:
    """max |e - a| / max |e| over finite positions; NaN/Inf must sit at the same places (else inf)."""
    expected, actual = np.asarray(expected), np.asarray(actual)
    if not is_float(expected.dtype):
        return 0.0 if np.array_equal(expected, actual) else float("inf")
    if expected.dtype.kind == "c":  # real and imaginary parts side by side
        expected, actual = np.stack([expected.real, expected.imag]), np.stack([actual.real, actual.imag])
    e64, a64 = expected.astype(np.float64), actual.astype(np.float64)
    finite = np.isfinite(e64)
    if not np.array_equal(finite, np.isfinite(a64)) or not np.array_equal(e64[~finite], a64[~finite],
                                                                            equal_nan=True):
        return float("inf")
    if not finite.any():
        return 0.0
    scale = max(float(np.max(np.abs(e64[finite]))), 1e-6)
    return float(np.max(np.abs(e64[finite] - a64[finite]))) / scale


def _with_outputs(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    """A copy of ``model`` that also returns the tensors ``names`` (internal checkpoints)."""
    present = {o.name for o in model.graph.output}
    extra = [n for n in names if n not in present]
    if not extra:
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    out.graph.output.extend(onnx.ValueInfoProto(name=n) for n in extra)
    return out


def _run_reference(ref, plan, seed: int):
    """Run the reference at the plan's assignments until ``RUNS`` of them work.

    At each assignment the varied draw is tried first, then the safe one
    (unconstrained integers zero). Returns ``[(shapes, feeds, outputs)]``;
    raises InputError naming the shapes tried when none runs.
    """
    runs, error = [], None
    for k, shapes in enumerate(plan.assignments()):
        for safe in (False, True):
            feeds = plan.values(shapes, seed + k, safe=safe)
            try:
                runs.append((shapes, feeds, ref.run(None, ort_feeds(feeds))))
                break
            except Exception as exc:  # the model cannot run on these values: try safer ones, other sizes
                error = exc
        if len(runs) == RUNS or (runs and not plan.symbolic):
            break
    if not runs:
        tried = "; ".join(", ".join(f"{k}={'x'.join(map(str, v))}" for k, v in shapes.items())
                          for shapes in plan.assignments()[:3])
        fix = ("give sizes it accepts with --input-shape NAME=D1xD2..., or skip the check with --no-verify"
               if plan.symbolic or plan.declared else
               "its input shapes are fixed, so the model itself fails there: fix or re-export it, or skip "
               "the check with --no-verify")
        raise InputError(f"the model does not run in onnxruntime at the input shapes tried ({tried}): "
                         f"{shorten(str(error) or error.__class__.__name__, 200)}; {fix}") from error
    if len(runs) < RUNS:  # one shape only (static or declared): a second draw of values
        shapes = runs[0][0]
        for safe in (False, True):
            feeds = plan.values(shapes, seed + 101, safe=safe)
            try:
                runs.append((shapes, feeds, ref.run(None, ort_feeds(feeds))))
                break
            except Exception:
                continue
    return runs


def reference_session(model: onnx.ModelProto):
    """A session for the model the check compares against; when onnxruntime cannot load
    it (a custom-domain op, an op it lacks, an opset it does not know), the check cannot
    run: InputError saying so and naming --no-verify."""
    try:
        return session(model)
    except Exception as exc:
        custom = sorted({f"{n.domain}:{n.op_type}" for n in model.graph.node
                         if n.domain not in ("", "ai.onnx", "ai.onnx.ml", "com.microsoft")})
        what = f" (op {', '.join(custom[:3])} is not one onnxruntime implements)" if custom else ""
        raise InputError(f"onnxruntime cannot load the model, so the result cannot be verified{what}: "
                         f"{shorten(str(exc), 200)}; pass --no-verify to skip the check") from exc


def compare(reference: onnx.ModelProto, candidate: onnx.ModelProto, approximate: bool = False,
            tolerance: float = 1e-4, seed: int = 0, input_shapes: dict | None = None,
            internal: dict[str, list] | None = None, examples: list[dict] | None = None) -> Verification:
    """Run both models on the same inputs and compare every output (and ``internal`` tensors).

    Inputs come from :mod:`.feeds`: realistic sizes for symbolic dims (the
    user's ``input_shapes`` first), tried until the reference runs, at two
    assignments where the model allows; valid integer indices. ``internal``
    maps tensors both models compute to the kept indices per axis (None: the
    axis is unchanged); the reference's tensor is sliced before comparing, so
    a wrong slice is caught even where the outputs saturate. ``examples`` (calibration
    feeds) bound the values of integer inputs to the range real inputs take.
    """
    from .feeds import feed_plan

    computed = ({o for n in reference.graph.node for o in n.output}
                & {o for n in candidate.graph.node for o in n.output})
    internal = {k: v for k, v in (internal or {}).items() if not approximate and k in computed}
    ref_model, narrow = readable(_with_outputs(reference, list(internal)))
    ref = reference_session(ref_model)
    try:
        cand = session(readable(_with_outputs(candidate, list(internal)))[0])
    except Exception as exc:  # the original loads and the result does not: the result is wrong
        return Verification("failed", tolerance=tolerance,
                            message=f"onnxruntime cannot load the result: {shorten(str(exc), 200)}")
    plan = feed_plan(reference, input_shapes, examples)
    with step("oracle runs"):
        runs = _run_reference(ref, plan, seed)
    ref_names = [o.name for o in ref.get_outputs()]
    cand_inputs = {i.name for i in cand.get_inputs()}
    actuals = []
    for shapes, feeds, _ in runs:
        try:
            with step("result run"):
                actuals.append(dict(zip([o.name for o in cand.get_outputs()],
                                        cand.run(None, ort_feeds({k: v for k, v in feeds.items()
                                                                  if k in cand_inputs})))))
        except Exception as exc:  # the result does not run where the original does: a failed check
            return Verification("failed", tolerance=tolerance, message=f"the result does not run at inputs "
                                f"{shapes}: {str(exc).splitlines()[0][:300]}")
    result, numeric = _check_runs(runs, actuals, ref_names, internal, narrow, approximate, tolerance)
    if numeric:  # only then can the oracle's own rounding matter: measure it, widen, judge again
        with step("oracle noise floor"):
            noise = _noise_floor(reference, internal, runs[0])
        if NOISE_MARGIN * noise > tolerance:
            result, _ = _check_runs(runs, actuals, ref_names, internal, narrow, approximate,
                                    NOISE_MARGIN * noise)
        result.noise_floor = noise
    result.shapes = [{k: list(v) for k, v in shapes.items()} for shapes, _, _ in runs]
    result.regions = _region_count(ref, ref_names)
    return result


def _check_runs(runs, actuals, ref_names, internal, narrow, approximate, tolerance) -> tuple[Verification, bool]:
    """The verdict on every output and checkpoint of every run at ``tolerance``, and whether it
    failed on a finite error alone (a wider tolerance from the oracle's noise floor may pass it)."""
    result = Verification("approximate" if approximate else "exact", tolerance=tolerance)
    for (shapes, _, expected), actual in zip(runs, actuals):
        for name, e in zip(ref_names, expected):
            if name not in actual:
                continue
            a = actual[name]
            if name in internal:
                e = _slice_kept(e, internal[name])
            where = "tensor" if name in internal else "output"
            expected_leaves, actual_leaves = _leaves(e), _leaves(a)
            if len(expected_leaves) != len(actual_leaves):
                result.status = "failed"
                result.message = (f"{where} '{name}' holds {len(actual_leaves)} tensors, expected "
                                  f"{len(expected_leaves)} (inputs {shapes})")
                return result, False
            for e, a in zip(expected_leaves, actual_leaves):
                message = _compare_tensor(result, name, where, e, a, approximate, tolerance, shapes,
                                          narrow.get(name))
                if message:
                    result.status = "failed"
                    result.message = message
                    return result, (not approximate and e.shape == a.shape
                                     and bool(np.isfinite(result.outputs.get(name, np.inf))))
    return result, False


def _region_count(sess, names) -> int:
    from .regions import RegionSession

    return len(sess.regions(names)) if isinstance(sess, RegionSession) else 0


def _leaves(value) -> list[np.ndarray]:
    """A graph value as arrays: a tensor, a sequence's elements, an optional's content (or none)."""
    if value is None:
        return []
    if isinstance(value, np.ndarray):
        return [value]
    if isinstance(value, (list, tuple)):
        return [leaf for v in value for leaf in _leaves(v)]
    if isinstance(value, dict):
        return [leaf for k in sorted(value, key=repr) for leaf in _leaves(value[k])]
    return [np.asarray(value)]


def _compare_tensor(result: Verification, name: str, where: str, e: np.ndarray, a: np.ndarray,
                    approximate: bool, tolerance: float, shapes, own_type: str | None = None) -> str:
    """'' when ``a`` matches ``e`` (recording the error in ``result``), else why not.
    ``own_type``: the tensor's type when it was read as float32 (bfloat16, float8)."""
    if e.shape != a.shape:
        return f"{where} '{name}' has shape {a.shape}, expected {e.shape} (inputs {shapes})"
    if approximate:
        if is_float(a.dtype) and not np.all(np.isfinite(a.astype(np.float64))) and np.all(
                np.isfinite(e.astype(np.float64))):
            return f"output '{name}' has non-finite values"
        return ""
    err = relative_error(e, a)
    limit = tolerance_for(np.dtype(own_type) if own_type else e.dtype, tolerance) if is_float(e.dtype) else 0.0
    result.outputs[name] = max(err, result.outputs.get(name, 0.0))
    result.max_relative_error = max(result.max_relative_error, err)
    if not err <= limit:
        return (f"{where} '{name}' differs from the oracle by {err:.3g} "
                f"(relative; tolerance {limit:g}; inputs {shapes})")
    return ""


NOISE_MARGIN = 16  # a correct prune stays within this many times the oracle's own float rounding


NO_DOUBLE_KERNEL = {"Conv", "ConvTranspose"}  # onnxruntime's CPU provider has no float64 kernel for these


def _noise_floor(reference: onnx.ModelProto, internal: dict, run) -> float:
    """The oracle's own float32 rounding on these inputs: its relative distance to the same
    oracle in float64 (:func:`as_float64`), else — when onnxruntime cannot run it in double —
    to itself run without graph fusions (other rounding, an underestimate).

    A correct prune changes the summation order of every contraction, so it may differ from
    the float32 oracle by about as much as the oracle differs from exact arithmetic; deep
    models (30-layer LLMs with large activations) exceed a fixed 1e-4 that way. 0.0 when
    neither estimate runs.
    """
    _, feeds, expected = run
    outputs = list(internal)
    try:
        if widened_type(reference) == onnx.TensorProto.DOUBLE and \
                any(n.op_type in NO_DOUBLE_KERNEL for n in reference.graph.node):
            raise NotImplementedError("no float64 kernel")  # do not build a session that cannot load
        wide = session(_with_outputs(reference, outputs), widen=True)
        dtype = np.float64 if widened_type(reference) == onnx.TensorProto.DOUBLE else np.float32
        wide_feeds = {k: v.astype(dtype) if is_float(v.dtype) and v.dtype.kind != "c" else v
                      for k, v in feeds.items()}
        got = wide.run(None, wide_feeds)
    except Exception:
        try:
            got = session(readable(_with_outputs(reference, outputs))[0], optimize=False).run(None, ort_feeds(feeds))
        except Exception:
            return 0.0
    worst = 0.0
    for a, e in zip(got, expected):
        if not (isinstance(a, np.ndarray) and isinstance(e, np.ndarray)):
            continue  # sequences and optionals: their tensors are compared exactly
        if is_float(e.dtype) and np.shape(a) == np.shape(e):
            worst = max(worst, relative_error(np.asarray(a), np.asarray(e, dtype=np.asarray(a).dtype)))
    return worst if np.isfinite(worst) else 0.0


def widened_type(model: onnx.ModelProto) -> int:
    """The float type the noise-floor copy computes in: float64, or float32 for a model whose
    floats are all half precision (bfloat16/float16 initializers and interface). float32's
    rounding lies 2^13 below float16's, so against a half model it is as exact as float64,
    at half the memory and on fast kernels."""
    from onnx import TensorProto

    half = (TensorProto.FLOAT16, TensorProto.BFLOAT16)
    types = {t.data_type for t in model.graph.initializer} | {
        vi.type.tensor_type.elem_type for vi in (*model.graph.input, *model.graph.output)}
    if types & {TensorProto.FLOAT, TensorProto.DOUBLE} or not types & set(half):
        return TensorProto.DOUBLE
    return TensorProto.FLOAT


def as_float64(model: onnx.ModelProto, to: int | None = None, widened: dict | None = None) -> onnx.ModelProto:
    """A copy of ``model`` computing in float64 (or the wider float ``to``) wherever it computed
    in a narrower float (float32, float16, bfloat16): initializers, Constant/ConstantOfShape
    values, Cast targets and every declared tensor type (so a half-precision model's own
    rounding can be measured too).

    ``widened``: file-referenced initializers are not copied into the protobuf; their widened
    arrays go into this dict (for ``add_external_initializers``) and the reference only
    changes type — one copy of each weight instead of three (array, protobuf, runtime)."""
    from onnx import TensorProto, numpy_helper

    to = TensorProto.DOUBLE if to is None else to
    narrow = tuple(t for t in (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16) if t != to)
    wide = np.float64 if to == TensorProto.DOUBLE else np.float32

    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph

    def widen(t):
        if t.data_type not in narrow:
            return
        if widened is not None and t.data_location == TensorProto.EXTERNAL:
            widened[t.name] = tensor_array(t).astype(wide)
            t.data_type = to
            return
        t.CopyFrom(numpy_helper.from_array(tensor_array(t).astype(wide), t.name))

    for init in graph.initializer:
        widen(init)
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR:
                widen(attr.t)
            elif attr.name == "to" and node.op_type == "Cast" and attr.i in narrow:
                attr.i = to
    for info in (*graph.input, *graph.output, *graph.value_info):
        if info.type.tensor_type.elem_type in narrow:
            info.type.tensor_type.elem_type = to
    return out


def _slice_kept(value: np.ndarray, kept_per_axis: list) -> np.ndarray:
    """Keep ``kept`` indices per axis; an index set of one period repeats along a longer axis."""
    for axis, kept in enumerate(kept_per_axis):
        if kept is None or axis >= value.ndim:
            continue
        period, indices = kept
        size = value.shape[axis]
        if size != period and period and size % period == 0:
            indices = (np.arange(size // period)[:, None] * period + indices[None, :]).reshape(-1)
        value = np.take(value, indices, axis=axis)
    return value


def internal_checkpoints(plan) -> dict[str, list]:
    """Outputs of every contraction that reads a pruned group or produces one, with
    kept indices per axis (as ``(period, indices)``)."""
    table = plan.analysis.table
    checkpoints = {}
    for c in table.contractions:
        shape = plan.analysis.graph.shape(c.anchor)
        if c.anchor in checkpoints or shape is None:
            continue
        axes = []
        for axis in range(len(shape)):
            did = table.ids.get((c.anchor, axis))
            kept = plan.kept(did) if did is not None else None
            axes.append(None if kept is None else (table.sizes[did], kept))
        if plan.kept(c.dim) is not None or any(a is not None for a in axes):
            checkpoints[c.anchor] = axes
    return checkpoints


def verify_prune(original: onnx.ModelProto, pruned: onnx.ModelProto, plan,
                 tolerance: float = 1e-4, seed: int = 0, input_shapes: dict | None = None,
                 calibration: list[dict] | None = None) -> Verification:
    """Check a pruned model against the oracle built from ``original`` and ``plan``,
    at its outputs and right after every contraction the prune touched.

    When the plan removes nothing, the check is the lossless one (the result must
    reproduce ``original``); if it cannot run (onnxruntime cannot run ``original`` on
    any generated input) or does not pass (the re-emitted graph trips onnxruntime),
    ``pruned`` is replaced in place by a copy of ``original`` (nothing was pruned, so
    the input is the right answer) and the status is "unchanged": a model with
    nothing to prune never depends on the oracle.
    """
    if not any(np.asarray(mask).any() for mask in plan.removed.values()):
        try:
            check = compare(original, pruned, False, tolerance, seed, input_shapes, examples=calibration)
            if check.ok:
                return check
            why = check.message
        except InputError as exc:
            why = f"not run: {exc}"
        pruned.CopyFrom(original)
        return Verification("unchanged", tolerance=tolerance,
                            message=f"nothing was pruned; the model is returned as given ({why})")
    approximate = any(plan.analysis.groups[gid].approximate and mask.any()
                      for gid, mask in plan.removed.items())
    oracle = oracle_model(original, plan)
    if approximate:  # exact after all when every statistic over a shrunk axis is taken over kept channels
        from .onnx_masked_norms import mask_statistics

        rewritten, _ = mask_statistics(oracle, plan)  # (untouched when a form is not handled)
        if rewritten:  # only these ops mark a group approximate: the exact verdict is final
            check = compare(oracle, pruned, False, tolerance, seed, input_shapes, internal_checkpoints(plan),
                            examples=calibration)
            if check.ok:
                check.message = f"{rewritten} normalisation statistics taken over the kept channels"
            return check
    return compare(oracle, pruned, approximate, tolerance, seed, input_shapes, internal_checkpoints(plan),
                   examples=calibration)
