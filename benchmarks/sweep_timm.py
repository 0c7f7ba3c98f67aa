"""Prune the smallest variant of every timm family through the PyTorch front end.

    python benchmarks/sweep_timm.py [--ratio 0.3] [--only REGEX] [--jobs 2] [--json out.json]
                                    [--timeout 300] [--mem-gb 10] [--max-size 224] [NAME ...]

Each model runs in its own subprocess under a timeout and an address-space
cap, so a hang or an out-of-memory kills one row, not the sweep. Per model:
status (exact / approximate / verification-failed / error / oom / timeout /
crash), the exception as one line, the verification error figure, MACs before
and after, how many parameters were sliced (``len(report['initializers'])``)
and groups pruned, the untranslated calls (count, distinct op names, a reason
each), which tracer won and why the other failed, the commonest pin reasons,
what was returned and the seconds taken. A failed prune is traced again to
list its untranslated ops. ``--json`` is rewritten after every row, so a long
run can be polled; its ``meta`` holds the commit and uncommitted diff stat at
the start. Names default to :func:`models.timm_zoo.timm_family_names`.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import resource
import subprocess
import sys
import time
import traceback
import warnings
from concurrent.futures import ThreadPoolExecutor, as_completed

warnings.filterwarnings("ignore")

ROW_PREFIX = "SWEEP-ROW "
FAILED = ("verification-failed", "error", "oom", "timeout", "crash")
OOM_MARKS = ("MemoryError", "can't allocate memory", "std::bad_alloc")


# -- one model (runs in the child) ---------------------------------------------

def one_line(exc: BaseException) -> str:
    """``Type: first line of the message`` (at most 300 characters)."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def op_name(entry: str, gm=None) -> str:
    """The op of an ``untranslated_calls`` entry: ATen overload packet, method, function or module class."""
    match = re.search(r"(call_\w+)\[target=(.*?)\]\(args", entry)
    if not match:
        return entry.split(":")[0][:60]
    kind, target = match.groups()
    if kind == "call_module" and gm is not None:
        try:
            return type(gm.get_submodule(target)).__name__
        except AttributeError:
            return target
    if target.startswith("torch.ops."):
        return ".".join(target.split(".")[2:4])  # torch.ops.aten.foo.default -> aten.foo
    named = re.match(r"<(?:built-in )?(?:function|method) (\S+)", target)
    return named.group(1) if named else target


def _leaf_shapes(output) -> list:
    import torch
    from torch.utils import _pytree as pytree

    return [tuple(t.shape) for t in pytree.tree_leaves(output) if isinstance(t, torch.Tensor)]


def _reason(entry: str) -> str:
    """Why a call was left untranslated: the text after the formatted fx node."""
    return entry.split("}): ", 1)[-1][:160]


def _untranslated_ops(calls: list[str], gm) -> dict:
    ops = collections.Counter(op_name(c, gm) for c in calls)
    reasons = {}
    for call in calls:
        reasons.setdefault(op_name(call, gm), _reason(call))
    return {"untranslated": len(calls), "untranslated_ops": dict(ops.most_common()), "untranslated_reasons": reasons}


def _top_pins(report: dict, count: int = 3) -> dict:
    """The most common reasons parameter groups were pinned, with how many groups each."""
    reasons = collections.Counter(re.sub(r"'[^']*'", "'…'", g["pinned"])[:160] for g in report["pinned"])
    return dict(reasons.most_common(count))


def _traced_ops(name: str, max_size: int) -> dict:
    """Untranslated ops of a fresh trace, for rows whose prune failed before reporting them."""
    from graphprune.frontends.fx import trace
    from graphprune.models.timm_zoo import build_timm

    try:
        model, x = build_timm(name, max_size=max_size)
        traced = trace(model, (x,))
    except Exception as exc:
        return {"trace_error": one_line(exc)}
    return {"tracer": traced.tracer, "trace_errors": traced.trace_errors,
            **_untranslated_ops(traced.untranslated, traced.gm)}


def _where(exc: BaseException) -> str:
    """``file:line function`` of the innermost frame that raised."""
    frame = traceback.extract_tb(exc.__traceback__)[-1]
    path = frame.filename.split("site-packages/")[-1].replace(os.getcwd() + os.sep, "")
    return f"{path}:{frame.lineno} {frame.name}"


def _verification(v) -> dict:
    worst = sorted(v.outputs.items(), key=lambda kv: -kv[1])[:3]
    return {"verification": v.status, "max_relative_error": v.max_relative_error,
            "verification_message": v.message[:300], "worst_outputs": dict(worst)}


def _succeeded(result, model_out_shapes, x) -> dict:
    import torch

    report = result.report
    torch_report = report["torch"]
    row = {"status": result.verification.status, **_verification(result.verification),
           "macs": report["macs"], "params": report["params"],
           "pruned_initializers": len(report["initializers"]),
           "groups_prunable": len(report["groups"]),
           "groups_pruned": sum(1 for g in report["groups"] if g.get("removed")),
           "tracer": torch_report["tracer"], "returned": torch_report["returned"],
           "trace_errors": result.traced.trace_errors, "top_pins": _top_pins(report),
           **_untranslated_ops(torch_report["untranslated_calls"], result.traced.gm)}
    try:
        with torch.no_grad():
            shapes = _leaf_shapes(result.model(x))
        row["runs"] = "ok" if shapes == model_out_shapes else f"output shapes {shapes} != {model_out_shapes}"
    except Exception as exc:
        row["runs"] = one_line(exc)
    return row


def prune_one(name: str, ratio: float, max_size: int) -> dict:
    """Build, prune and check one model; every failure becomes a field of the row."""
    import torch

    import graphprune
    from graphprune.models.timm_zoo import build_timm, family_of

    row = {"model": name, "family": family_of(name)}
    start = time.perf_counter()
    model, x = build_timm(name, max_size=max_size)
    row.update(input=list(x.shape), params_m=round(sum(p.numel() for p in model.parameters()) / 1e6, 3))
    with torch.no_grad():
        expected = _leaf_shapes(model(x))
    row["build_s"] = round(time.perf_counter() - start, 2)
    start = time.perf_counter()
    try:
        result = graphprune.prune(model, ratio, example_inputs=(x,))
        row.update(_succeeded(result, expected, x))
    except graphprune.VerificationError as exc:
        row.update(status="verification-failed", error=one_line(exc))
        if exc.verification is not None:
            row.update(_verification(exc.verification))
    except Exception as exc:  # a sweep reports every failure and goes on
        oom = isinstance(exc, MemoryError) or any(m in str(exc) for m in OOM_MARKS)
        row.update(status="oom" if oom else "error", error=one_line(exc), where=_where(exc))
    row["seconds"] = round(time.perf_counter() - start, 2)
    if row["status"] in FAILED:
        del model
        row.update(_traced_ops(name, max_size))
    return row


def worker(args) -> int:
    row = prune_one(args.worker, args.ratio, args.max_size)
    print(ROW_PREFIX + json.dumps(row), flush=True)
    return 0


# -- the sweep (runs in the parent) ----------------------------------------------

def _limit_memory(gigabytes: float):
    def apply():
        limit = int(gigabytes * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    return apply


def _child_failure(name: str, proc: subprocess.CompletedProcess) -> dict:
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    last = lines[-1][:300] if lines else f"exit code {proc.returncode}"
    oom = any(mark in proc.stderr for mark in OOM_MARKS)
    return {"model": name, "status": "oom" if oom else "crash", "error": last, "returncode": proc.returncode}


def run_child(name: str, args) -> dict:
    """One model in a fresh interpreter under ``--timeout`` and ``--mem-gb``."""
    from graphprune.models.timm_zoo import family_of

    command = [sys.executable, os.path.abspath(__file__), "--worker", name,
               "--ratio", str(args.ratio), "--max-size", str(args.max_size)]
    threads = str(max(1, (os.cpu_count() or 1) // args.jobs))
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    start = time.perf_counter()
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout, env=env,
                              preexec_fn=_limit_memory(args.mem_gb))
    except subprocess.TimeoutExpired:
        row = {"model": name, "status": "timeout", "error": f"no result within {args.timeout:.0f} s"}
    else:
        found = [ln for ln in proc.stdout.splitlines() if ln.startswith(ROW_PREFIX)]
        row = json.loads(found[-1][len(ROW_PREFIX):]) if found else _child_failure(name, proc)
    row.setdefault("family", family_of(name))
    row["wall_s"] = round(time.perf_counter() - start, 1)
    row["finished"] = time.strftime("%H:%M:%S")
    return row


def format_row(row: dict) -> str:
    head = f"{row['family']:26.26s} {row['model']:34.34s} {row['status']:19s}"
    if "macs" not in row:
        ops = ",".join(list(row.get("untranslated_ops", {}))[:4])
        return f"{head} {row.get('error', '')[:110]}" + (f"  [untranslated: {ops}]" if ops else "")
    before, after = row["macs"]
    ops = ",".join(list(row["untranslated_ops"])[:4]) or "-"
    returned = "class" if row["returned"] == "original module" else "GM"
    return (f"{head} MACs {after / max(before, 1):5.3f} of {before / 1e9:6.2f}G  sliced {row['pruned_initializers']:4d}"
            f"  groups {row['groups_pruned']:3d}/{row['groups_prunable']:<3d} {returned:5s}"
            f" err {row['max_relative_error']:.1e}  untr {row['untranslated']:3d} ({ops})"
            f"  runs {row['runs'][:40]}  {row['seconds']:6.1f}s")


def summarize(rows: list[dict]) -> dict:
    """Counts by status, nothing-pruned rows, and untranslated ops by number of families."""
    status = collections.Counter(r["status"] for r in rows)
    nothing = sorted(r["model"] for r in rows if r.get("pruned_initializers") == 0)
    ops = collections.Counter(op for r in rows for op in r.get("untranslated_ops", {}))
    not_running = sorted(r["model"] for r in rows if r.get("runs", "ok") != "ok")
    return {"status": dict(status), "nothing_pruned": nothing, "not_running": not_running,
            "untranslated_ops_by_families": dict(ops.most_common())}


def _write_json(path: str, rows: list[dict], meta: dict) -> None:
    if not path:
        return
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"meta": meta, "summary": summarize(rows), "rows": rows}, f, indent=1)
    os.replace(tmp, path)


def _source_state() -> dict:
    """The commit and uncommitted diff stat of the graphprune checkout being swept."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def git(*argv):
        try:
            return subprocess.run(["git", "-C", root, *argv], capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.SubprocessError):
            return ""
    return {"commit": git("rev-parse", "HEAD").strip(), "diff_stat": git("diff", "--stat").strip().splitlines()}


def _names(args) -> list[str]:
    from graphprune.models.timm_zoo import timm_family_names

    names = args.names or timm_family_names()
    return [n for n in names if re.search(args.only, n)] if args.only else names


def sweep(args) -> list[dict]:
    names = _names(args)
    meta = {"started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "ratio": args.ratio, "models": len(names),
            "timeout": args.timeout, "mem_gb": args.mem_gb, "max_size": args.max_size, **_source_state()}
    print(f"{len(names)} models, {args.jobs} jobs, started {meta['started']}", flush=True)
    rows = []
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = [pool.submit(run_child, name, args) for name in names]
        for future in as_completed(futures):
            rows.append(future.result())
            print(format_row(rows[-1]), flush=True)
            _write_json(args.json, rows, meta)
    rows.sort(key=lambda r: r["family"])
    meta["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    _write_json(args.json, rows, meta)
    return rows


def print_summary(rows: list[dict]) -> None:
    summary = summarize(rows)
    print("\nsummary:", summary["status"], "of", len(rows))
    print("nothing pruned:", ", ".join(summary["nothing_pruned"]) or "-")
    print("pruned model does not run:", ", ".join(summary["not_running"]) or "-")
    print("untranslated ops (families affected):")
    for op, count in summary["untranslated_ops_by_families"].items():
        print(f"  {count:3d}  {op}")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="timm model names (default: one per family)")
    parser.add_argument("--ratio", type=float, default=0.3)
    parser.add_argument("--only", default="", help="regex on the model name")
    parser.add_argument("--json", default="")
    parser.add_argument("--jobs", type=int, default=1, help="parallel workers (this machine: 2 cores)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per model")
    parser.add_argument("--mem-gb", type=float, default=10.0, help="address-space cap per model")
    parser.add_argument("--max-size", type=int, default=224, help="largest input side")
    parser.add_argument("--worker", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.jobs = max(1, min(args.jobs, os.cpu_count() or 1))
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker(args)
    rows = sweep(args)
    print_summary(rows)
    return 1 if any(r["status"] in FAILED for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
