"""Calibration on the ONNX path: statistics from onnxruntime, repair written into initializers.

Statistics: a copy of the model that also returns every needed contraction
input is run batch by batch; each returned tensor is added to its running
sums (:class:`graphprune.calibration.ChannelStats`) and dropped. A batch is
run in as many rows at a time as keep the returned tensors under
``STATS_MEMORY`` (measured on a first one-row run), so a large model's
hundreds of exposed activations fit in memory. Repair: the
repaired constants (:mod:`graphprune.repair`) are cut like the emitted ones
and replace the pruned model's initializers, kept only when they lower the
held-out output error against the original model. BatchNorm statistics:
every ``BatchNormalization`` whose mean and variance are initializers gets
them re-estimated from the pruned model's own activations on the calibration
batches, ``BN_PASSES`` times (each pass sees the statistics the previous one
wrote upstream, as inference will), kept under the same rule.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from .calibration import ChannelStats, as_rows
from .errors import InputError
from .progress import step
from .repair import RepairPlan, sliced_values
from .verify import _with_outputs, session
from .weights import tensor_array

STATS_MEMORY = 1 << 30  # bytes of exposed activations per onnxruntime run
BN_PASSES = 3

_ORT_TYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
              "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(bool)": np.bool_,
              "tensor(uint8)": np.uint8, "tensor(int8)": np.int8}


def feeds_for(sess, batch: dict, source: str = "calibration") -> dict[str, np.ndarray]:
    """``batch`` checked against the session's inputs (every input present, ranks agree) and cast
    to the types the model declares."""
    feeds = {}
    for spec in sess.get_inputs():
        if spec.name not in batch:
            raise InputError(f"{source} data has no array for model input '{spec.name}' "
                             f"(it has {', '.join(sorted(batch)) or 'none'})")
        value = np.asarray(batch[spec.name])
        if len(spec.shape) != value.ndim:
            raise InputError(f"{source} array '{spec.name}' has shape {list(value.shape)}, the model "
                             f"expects rank {len(spec.shape)} ({spec.shape})")
        dtype = _ORT_TYPES.get(spec.type)
        feeds[spec.name] = value.astype(dtype, copy=False) if dtype is not None else value
    return feeds


def collect_onnx_statistics(model: onnx.ModelProto, batches: list[dict], wanted: dict[tuple[str, int], int],
                            gram: set = frozenset()) -> dict[tuple[str, int], ChannelStats]:
    """Running sums of every ``(tensor, axis)`` in ``wanted`` that ``model`` computes."""
    produced = {o for n in model.graph.node for o in n.output} | {i.name for i in model.graph.input}
    keys = [k for k in wanted if k[0] in produced]
    if not keys:
        return {}
    names = sorted({k[0] for k in keys})
    sess = session(_with_outputs(model, names))
    stats = {k: ChannelStats.empty(wanted[k], k in gram) for k in keys}
    chunk = None  # rows per run, sized from the first run so exposed tensors stay under STATS_MEMORY
    samples = sum(min((np.shape(v)[0] for v in b.values() if np.ndim(v)), default=1) for b in batches)
    with step("calibration statistics (samples)", total=samples) as progress:
        for batch in batches:
            feeds = feeds_for(sess, batch)
            rows = min((v.shape[0] for v in feeds.values() if v.ndim), default=1)
            start = 0
            while start < rows:
                size = chunk or 1
                part = {k: v[start:start + size] if v.ndim else v for k, v in feeds.items()}
                values = dict(zip(names, sess.run(names, part)))
                if chunk is None:
                    per_row = sum(v.nbytes for v in values.values()) / size
                    chunk = max(1, int(STATS_MEMORY // max(per_row, 1.0)))
                for key in keys:
                    value = values[key[0]]
                    if value.ndim <= key[1] or value.shape[key[1]] != wanted[key]:
                        continue  # a run-time size that is not the analysed one: no evidence
                    stats[key].add(as_rows(value.astype(np.float32, copy=False), key[1]))
                progress.advance(min(size, rows - start))
                start += size
    return stats


def output_error(reference_outputs: list[list[np.ndarray]], model: onnx.ModelProto, batches) -> float:
    """``‖y − y₀‖ / ‖y₀‖`` over every float output of every batch."""
    sess = session(model)
    diff = norm = 0.0
    for want, batch in zip(reference_outputs, batches):
        got = sess.run(None, feeds_for(sess, batch))
        for a, b in zip(got, want):
            if not np.issubdtype(np.asarray(b).dtype, np.floating):
                continue
            if a.shape != b.shape:
                return float("inf")
            diff += float(np.sum((a.astype(np.float64) - b.astype(np.float64)) ** 2))
            norm += float(np.sum(b.astype(np.float64) ** 2))
    return (diff / norm) ** 0.5 if norm else 0.0


def run_all(model: onnx.ModelProto, batches) -> list[list[np.ndarray]]:
    sess = session(model)
    return [sess.run(None, feeds_for(sess, b)) for b in batches]


def _batchnorms(model: onnx.ModelProto) -> list[tuple[onnx.NodeProto, onnx.TensorProto, onnx.TensorProto]]:
    """Inference BatchNormalization nodes with their own mean and variance initializers."""
    inits = {i.name: i for i in model.graph.initializer}
    uses: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    found = []
    for node in model.graph.node:
        if node.op_type != "BatchNormalization" or len(node.input) < 5 or len(node.output) > 1:
            continue
        mean, var = inits.get(node.input[3]), inits.get(node.input[4])
        if mean is not None and var is not None and uses[mean.name] == 1 and uses[var.name] == 1:
            found.append((node, mean, var))
    return found


def recalibrate_onnx_batchnorm(model: onnx.ModelProto, batches: list[dict]) -> tuple[onnx.ModelProto, int]:
    """A copy of ``model`` with its BatchNorm statistics re-estimated on ``batches`` (see the
    module docstring); and how many were."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    norms = _batchnorms(out)
    if not norms or not batches:
        return model, 0
    for _ in range(BN_PASSES):
        wanted = {(node.input[0], 1): int(np.prod(mean.dims)) for node, mean, _ in norms}
        stats = collect_onnx_statistics(out, batches, wanted)
        for node, mean, var in norms:
            st = stats.get((node.input[0], 1))
            if st is None or st.count == 0:
                continue
            dtype = tensor_array(mean).dtype
            mean.CopyFrom(numpy_helper.from_array(st.mean.astype(dtype).reshape(mean.dims), mean.name))
            var.CopyFrom(numpy_helper.from_array(st.variance.astype(dtype).reshape(var.dims), var.name))
    return out, len(norms)


def apply_onnx_repair(original: onnx.ModelProto, pruned: onnx.ModelProto, repair: RepairPlan | None,
                      sliced: dict, fit: list[dict], held_out: list[dict],
                      recalibrate_bn: bool = True) -> tuple[onnx.ModelProto, dict]:
    """The pruned model with the repair written in, then its BatchNorm statistics re-estimated,
    each step kept only when it lowers the held-out error; and the report section (errors
    after each step, what was repaired or skipped)."""
    originals = run_all(original, held_out)
    errors = {"pruned": output_error(originals, pruned, held_out)}
    best = errors["pruned"]
    outcome: dict = {"output_error": errors}
    if repair is not None:
        outcome["repair"] = repair.to_dict()
        if repair.values:
            repaired = onnx.ModelProto()
            repaired.CopyFrom(pruned)
            values = sliced_values(repair, sliced)
            for init in repaired.graph.initializer:
                if init.name in values:
                    value = values[init.name]
                    old = tensor_array(init)
                    init.CopyFrom(numpy_helper.from_array(value.astype(old.dtype).reshape(old.shape), init.name))
            errors["repaired"] = output_error(originals, repaired, held_out)
            if errors["repaired"] > best:
                outcome["repair"]["undone"] = "it raised the held-out output error"
            else:
                pruned, best = repaired, errors["repaired"]
    if recalibrate_bn:
        recalibrated, count = recalibrate_onnx_batchnorm(pruned, fit)
        if count:
            errors["bn_recalibrated"] = output_error(originals, recalibrated, held_out)
            outcome["bn_recalibrated"] = count
            if errors["bn_recalibrated"] > best:
                outcome["bn_recalibrated"] = 0
                outcome["bn_undone"] = "it raised the held-out output error"
            else:
                pruned = recalibrated
    return pruned, outcome
