"""graphprune vs Torch-Pruning (DepGraph), same models, ratio and criterion, one run.

For each model (pass times: median of 3 runs each, both starting from a model in
memory): Torch-Pruning prunes the PyTorch module (MagnitudePruner,
GroupMagnitudeImportance p=2, generic configuration: only the final classifier
listed in ``ignored_layers``, as its docs ask); graphprune prunes the ONNX
export of the same module (L2 norm over the group, local ratio). Printed per
model: pass time of each (graphprune's with and without its verification),
MACs after, onnxruntime latency of each emitted model, and the ratios.

Usage: python benchmarks/bench_torch_pruning.py [--ratio 0.5] [--runs 30] [MODEL ...]
Needs: pip install -e '.[torch,bench]'
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

import graphprune
from graphprune import models


def ort_latency_ms(path_or_bytes, feed: np.ndarray, runs: int) -> float:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(path_or_bytes, opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    for _ in range(3):
        sess.run(None, {name: feed})
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        sess.run(None, {name: feed})
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def export_module(module, example, path: Path) -> Path:
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (example,), str(path), dynamo=False,
                          input_names=["input"], output_names=["output"])
    return path


REPEATS = 3  # pass times are the median of this many runs, for both tools


def _tp_once(name: str, ratio: float):
    import torch_pruning as tp

    module = models.build(name)
    example = models.example_input(name)
    last_linear = [m for m in module.modules() if isinstance(m, torch.nn.Linear)][-1:]
    start = time.perf_counter()
    pruner = tp.pruner.MagnitudePruner(
        module, example, importance=tp.importance.GroupMagnitudeImportance(p=2),
        pruning_ratio=ratio, ignored_layers=last_linear)
    pruner.step()
    return module, example, time.perf_counter() - start


def run_torch_pruning(name: str, ratio: float, tmp: Path, runs: int) -> dict:
    import torch_pruning as tp

    try:
        timings = []
        for _ in range(REPEATS):
            module, example, seconds = _tp_once(name, ratio)
            timings.append(seconds)
        seconds = statistics.median(timings)
        with torch.no_grad():
            module(example)
        macs, _ = tp.utils.count_ops_and_params(module, example)
        path = export_module(module, example, tmp / f"{name}_tp.onnx")
    except Exception as exc:  # a peer failure is a result, not a crash
        return {"ok": False, "error": f"{exc.__class__.__name__}: {str(exc)[:80]}"}
    return {"ok": True, "seconds": seconds, "macs": macs,
            "latency": ort_latency_ms(str(path), example.numpy(), runs)}


def run_graphprune(name: str, ratio: float, runs: int) -> dict:
    path = models.export_onnx(name, "legacy")
    source = onnx.load(str(path))  # in memory, as Torch-Pruning's module is
    example = models.example_input(name).numpy()
    timings = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        result = graphprune.prune(source, ratio=ratio, importance="l2", verify=False)
        timings.append(time.perf_counter() - start)
    seconds = statistics.median(timings)
    start = time.perf_counter()
    verified = graphprune.prune(source, ratio=ratio, importance="l2")
    seconds_verified = time.perf_counter() - start
    return {"ok": True, "seconds": seconds, "seconds_verified": seconds_verified,
            "macs": result.report["macs"][1], "macs_before": result.report["macs"][0],
            "status": verified.verification.status,
            "latency": ort_latency_ms(result.model.SerializeToString(), example, runs),
            "latency_before": ort_latency_ms(str(path), example, runs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", default=list(models.CORE_MODELS))
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(1)
    head = (f"{'model':20} {'TP s':>7} {'GP s':>7} {'GP+verify s':>11} {'speedup':>8} "
            f"{'TP MACs':>9} {'GP MACs':>9} {'TP ms':>7} {'GP ms':>7} {'lat ratio':>9}  GP check")
    print(head)
    print("-" * len(head))
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.names:
            gp = run_graphprune(name, args.ratio, args.runs)
            tp_ = run_torch_pruning(name, args.ratio, Path(tmp), args.runs)
            if tp_["ok"]:
                print(f"{name:20} {tp_['seconds']:7.2f} {gp['seconds']:7.2f} {gp['seconds_verified']:11.2f} "
                      f"{tp_['seconds'] / gp['seconds']:7.1f}x {tp_['macs'] / 1e6:8.1f}M {gp['macs'] / 1e6:8.1f}M "
                      f"{tp_['latency']:7.2f} {gp['latency']:7.2f} {gp['latency'] / tp_['latency']:9.2f}  {gp['status']}",
                      flush=True)
            else:
                print(f"{name:20} {'FAIL':>7} {gp['seconds']:7.2f} {gp['seconds_verified']:11.2f} {'-':>8} "
                      f"{'-':>9} {gp['macs'] / 1e6:8.1f}M {'-':>7} {gp['latency']:7.2f} {'-':>9}  {gp['status']}"
                      f"  (Torch-Pruning: {tp_['error']})", flush=True)


if __name__ == "__main__":
    main()
