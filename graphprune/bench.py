"""``graphprune bench``: what a model costs to run, before and after pruning.

MACs are not latency: memory-bound ops, layouts and fixed per-op overheads do
not shrink with the channels, so a model with half the MACs rarely runs twice
as fast. This module measures it, for one or more ONNX files (the first is the
baseline), at the same inputs for all of them:

* **Latency** in onnxruntime (CPU) and, when ``openvino`` is importable, in
  OpenVINO (CPU, ``f32`` inference precision, ``LATENCY`` hint; models with
  dynamic axes are reshaped to the measured shapes first). ``warmup`` untimed
  runs, then ``repeats`` timed runs per model, taken in interleaved blocks
  (``BLOCK_RUNS`` runs of each model in turn) so that a machine's changing
  load hits all models alike. Reported: median, quartiles (IQR) and min/max.
* **Params** and **MACs** from :mod:`graphprune.metrics`, counted at the
  measured input shapes.
* **File size**: the ``.onnx`` file plus its external-data files.
* **Peak memory**: the process's peak resident set size (``VmHWM``, reset
  through ``/proc/self/clear_refs`` before each model) above the RSS before
  creating the session, over session creation and the first runs, i.e. the
  weights, the arena and the planned buffers (OpenVINO's plugin is loaded by
  an unmeasured compile first, so it does not count to the baseline). Where the peak cannot be reset
  (not Linux) it is the RSS growth instead; the JSON says which.

Inputs come from :mod:`graphprune.feeds` through
:func:`graphprune.latency.latency_feeds` (realistic sizes for dynamic axes,
token ids below the vocabulary size, masks of ones), so every model the oracle
can check can be benchmarked with no options.
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError, shorten
from .units import short

# numpy, onnx and the runtimes are imported where they are used: the CLI imports this module
# for its parser, and `graphprune --help` must not load them (issue 11).

DEFAULT_WARMUP = 5
DEFAULT_REPEATS = 50
BLOCK_RUNS = 4  # timed runs are taken in interleaved blocks of this many runs per model
MEMORY_METHOD = "peak RSS above the RSS before the session (VmHWM reset via /proc/self/clear_refs)"
MEMORY_FALLBACK = "RSS growth over session creation and the first runs (peak RSS could not be reset)"


@dataclass
class Timing:
    """Per-run latency statistics in milliseconds."""

    median_ms: float
    q1_ms: float
    q3_ms: float
    min_ms: float
    max_ms: float
    runs: int

    @classmethod
    def of(cls, seconds: list[float]) -> "Timing":
        import numpy as np

        ms = np.asarray(seconds, dtype=np.float64) * 1e3
        q1, med, q3 = np.percentile(ms, [25, 50, 75])
        return cls(float(med), float(q1), float(q3), float(ms.min()), float(ms.max()), int(ms.size))

    def to_dict(self) -> dict:
        """Milliseconds to 5 significant figures: a fixed number of decimals would leave a 20 µs model's
        speed-up (a ratio of two medians) off by a few tenths of a percent."""
        return {k: float(f"{v:.5g}") if isinstance(v, float) else v for k, v in self.__dict__.items()}


@dataclass
class Measurement:
    """Everything ``bench`` reports for one model."""

    path: str
    params: int
    macs: int
    file_bytes: int
    shapes: dict
    onnxruntime: Timing | None = None
    onnxruntime_memory_mb: float | None = None
    openvino: Timing | None = None
    openvino_memory_mb: float | None = None
    openvino_error: str | None = None

    def to_dict(self, baseline: "Measurement | None" = None) -> dict:
        out = {"path": self.path, "params": self.params, "macs": self.macs, "file_bytes": self.file_bytes,
               "shapes": {k: list(v) for k, v in self.shapes.items()},
               "onnxruntime": self.onnxruntime.to_dict() if self.onnxruntime else None,
               "onnxruntime_peak_memory_mb": _round(self.onnxruntime_memory_mb),
               "openvino": self.openvino.to_dict() if self.openvino else None,
               "openvino_peak_memory_mb": _round(self.openvino_memory_mb)}
        if self.openvino_error:
            out["openvino_error"] = self.openvino_error
        if baseline is not None:
            out.update(compare(baseline, self))
        return out


def _round(x, digits: int = 2):
    return None if x is None else round(float(x), digits)


def compare(baseline: Measurement, m: Measurement) -> dict:
    """Speed-ups (baseline median / this median), MACs and params ratios (this / baseline) and
    the efficiency: speed-up divided by the MACs reduction (1.0 = latency fell as much as MACs)."""
    macs_ratio = m.macs / baseline.macs if baseline.macs else None
    out = {"macs_ratio": _round(macs_ratio, 4),
           "params_ratio": _round(m.params / baseline.params, 4) if baseline.params else None}
    for runtime in ("onnxruntime", "openvino"):
        a, b = getattr(baseline, runtime), getattr(m, runtime)
        speedup = a.median_ms / b.median_ms if a and b and b.median_ms > 0 else None
        out[f"{runtime}_speedup"] = _round(speedup, 4)
        out[f"{runtime}_efficiency"] = _round(speedup * macs_ratio, 4) if speedup and macs_ratio else None
    return out


# --------------------------------------------------------------------------- memory

def _rss_kb() -> tuple[int | None, int | None]:
    """(current RSS, peak RSS) of this process in kB, from /proc (None elsewhere)."""
    try:
        with open("/proc/self/status") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
        return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])
    except (OSError, KeyError, ValueError):
        return None, None


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


def _trim() -> None:
    """Give freed memory back to the OS so one model's buffers do not hide the next one's."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class MemoryProbe:
    """Peak memory of what happens inside ``with MemoryProbe() as probe:``, in MB (``probe.mb``)."""

    method = MEMORY_METHOD

    def __enter__(self):
        _trim()
        self.peak_reset = _reset_peak()
        self.before, _ = _rss_kb()
        return self

    def __exit__(self, *exc):
        rss, peak = _rss_kb()
        if self.before is None or rss is None:
            self.mb = None
        else:
            top = peak if self.peak_reset else rss
            self.mb = max(top - self.before, 0) / 1024.0
        if not self.peak_reset:
            MemoryProbe.method = MEMORY_FALLBACK
        return False


# --------------------------------------------------------------------------- runtimes

def ort_session(path: str | os.PathLike, threads: int = 0):
    """An onnxruntime CPU session of a model file (external data beside it); ``threads`` 0 = default."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 4
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises several types for models it cannot load
        raise InputError(f"{path}: onnxruntime cannot load the model ({shorten(str(exc), 200)})") from exc


def _warm_onnxruntime() -> None:
    """Load onnxruntime, create its environment (thread pools) and import the feed rules with
    a one-node session, so none of that counts to the first model's memory."""
    from onnx import TensorProto, helper

    from . import feed_values  # noqa: F401

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "warm",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # any onnxruntime reads it
    import numpy as np
    import onnxruntime as ort

    ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"x": np.zeros(1, np.float32)})


def openvino_available() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


_CORE = []


def _openvino_core():
    """One ``openvino.Core`` per process (its plugins load once)."""
    import openvino as ov

    if not _CORE:
        _CORE.append(ov.Core())
    return _CORE[0]


def openvino_compile(path: str | os.PathLike, shapes: dict, threads: int = 0, precision: str = "f32"):
    """An OpenVINO CPU model compiled at ``shapes`` (dynamic axes reshaped to them)."""
    import openvino as ov

    core = _openvino_core()
    model = core.read_model(str(path))
    reshape = {}
    for port in model.inputs:
        names = port.get_names()
        name = next((n for n in names if n in shapes), None)
        if name is not None and port.get_partial_shape().is_dynamic:
            reshape[port] = ov.PartialShape(list(shapes[name]))
    if reshape:
        model.reshape(reshape)
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": precision}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    return core.compile_model(model, "CPU", config)


def openvino_outputs(path, feeds: dict, threads: int = 0) -> list:
    """The model's outputs in OpenVINO (f32 precision), in graph-output order."""
    import numpy as np

    compiled = openvino_compile(path, {k: v.shape for k, v in feeds.items()}, threads)
    result = compiled.create_infer_request().infer(feeds)
    return [np.asarray(result[out]) for out in compiled.outputs]


def compare_openvino(model, feeds: dict | None = None, rtol: float = 1e-3, atol_scale: float = 1e-4,
                     input_shapes: dict | None = None) -> dict:
    """Run ``model`` (path or ModelProto) in onnxruntime and OpenVINO on the same inputs.

    Float outputs must agree to ``|ov - ort| <= atol + rtol·|ort|`` with
    ``atol = atol_scale · max(1, max|ort|)`` (float32 kernels differ in
    summation order, and deep random nets reach large outputs); integer and
    boolean outputs exactly. Returns ``{"ok", "max_abs_error", "max_rel_error",
    "outputs": [...], "message"}``.
    """
    import tempfile

    import numpy as np
    import onnx

    from .latency import latency_feeds

    with tempfile.TemporaryDirectory() as tmp:
        if isinstance(model, onnx.ModelProto):
            path = os.path.join(tmp, "model.onnx")
            onnx.save(model, path, save_as_external_data=model.ByteSize() > (1 << 30), location="model.data")
        else:
            path = str(model)
        sess = ort_session(path)
        if feeds is None:
            feeds, _ = latency_feeds(onnx.load(path), input_shapes, sess=sess)
        expected = sess.run(None, feeds)
        got = openvino_outputs(path, feeds)
    names = [o.name for o in sess.get_outputs()]
    report, ok, worst_abs, worst_rel, messages = [], True, 0.0, 0.0, []
    for name, want, have in zip(names, expected, got):
        want, have = np.asarray(want), np.asarray(have)
        entry = {"name": name, "shape": list(want.shape)}
        if want.shape != have.shape:
            ok = False
            messages.append(f"output '{name}': shape {have.shape} in OpenVINO, {want.shape} in onnxruntime")
        elif want.dtype.kind in "fc":
            diff = np.abs(want.astype(np.float64) - have.astype(np.float64))
            scale = max(1.0, float(np.abs(want).max()) if want.size else 1.0)
            bad = diff > atol_scale * scale + rtol * np.abs(want)
            entry["max_abs_error"] = float(diff.max()) if diff.size else 0.0
            entry["max_rel_error"] = entry["max_abs_error"] / scale
            worst_abs, worst_rel = max(worst_abs, entry["max_abs_error"]), max(worst_rel, entry["max_rel_error"])
            if bad.any() or not np.isfinite(have).all():
                ok = False
                messages.append(f"output '{name}': {int(bad.sum())} of {want.size} values differ, max "
                                f"{entry['max_abs_error']:.3g} (relative to max|output| {entry['max_rel_error']:.3g})")
        elif not np.array_equal(want, have.astype(want.dtype)):
            ok = False
            messages.append(f"output '{name}': integer values differ")
        report.append(entry)
    if len(got) != len(expected):
        ok = False
        messages.append(f"{len(got)} outputs in OpenVINO, {len(expected)} in onnxruntime")
    return {"ok": ok, "max_abs_error": worst_abs, "max_rel_error": worst_rel, "outputs": report,
            "message": "; ".join(messages) or "outputs agree"}


# --------------------------------------------------------------------------- measuring

def file_bytes(path: str | os.PathLike) -> int:
    """Size of the model file plus every external-data file it names."""
    import onnx

    path = Path(path)
    total = path.stat().st_size
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 -- read_model reports unreadable files
        return total
    locations = set()
    for t in model.graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            locations.update(e.value for e in t.external_data if e.key == "location")
    return total + sum((path.parent / loc).stat().st_size for loc in locations if (path.parent / loc).is_file())


def _metrics(proto, shapes: dict) -> tuple[int, int]:
    from .api import load
    from .metrics import total_macs

    graph = load(proto, input_shapes={k: tuple(v) for k, v in shapes.items()})
    return graph.param_count(), total_macs(graph)


def _check_paths(paths) -> list[Path]:
    if not paths:
        raise InputError("bench: give at least one .onnx model")
    out = []
    for p in paths:
        p = Path(p)
        if not p.is_file():
            raise InputError(f"{p}: no such file (pass the path of an .onnx model)")
        out.append(p)
    return out


def _feeds_for(proto, path: Path, shapes: dict, seed: int = 0) -> dict:
    """Feeds for another model at the baseline's shapes (its inputs may differ in name only rarely)."""
    from .feeds import feed_plan

    names = [i.name for i in proto.graph.input if i.name not in {t.name for t in proto.graph.initializer}]
    missing = [n for n in names if n not in shapes]
    if missing:
        raise InputError(f"{path}: input '{missing[0]}' is not an input of the baseline model; bench "
                         "compares models with the same inputs")
    plan = feed_plan(proto, {n: tuple(shapes[n]) for n in names})
    return plan.values({n: tuple(shapes[n]) for n in names}, seed)


def bench(paths, threads: int = 0, batch: int | None = None, input_shapes: dict | None = None,
          warmup: int = DEFAULT_WARMUP, repeats: int = DEFAULT_REPEATS, openvino: bool | None = None,
          progress=None) -> dict:
    """Measure every model of ``paths`` (the first is the baseline) at the same inputs.

    Args:
        paths: ``.onnx`` files; the first is the baseline of speed-ups and ratios.
        threads: intra-op threads of both runtimes (0: the runtime's default).
        batch: size of every dynamic batch axis (an error on models with a fixed one).
        input_shapes: input name → sizes, as ``--input-shape``; the rest derived.
        warmup: untimed runs per model and runtime before timing.
        repeats: timed runs per model and runtime.
        openvino: also measure in OpenVINO (default: when it is importable).
        progress: ``progress(message)`` called before each step (``None``: silent).

    Returns ``{"models": [...], "settings": {...}}`` (the ``--json`` output).
    """
    from .frontends.onnx import read_model
    from .latency import latency_feeds

    _warm_onnxruntime()

    say = progress or (lambda message: None)
    paths = _check_paths(paths)
    if warmup < 0 or repeats < 1:
        raise InputError(f"bench: --warmup must be >= 0 and --repeats >= 1 (got {warmup}, {repeats})")
    if batch is not None and batch < 1:
        raise InputError(f"bench: --batch must be >= 1 (got {batch})")
    use_ov = openvino_available() if openvino is None else openvino
    if use_ov and not openvino_available():
        raise InputError("bench: OpenVINO is not installed (pip install 'graphprune[openvino]'), "
                         "or pass --no-openvino")
    measurements, feeds, sessions = [], [], []
    for k, path in enumerate(paths):
        say(f"loading {path}")
        proto = read_model(path)
        with MemoryProbe() as probe:
            sess = ort_session(path, threads)
            if k == 0:
                feed, shapes = latency_feeds(proto, input_shapes, batch=batch, sess=sess)
            else:
                feed = _feeds_for(proto, path, shapes)
            sess.run(None, feed)
        params, macs = _metrics(proto, shapes)
        del proto
        m = Measurement(str(path), params, macs, file_bytes(path), dict(shapes))
        m.onnxruntime_memory_mb = probe.mb
        measurements.append(m)
        feeds.append(feed)
        sessions.append(sess)
    memory_method = MemoryProbe.method
    say("timing in onnxruntime")
    runs = [lambda s=s, f=f: s.run(None, f) for s, f in zip(sessions, feeds)]
    for m, times in zip(measurements, _interleaved(runs, warmup, repeats)):
        m.onnxruntime = Timing.of(times)
    del sessions, runs
    _trim()
    if use_ov:
        try:  # untimed, unmeasured: loads the CPU plugin and the ONNX reader, which would count
            openvino_compile(measurements[0].path, measurements[0].shapes, threads).create_infer_request().infer(feeds[0])
        except Exception:  # noqa: BLE001 -- the measured compile below reports the error
            pass
        _trim()
        compiled = []
        for m, feed in zip(measurements, feeds):
            say(f"compiling {m.path} in OpenVINO")
            try:
                with MemoryProbe() as probe:
                    request = openvino_compile(m.path, m.shapes, threads).create_infer_request()
                    request.infer(feed)
                m.openvino_memory_mb = probe.mb
                compiled.append((m, request, feed))
            except Exception as exc:  # noqa: BLE001 -- OpenVINO's own errors; reported, not fatal
                m.openvino_error = shorten(f"{exc.__class__.__name__}: {exc}", 200)
        say("timing in OpenVINO")
        runs = [lambda r=r, f=f: r.infer(f) for _, r, f in compiled]
        for (m, _, _), times in zip(compiled, _interleaved(runs, warmup, repeats)):
            m.openvino = Timing.of(times)
    base = measurements[0]
    import onnxruntime

    settings = {"threads": threads or "default", "batch": batch, "warmup": warmup, "repeats": repeats,
                "memory": memory_method, "onnxruntime": onnxruntime.__version__,
                "openvino": _openvino_version() if use_ov else None,
                "openvino_config": "CPU, INFERENCE_PRECISION_HINT f32, PERFORMANCE_HINT LATENCY" if use_ov else None,
                "input_shapes": {k: list(v) for k, v in base.shapes.items()}}
    return {"models": [m.to_dict(base if k else None) for k, m in enumerate(measurements)], "settings": settings}


def _openvino_version() -> str:
    import openvino

    return getattr(openvino, "__version__", "?")


def _interleaved(runs: list, warmup: int, repeats: int) -> list[list[float]]:
    """Per-run seconds of each ``run``: warm-up, then ``repeats`` runs of each in interleaved blocks."""
    from .latency import run_times

    for run in runs:
        run_times(run, warmup=warmup, min_runs=0)
    times: list[list[float]] = [[] for _ in runs]
    blocks = max(1, repeats // BLOCK_RUNS)
    for b in range(blocks):
        count = repeats // blocks + (1 if b < repeats % blocks else 0)
        for k, run in enumerate(runs):
            times[k] += run_times(run, warmup=0, min_runs=count, max_runs=count)
    return times


# --------------------------------------------------------------------------- output



def _ms(t: dict | None) -> str:
    if not t:
        return "-"
    ms = lambda x: f"{x:.3g}" if x < 1 else f"{x:.2f}"  # noqa: E731 -- sub-millisecond models keep 3 digits
    return f"{ms(t['median_ms'])} ({ms(t['q1_ms'])}-{ms(t['q3_ms'])})"


def table_rows(result: dict) -> list[tuple]:
    """The before/after table: one row per model, speed-ups and ratios against the first."""
    ov = any(m.get("openvino") for m in result["models"])
    head = ["model", "params", "MACs", "MACs ratio", "size", "ORT ms (IQR)", "ORT speed-up", "ORT MB"]
    if ov:
        head += ["OV ms (IQR)", "OV speed-up", "OV MB"]
    rows = [tuple(head)]
    for k, m in enumerate(result["models"]):
        row = [Path(m["path"]).name, short(m["params"]), short(m["macs"]),
               "1.000" if k == 0 else _ratio(m.get("macs_ratio")), short(m["file_bytes"]) + "B",
               _ms(m["onnxruntime"]), "1.00x" if k == 0 else _speed(m.get("onnxruntime_speedup")),
               _mb(m["onnxruntime_peak_memory_mb"])]
        if ov:
            row += [_ms(m.get("openvino")) if m.get("openvino") else ("error" if m.get("openvino_error") else "-"),
                    ("1.00x" if k == 0 and m.get("openvino") else _speed(m.get("openvino_speedup"))),
                    _mb(m.get("openvino_peak_memory_mb"))]
        rows.append(tuple(row))
    return rows


def _ratio(x) -> str:
    return "-" if x is None else f"{x:.3f}"


def _speed(x) -> str:
    return "-" if x is None else f"{x:.2f}x"


def _mb(x) -> str:
    return "-" if x is None else f"{x:.0f}"


def print_bench(result: dict, out=None) -> None:
    from .cli import print_table

    out = out or sys.stdout
    print_table(table_rows(result), out=out)
    s = result["settings"]
    shapes = ", ".join(f"{k}={'x'.join(map(str, v))}" for k, v in s["input_shapes"].items())
    print(f"at {shapes}; threads {s['threads']}; {s['warmup']} warm-up + {s['repeats']} timed runs per model "
          f"and runtime, interleaved; ms: median (quartiles); MB: {s['memory']}", file=out)
    for m in result["models"]:
        if m.get("openvino_error"):
            print(f"OpenVINO could not run {m['path']}: {m['openvino_error']}", file=out)
    if len(result["models"]) > 1:
        for m in result["models"][1:]:
            effs = [f"{rt} {m[f'{rt}_efficiency']:.2f}" for rt in ("onnxruntime", "openvino")
                    if m.get(f"{rt}_efficiency") is not None]
            if effs:
                print(f"{Path(m['path']).name}: efficiency (speed-up / MACs reduction) " + ", ".join(effs), file=out)


# --------------------------------------------------------------------------- CLI

def add_bench_options(p, prefix: str = "") -> None:
    """The measurement options (``--threads`` ...), shared by ``bench`` and ``--bench``."""
    p.add_argument(f"--{prefix}threads", type=int, default=0, metavar="N",
                   help="intra-op threads of onnxruntime and OpenVINO (default: the runtime's own)")
    p.add_argument(f"--{prefix}batch", type=int, metavar="N", help="size of every dynamic batch axis")
    p.add_argument(f"--{prefix}warmup", type=int, default=DEFAULT_WARMUP, metavar="N",
                   help=f"untimed runs per model and runtime (default {DEFAULT_WARMUP})")
    p.add_argument(f"--{prefix}repeats", type=int, default=DEFAULT_REPEATS, metavar="N",
                   help=f"timed runs per model and runtime (default {DEFAULT_REPEATS})")
    p.add_argument(f"--{prefix}no-openvino", action="store_true",
                   help="do not measure in OpenVINO even when it is installed")


def add_bench_flag(p) -> None:
    """``--bench`` (and its ``--bench-*`` options) on a command that writes a model."""
    group = p.add_argument_group("benchmark after writing (--bench)")
    group.add_argument("--bench", action="store_true",
                       help="after writing, measure the original and the written model (as `graphprune bench`) "
                            "and print the before/after table")
    add_bench_options(group, prefix="bench-")


def add_bench_parser(sub) -> None:
    """Register ``graphprune bench`` on the CLI's subparsers."""
    from .cli import INPUT_SHAPE_HELP

    p = sub.add_parser("bench", help="measure latency (onnxruntime, OpenVINO), params, MACs, size and memory",
                       description="Measure one or more ONNX models at the same inputs: latency in "
                                   "onnxruntime and (when installed) OpenVINO, params, MACs, file size and "
                                   "peak memory. The first model is the baseline of speed-ups and ratios.")
    p.add_argument("input", help="baseline .onnx model")
    p.add_argument("others", nargs="*", metavar="PRUNED.onnx", help="models to compare with the baseline")
    add_bench_options(p)
    p.add_argument("--input-shape", action="append", metavar="NAME=DxD...", help=INPUT_SHAPE_HELP)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_bench)


def _progress(args):
    if getattr(args, "quiet", False) or not sys.stderr.isatty():
        return None
    return lambda message: print(f"bench: {message} ...", file=sys.stderr)


def cmd_bench(args) -> int:
    from .cli import _input_shapes

    result = bench([args.input] + list(args.others), threads=args.threads, batch=args.batch,
                   input_shapes=_input_shapes(args), warmup=args.warmup, repeats=args.repeats,
                   openvino=False if args.no_openvino else None, progress=_progress(args))
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print_bench(result)
    return 0


def bench_after_write(args, original, written) -> None:
    """``--bench`` of prune/fold/run: the table original vs written, with the command's shapes."""
    from .cli import _input_shapes

    print()
    if Path(original).resolve() == Path(written).resolve():
        print("bench: the input was overwritten; nothing to compare with (run `graphprune bench` on a copy)")
        return
    result = bench([original, written], threads=args.bench_threads, batch=args.bench_batch,
                   input_shapes=_input_shapes(args), warmup=args.bench_warmup, repeats=args.bench_repeats,
                   openvino=False if args.bench_no_openvino else None, progress=_progress(args))
    print_bench(result)
