"""Torch-Pruning (DepGraph) vs graphprune on the same PyTorch modules, one run.

Both tools prune a freshly built copy of each model (``build_torch(name)``,
same seed, identical weights) at the same channel ratio with L2 magnitude
importance:

* Torch-Pruning: the generic DepGraph recipe -- ``tp.pruner.MetaPruner`` with
  ``MagnitudeImportance(p=2)``, ``pruning_ratio=ratio``, ``ignored_layers`` =
  every ``nn.Linear`` with ``out_features == 1000`` plus every Conv/Linear
  whose output reaches a model output without passing another Conv/Linear
  (found by walking the autograd graph back from the outputs), ``num_heads``
  for ``nn.MultiheadAttention`` modules (and for ``<attn>.qkv`` Linears of
  modules with a ``num_heads`` attribute, as in TP's ViT examples), then
  ``pruner.step()`` once. No model-specific post-processing.
* graphprune: ``graphprune.prune(model, ratio, example_inputs=x,
  importance="l2", verify=True)``, and again with ``verify=False`` for timing.

Every (tool, model) pair runs in its own fresh subprocess, single-threaded
(``torch.set_num_threads(1)`` for pruning and latency alike) and killed past
``--timeout`` seconds or ``--mem-limit-gb`` of RSS, so memory, crashes and
hangs are isolated. Reported per pair:

* result: ``ok`` or the one-line failure reason (an exception while pruning,
  a pruned model that no longer runs on the example input, or one whose
  output shapes changed);
* pass time: wall clock of the pruning call only (TP: pruner construction +
  ``step()``; graphprune: ``prune()``, which includes its verification; the
  ``verify=False`` time is its own column), median over ``--repeats`` calls
  on fresh copies in the same subprocess after one warm-up call (which pays
  one-time costs such as lazy imports and tracer initialisation; its time is
  shown in parentheses);
* peak memory: increase of ``ru_maxrss`` (a high-water mark) from after the
  model is built to after the pruning call. The libraries (and torch.fx /
  torch.export) are imported before the first reading, so imports don't count;
* MACs and params after / before, counted with the same counter for both
  tools: ``torch_pruning.utils.count_ops_and_params`` (module hooks: it cannot
  see ops inside a ``torch.fx.GraphModule`` made by torch.export, where it
  reports ~0) and, as a cross-check that works on any module,
  ``torch.utils.flop_counter.FlopCounterMode`` (aten-level, FLOPs / 2);
* latency of the pruned model: torch CPU with 1 thread and onnxruntime (1
  intra-op thread) after ``torch.onnx.export`` (``dynamo=False``, falling back
  to ``dynamo=True``); median of ``--runs`` runs after 3 warm-up runs.
  The ``dense`` row gives the unpruned model's numbers.

Usage:
    python benchmarks/bench_torch_vs_tp.py                      # default 16 models
    python benchmarks/bench_torch_vs_tp.py --models resnet18,vgg11_bn --ratio 0.3
    python benchmarks/bench_torch_vs_tp.py --models all --max-params 30e6 --only 'resnet|mobilenet'
    python benchmarks/bench_torch_vs_tp.py --json results.json  # also dump raw results

Needs: pip install -e '.[torch,bench]'  (torch, torchvision, torch-pruning, onnxruntime)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_MODELS = [
    "resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_large", "efficientnet_b0", "densenet121",
    "googlenet", "regnet_y_400mf", "vgg11_bn", "resnext50_32x4d", "shufflenet_v2_x1_0", "squeezenet1_0",
    "convnext_tiny", "swin_t", "vit_b_16", "maxvit_t",
]
TOOLS = ("dense", "tp", "gp", "gp_noverify")  # "dense" measures the unpruned model
WARMUP = 3
THREADS = 1  # torch threads in every worker: pruning and latency alike (steadier under CPU contention)


# --------------------------------------------------------------------------- worker side
# Everything below until "parent side" runs inside the per-(tool, model) subprocess.

def max_rss_mb() -> float:
    """The process's peak resident set size so far, in MiB (Linux reports KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def one_line(exc: BaseException, limit: int = 160) -> str:
    text = " ".join(str(exc).split())
    text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def tensor_leaves(out) -> list:
    import torch
    import torch.utils._pytree as pytree

    return [t for t in pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]


def run_forward(model, x):
    import torch

    with torch.no_grad():
        return model(x)


def weights_checksum(model) -> float:
    """A cheap fingerprint of the weights, to check both tools got the same model."""
    import torch

    with torch.no_grad():
        return float(sum(float(t.sum()) for t in model.state_dict().values() if t.is_floating_point()))


def output_layers(model, x) -> list:
    """Conv/Linear modules whose output reaches a model output through parameter-free ops only."""
    import torch

    produced, hooks = {}, []

    def record(module, _inputs, out):
        if isinstance(out, torch.Tensor) and out.grad_fn is not None:
            produced[out.grad_fn] = module

    for module in model.modules():
        if isinstance(module, (torch.nn.Linear, torch.nn.modules.conv._ConvNd)):
            hooks.append(module.register_forward_hook(record))
    try:
        with torch.enable_grad():
            out = model(x)
    finally:
        for hook in hooks:
            hook.remove()
    found, seen = [], set()
    stack = [t.grad_fn for t in tensor_leaves(out) if t.grad_fn is not None]
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        if fn in produced:
            found.append(produced[fn])
        else:
            stack.extend(parent for parent, _ in fn.next_functions)
    return found


def tp_ignored_layers(model, x) -> list:
    """The generic recipe: the 1000-class Linear head(s) and any layer producing a model output."""
    import torch

    ignored = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m.out_features == 1000]
    for module in output_layers(model, x):
        if not any(module is m for m in ignored):
            ignored.append(module)
    return ignored


def tp_num_heads(model) -> dict:
    import torch

    heads = {}
    for module in model.modules():
        if isinstance(module, torch.nn.MultiheadAttention):
            heads[module] = module.num_heads
        elif isinstance(getattr(module, "qkv", None), torch.nn.Linear) and isinstance(
                getattr(module, "num_heads", None), int):
            heads[module.qkv] = module.num_heads
    return heads


def prune_tp(model, x, ratio: float):
    import torch_pruning as tp

    pruner = tp.pruner.MetaPruner(
        model, x, importance=tp.importance.MagnitudeImportance(p=2), pruning_ratio=ratio,
        ignored_layers=tp_ignored_layers(model, x), num_heads=tp_num_heads(model))
    pruner.step()
    return model, {}


def prune_gp(model, x, ratio: float, verify: bool):
    import graphprune

    result = graphprune.prune(model, ratio, example_inputs=x, importance="l2", verify=verify)
    torch_info = result.report.get("torch", {})
    return result.model, {"verification": result.report.get("verification", {}).get("status"),
                          "returned": torch_info.get("returned"), "tracer": torch_info.get("tracer")}


def hides_ops_from_hooks(model) -> bool:
    """A GraphModule calling conv/linear/matmul as functions (torch.export style): module hooks miss them."""
    import torch

    if not isinstance(model, torch.fx.GraphModule):
        return False
    return any(node.op == "call_function" and re.search(r"conv|linear|addmm|matmul|\bmm\b|bmm", str(node.target))
               for node in model.graph.nodes)


def count_macs(model, x) -> dict:
    import torch
    import torch_pruning as tp
    from torch.utils.flop_counter import FlopCounterMode

    out = {}
    try:
        macs, params = tp.utils.count_ops_and_params(model, x)
        out.update(macs_tp=float(macs), params=int(params))
        if hides_ops_from_hooks(model):
            out.update(macs_tp=None, macs_tp_error="GraphModule with functional conv/linear: hook counter blind")
    except Exception as exc:
        out.update(macs_tp=None, macs_tp_error=one_line(exc))
        out["params"] = sum(p.numel() for p in model.parameters())
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
        out["macs_aten"] = counter.get_total_flops() / 2
    except Exception as exc:
        out.update(macs_aten=None, macs_aten_error=one_line(exc))
    return out


def median_ms(fn, runs: int) -> float:
    for _ in range(WARMUP):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def torch_latency_ms(model, x, runs: int) -> float:
    import torch

    with torch.no_grad():
        return median_ms(lambda: model(x), runs)


def export_onnx(model, x, path: Path) -> str:
    """Export with the TorchScript exporter, else dynamo; returns which one worked."""
    import contextlib
    import io
    import warnings

    import torch

    errors = []
    for dynamo in (False, True):
        try:
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
                warnings.simplefilter("ignore")
                torch.onnx.export(model, (x,), str(path), dynamo=dynamo)
            return "dynamo" if dynamo else "torchscript"
        except Exception as exc:
            errors.append(f"{'dynamo' if dynamo else 'torchscript'}: {one_line(exc, 100)}")
    raise RuntimeError("; ".join(errors))


def ort_latency_ms(path: Path, x, runs: int) -> float:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: x.numpy()}
    return median_ms(lambda: session.run(None, feed), runs)


def measure_model(model, x, runs: int, workdir: Path, tag: str) -> dict:
    """MACs, params, output shapes and latencies of a (pruned or dense) model."""
    out = count_macs(model, x)
    out["shapes"] = [list(t.shape) for t in tensor_leaves(run_forward(model, x))]
    out["torch_ms"] = torch_latency_ms(model, x, runs)
    path = workdir / f"{tag}.onnx"
    try:
        out["exporter"] = export_onnx(model, x, path)
        out["ort_ms"] = ort_latency_ms(path, x, runs)
    except Exception as exc:
        out["ort_error"] = one_line(exc)
    return out


def preload_libraries() -> None:
    """Import everything the pruning calls use, so ru_maxrss deltas don't count imports."""
    import torch.export  # noqa: F401  (graphprune's tracer may use it)
    import torch.fx  # noqa: F401
    import torch_pruning  # noqa: F401

    import graphprune  # noqa: F401
    import graphprune.torch_prune  # noqa: F401


def prune_once(tool: str, name: str, ratio: float):
    """Build a fresh model, prune it; returns (pruned, x, info, seconds, rss increase MiB, checksum)."""
    from graphprune.models.torch_zoo import build_torch

    model, x = build_torch(name)
    checksum = weights_checksum(model)
    rss_before = max_rss_mb()
    start, cpu_start = time.perf_counter(), time.process_time()
    if tool == "tp":
        pruned, info = prune_tp(model, x, ratio)
    else:
        pruned, info = prune_gp(model, x, ratio, verify=(tool == "gp"))
    seconds = time.perf_counter() - start
    info["cpu_s"] = time.process_time() - cpu_start
    return pruned, x, info, seconds, max_rss_mb() - rss_before, checksum


def _first(r: dict) -> str:
    """`` (first call s)`` where the warm-up call was timed."""
    return f" ({r['first_seconds']:.2f})" if r.get("first_seconds") is not None else ""


def run_worker(tool: str, name: str, ratio: float, runs: int, repeats: int, max_params: float) -> dict:
    import warnings

    import torch

    warnings.filterwarnings("ignore")
    torch.set_num_threads(THREADS)
    preload_libraries()
    result = {"tool": tool, "model": name, "ok": False}
    with tempfile.TemporaryDirectory() as tmp:
        if tool == "dense":
            from graphprune.models.torch_zoo import build_torch

            model, x = build_torch(name)
            params = sum(p.numel() for p in model.parameters())
            if params > max_params:
                return {**result, "skipped": f"{params / 1e6:.0f}M params > --max-params"}
            result["checksum"] = weights_checksum(model)
            result.update(measure_model(model, x, runs, Path(tmp), "dense"), ok=True)
            return result
        timings = []
        for attempt in range(repeats + 1):  # the first call warms up (reported on its own)
            try:
                pruned, x, info, seconds, rss_mb, checksum = prune_once(tool, name, ratio)
            except Exception as exc:
                return {**result, "error": one_line(exc)}
            timings.append(seconds)
            if attempt == 0:  # later attempts build more models; only the first RSS delta is clean
                result.update(info, mem_mb=rss_mb, checksum=checksum)
        result.update(seconds=statistics.median(timings[1:]), first_seconds=timings[0], timings=timings)
        try:
            run_forward(pruned, x)
        except Exception as exc:
            return {**result, "error": f"pruned model fails forward: {one_line(exc)}"}
        result["ok"] = True
        if tool != "gp_noverify":  # the verified gp run measures the (identical) pruned model
            try:
                result.update(measure_model(pruned, x, runs, Path(tmp), tool))
            except Exception as exc:
                result["notes"] = [f"measuring failed: {one_line(exc, 100)}"]
    return result


# --------------------------------------------------------------------------- parent side

def select_models(spec: str, only: str | None, max_params: float) -> list[str]:
    from graphprune.models.torch_zoo import torch_model_names

    if spec == "default":
        names = list(DEFAULT_MODELS)
    elif spec == "all":
        names = [n for n in torch_model_names() if param_count_upper_bound(n) <= max_params]
    else:
        names = [n.strip() for n in spec.split(",") if n.strip()]
        unknown = sorted(set(names) - set(torch_model_names()))
        if unknown:
            raise SystemExit(f"unknown model(s): {', '.join(unknown)}; see torch_model_names()")
    if only:
        names = [n for n in names if re.search(only, n)]
    return names


def param_count_upper_bound(name: str) -> float:
    """Params counted on the meta device (no memory); 0 when that fails (the dense worker checks then)."""
    import torch

    from graphprune.models.torch_zoo import build_torch

    try:
        with torch.device("meta"):
            model, _ = build_torch(name)
        return sum(p.numel() for p in model.parameters())
    except Exception:
        return 0


def rss_gb(pid: int) -> float:
    """Current resident set size of a process, in GiB (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**30
    except (OSError, ValueError, IndexError):
        return 0.0


def watch(proc: subprocess.Popen, timeout: float, mem_limit_gb: float) -> tuple[int, float, str | None]:
    """Wait for the worker, killing it past the time or memory limit: (status, peak RSS GiB, kill reason)."""
    deadline, killed = time.monotonic() + timeout, None
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return proc.returncode, usage.ru_maxrss / 2**20, killed
        if killed is None and time.monotonic() > deadline:
            killed = f"timeout after {timeout:.0f} s"
        elif killed is None and rss_gb(proc.pid) > mem_limit_gb:
            killed = f"exceeded the {mem_limit_gb:.1f} GiB memory limit (--mem-limit-gb)"
        if killed:
            proc.kill()
        time.sleep(0.05)


def run_in_subprocess(tool: str, name: str, args) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out_path, err_path = Path(tmp) / "result.json", Path(tmp) / "stderr.txt"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", tool, "--worker-model", name,
               "--worker-out", str(out_path), "--ratio", str(args.ratio), "--runs", str(args.runs),
               "--repeats", str(args.repeats),
               # --max-params filters --models all only; named models always run
               "--max-params", str(args.max_params if args.models == "all" else float("inf"))]
        start = time.perf_counter()
        with open(err_path, "w") as err:
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
            returncode, peak_gb, killed = watch(proc, args.timeout, args.mem_limit_gb)
        if killed:
            result = {"tool": tool, "model": name, "ok": False, "error": killed}
        elif out_path.exists():
            result = json.loads(out_path.read_text())
        else:
            lines = [line for line in err_path.read_text(errors="replace").splitlines() if line.strip()]
            reason = lines[-1].strip() if lines else ""
            how = f"killed by signal {-returncode}" if returncode < 0 else f"exit {returncode}"
            result = {"tool": tool, "model": name, "ok": False,
                      "error": f"worker crashed ({how}, peak RSS {peak_gb:.1f} GiB)"
                               f"{': ' + reason[:120] if reason else ''}"}
        result.update(wall_s=time.perf_counter() - start, worker_peak_rss_gb=peak_gb)
        return result


def check_against_dense(results: dict, dense: dict) -> None:
    """Fail pruned models whose output shapes changed; flag models built with different weights."""
    for result in results.values():
        if result.get("ok") and "shapes" in result and result["shapes"] != dense.get("shapes"):
            result["ok"] = False
            result["error"] = f"output shape changed: {dense.get('shapes')} -> {result['shapes']}"
        if "checksum" in result and "checksum" in dense and result["checksum"] != dense["checksum"]:
            result.setdefault("notes", []).append("weights differ from the dense build")


def fmt_num(value, unit: str = "") -> str:
    if value is None:
        return "-"
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.2f}{suffix}{unit}"
    return f"{value:.0f}{unit}"


def fmt_after_before(after, before) -> str:
    if after is None or before is None:
        return "-"
    share = f" ({100 * after / before:.0f}%)" if before else ""
    return f"{fmt_num(after)} / {fmt_num(before)}{share}"


def fmt_float(value, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def result_cell(result: dict) -> str:
    if result.get("skipped"):
        return f"skipped ({result['skipped']})"
    if not result.get("ok"):
        return "FAIL: " + result.get("error", "?").replace("|", "/")
    details = [d for d in (result.get("verification"), result.get("returned")) if d]
    details += result.get("notes", [])
    return "ok" + (f" ({', '.join(details)})" if details else "")


def table_rows(name: str, res: dict) -> list[list[str]]:
    dense = res.get("dense", {})
    rows = []
    for tool in ("dense", "tp", "gp"):
        r = res.get(tool)
        if r is None:
            continue
        latency_ok = r.get("ok")
        if tool == "dense":
            macs_tp, macs_aten, params = (fmt_num(r.get(k)) for k in ("macs_tp", "macs_aten", "params"))
            seconds, seconds_nv, mem = "-", "-", "-"
        else:
            macs_tp = fmt_after_before(r.get("macs_tp"), dense.get("macs_tp"))
            if r.get("ok") and r.get("macs_tp_error"):
                macs_tp = "n/a (GraphModule)" if "GraphModule" in r["macs_tp_error"] else "counter failed"
            macs_aten = fmt_after_before(r.get("macs_aten"), dense.get("macs_aten"))
            params = fmt_after_before(r.get("params"), dense.get("params"))
            seconds, mem = fmt_float(r.get("seconds")) + _first(r), fmt_float(r.get("mem_mb"), 0)
            seconds_nv = "-"
            if tool == "gp":
                nv = res.get("gp_noverify", {})
                seconds_nv = fmt_float(nv.get("seconds")) + _first(nv) if nv.get("ok") else "FAIL"
                if nv.get("mem_mb") is not None:
                    mem += f" / {nv['mem_mb']:.0f}"
        ort = fmt_float(r.get("ort_ms")) if "ort_ms" in r else ("export failed" if r.get("ort_error") else "-")
        rows.append([name, {"dense": "unpruned", "tp": "Torch-Pruning", "gp": "graphprune"}[tool],
                     result_cell(r), seconds, seconds_nv, mem, macs_tp, macs_aten, params,
                     fmt_float(r.get("torch_ms")) if latency_ok else "-", ort if latency_ok else "-"])
    return rows


def markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def ratio(a, b):
    return a / b if a is not None and b else None


def comparison_rows(all_results: dict) -> list[list[str]]:
    rows = []
    for name, res in all_results.items():
        tp_, gp = res.get("tp", {}), res.get("gp", {})
        if not (tp_.get("ok") and gp.get("ok")):
            continue
        rows.append([name] + [fmt_float(ratio(gp.get(k), tp_.get(k))) for k in
                              ("macs_tp", "macs_aten", "torch_ms", "ort_ms", "seconds", "mem_mb")])
    return rows


def median_or_none(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summary(all_results: dict) -> str:
    ran = [res for res in all_results.values() if not res.get("dense", {}).get("skipped")]

    def pruned(tool):
        return sum(1 for res in ran if res.get(tool, {}).get("ok"))

    both = [res for res in ran if res.get("tp", {}).get("ok") and res.get("gp", {}).get("ok")]
    speedup = median_or_none([ratio(r["tp"].get("seconds"), r["gp"].get("seconds")) for r in both])
    nv_both = [r for r in both if r.get("gp_noverify", {}).get("ok")]
    speedup_nv = median_or_none([ratio(r["tp"].get("seconds"), r["gp_noverify"].get("seconds"))
                                 for r in nv_both])
    memory = median_or_none([ratio(r["gp"].get("mem_mb"), r["tp"].get("mem_mb")) for r in both])
    return (f"Summary: models pruned -- Torch-Pruning {pruned('tp')}/{len(ran)}, graphprune {pruned('gp')}/{len(ran)} "
            f"(verify=False: {pruned('gp_noverify')}/{len(ran)}); over the {len(both)} models both pruned: "
            f"median pass-time speed-up of graphprune vs TP (TP s / GP s) {fmt_float(speedup)}x with verification, "
            f"{fmt_float(speedup_nv)}x without; median peak-memory ratio GP/TP {fmt_float(memory)}")


def run_benchmark(args) -> dict:
    names = select_models(args.models, args.only, args.max_params)
    tools = [t for t in TOOLS if t == "dense" or t in args.tools.split(",")]
    all_results = {}
    for index, name in enumerate(names, 1):
        res = all_results[name] = {}
        for tool in tools:
            res[tool] = run_in_subprocess(tool, name, args)
            r = res[tool]
            status = "skipped" if r.get("skipped") else ("ok" if r.get("ok") else "FAIL " + r.get("error", "?"))
            print(f"[{index}/{len(names)}] {name:28} {tool:12} {status[:110]:110} "
                  f"({r.get('wall_s', 0):.0f} s)", file=sys.stderr, flush=True)
            if r.get("skipped") or (tool == "dense" and not r.get("ok")):
                break  # too big, or the model itself does not build/run: nothing to compare
        if "dense" in res and res["dense"].get("ok"):
            check_against_dense(res, res["dense"])
    return all_results


def report(all_results: dict, args) -> None:
    header = ["model", "tool", "result", "pass s", "pass s verify=False", "peak ΔRSS MB",
              "MACs after / before (TP counter)", "MACs after / before (aten)", "params after / before",
              "torch ms", "ORT ms"]
    rows = [row for name, res in all_results.items() for row in table_rows(name, res)]
    print(f"\nratio={args.ratio}, L2 magnitude importance, {THREADS} torch thread; pass s: median of "
          f"{args.repeats} calls after a warm-up call (its time in parentheses); latencies: median of "
          f"{args.runs} runs; graphprune ΔRSS: verify / verify=False\n")
    print(markdown(header, rows))
    print("\nGP / TP ratios (models where both succeeded; < 1 means graphprune is smaller/faster):\n")
    print(markdown(["model", "MACs after (TP counter)", "MACs after (aten)", "torch latency", "ORT latency",
                    "pass time", "peak ΔRSS"], comparison_rows(all_results)))
    print("\n" + summary(all_results))


def total_memory_gb() -> float:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Run Torch-Pruning (DepGraph) and graphprune side by side on torchvision models "
                    "and print a markdown table.", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--models", default="default",
                        help="'default' (16 representative classifiers), 'all' (every name of "
                             "torch_model_names() with at most --max-params parameters) or a comma-separated list")
    parser.add_argument("--only", metavar="REGEX", help="keep only models whose name matches this regex")
    parser.add_argument("--max-params", type=float, default=100e6,
                        help="with --models all, skip models with more parameters than this")
    parser.add_argument("--ratio", type=float, default=0.5, help="fraction of channels removed by both tools")
    parser.add_argument("--runs", type=int, default=20, help="timed runs per latency measurement (median)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="prune this many fresh copies per pair (same process) and report the median pass "
                             "time; the first call pays one-time warm-up (memory is always from the first)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds allowed per (tool, model) subprocess")
    parser.add_argument("--mem-limit-gb", type=float, default=round(total_memory_gb() * 0.6, 1),
                        help="kill a (tool, model) subprocess whose RSS exceeds this many GiB "
                             "(default: 60%% of this machine's RAM), instead of waking the OOM killer")
    parser.add_argument("--tools", default="tp,gp,gp_noverify",
                        help="comma-separated subset of tp, gp, gp_noverify (the unpruned baseline always runs)")
    parser.add_argument("--json", metavar="PATH", help="also write the raw per-pair results to this JSON file")
    # internal: the per-(tool, model) subprocess
    parser.add_argument("--worker", choices=TOOLS, help=argparse.SUPPRESS)
    parser.add_argument("--worker-model", help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.worker:
        result = run_worker(args.worker, args.worker_model, args.ratio, args.runs, args.repeats, args.max_params)
        Path(args.worker_out).write_text(json.dumps(result))
        return
    all_results = run_benchmark(args)
    if args.json:
        Path(args.json).write_text(json.dumps(all_results, indent=1))
    report(all_results, args)


if __name__ == "__main__":
    main()
