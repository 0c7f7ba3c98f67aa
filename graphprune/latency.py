"""Latency budgets: prune until onnxruntime runs the model in a given fraction of its time.

Latency is measured, not modelled: the model runs in onnxruntime (CPU) at the
first input shapes the oracle would use (``--input-shape`` when given), two
warm-up runs and then the median of at least ``MIN_RUNS`` runs or
``MEASURE_SECONDS`` of them, each candidate timed back to back with the
dense model so that a machine's changing load cancels out. Latency falls with MACs but not in proportion
(memory-bound ops, fixed overheads), so the MACs budget meeting it is found
by a secant search on the measured ratio: each step prunes to a MACs budget
(without verification), measures, and rescales the MACs budget by
``target / measured``. The largest MACs budget whose measurement met the
target wins; the final model is pruned and verified at it.
"""

from __future__ import annotations

import time

import numpy as np
import onnx

from .errors import InputError
from .feeds import feed_plan
from .verify import session

MIN_RUNS = 7
MEASURE_SECONDS = 0.3
SEARCH_STEPS = 5
CLOSE_ENOUGH = 0.03  # stop when the measured ratio is within this of the target (timing noise)


def latency_feeds(model: onnx.ModelProto, input_shapes: dict | None, batch: int | None = None,
                  sess=None) -> tuple[dict, dict]:
    """Feeds at the first shapes the model runs at, and those shapes.

    ``batch`` sets every dynamic batch axis (the role :mod:`.feeds` gives it) of an input
    ``input_shapes`` does not declare; ``sess`` is a session of ``model`` to try them in.
    """
    plan = feed_plan(model, input_shapes)
    sess = sess or session(model)
    for shapes in plan.assignments():
        if batch is not None:
            shapes = _with_batch(plan, shapes, batch)
        feeds = plan.values(shapes, 0)
        try:
            sess.run(None, feeds)
        except Exception:
            continue
        return feeds, shapes
    raise InputError("the model does not run in onnxruntime at any input shape tried; give one with "
                     "--input-shape NAME=D1xD2...")


def measure(model: onnx.ModelProto, feeds: dict) -> float:
    """Median seconds per run of ``model`` on ``feeds``."""
    sess = session(model)
    return float(np.median(run_times(lambda: sess.run(None, feeds), warmup=2, min_runs=MIN_RUNS,
                                     min_seconds=MEASURE_SECONDS, max_runs=200)))


def run_times(run, warmup: int = 2, min_runs: int = MIN_RUNS, min_seconds: float = 0.0,
              max_runs: int | None = None) -> list[float]:
    """Seconds of each call of ``run()`` after ``warmup`` untimed calls: at least ``min_runs``
    calls and ``min_seconds`` of them, at most ``max_runs``."""
    for _ in range(warmup):
        run()
    times, spent = [], 0.0
    while len(times) < min_runs or spent < min_seconds:
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
        spent += times[-1]
        if max_runs is not None and len(times) >= max_runs:
            break
    return times


def _with_batch(plan, shapes: dict, batch: int) -> dict:
    """``shapes`` with every undeclared input's dynamic batch axis set to ``batch``."""
    out, changed = dict(shapes), False
    for spec in plan.inputs:
        if spec.name in plan.declared or not spec.dims:
            continue
        first = spec.dims[0]
        if isinstance(first, str) and plan.roles.get(first) == "batch":
            out[spec.name] = (batch,) + tuple(shapes[spec.name][1:])
            changed = True
    fixed = [s for s in plan.inputs if s.dims and isinstance(s.dims[0], int) and s.dims[0] != batch
             and s.name not in plan.declared]
    if fixed and not changed:
        spec = fixed[0]
        raise InputError(f"--batch {batch}: input '{spec.name}' has a fixed batch of {spec.dims[0]} "
                         f"(shape {tuple(spec.dims)}); export the model with a dynamic batch axis")
    return out


def relative_latency(model: onnx.ModelProto, dense: onnx.ModelProto, feeds: dict, rounds: int = 3) -> float:
    """Median over ``rounds`` of time(model) / time(dense), each pair measured back to back so
    that machine load drifting between measurements cancels."""
    return float(np.median([measure(model, feeds) / measure(dense, feeds) for _ in range(rounds)]))


def macs_for_latency(prune_to_macs, source: onnx.ModelProto, target: float,
                     input_shapes: dict | None) -> tuple[float, dict]:
    """The MACs budget whose pruned model runs in at most ``target`` of the dense time.

    ``prune_to_macs(fraction)`` returns the pruned ModelProto. Returns the
    budget and the report section (measured ratios per step, shapes, times).
    """
    if not 0.0 < target <= 1.0:
        raise InputError(f"--target-latency must be a fraction in (0, 1], got {target}")
    feeds, shapes = latency_feeds(source, input_shapes)
    dense = measure(source, feeds)
    macs, history, best = target, [], None
    for _ in range(SEARCH_STEPS):
        ratio = relative_latency(prune_to_macs(macs), source, feeds)
        history.append({"target_macs": round(macs, 4), "latency": round(ratio, 4)})
        if ratio <= target and (best is None or macs > best[0]):
            best = (macs, ratio)
        if abs(ratio - target) <= CLOSE_ENOUGH and ratio <= target:
            break
        macs = float(np.clip(macs * target / max(ratio, 1e-6), 0.01, 1.0))
    chosen = best or min(((h["target_macs"], h["latency"]) for h in history), key=lambda h: h[1])
    return chosen[0], {"metric": "latency", "target": target, "achieved": chosen[1], "met": best is not None,
                       "target_macs": chosen[0], "dense_ms": round(dense * 1e3, 3),
                       "measured_at": {k: list(v) for k, v in shapes.items()}, "search": history}
