"""graphprune on dynamic-axis exports: prune and fold, next to onnxslim, one run.

For every (model, exporter) pair of ``graphprune.models.dynamic`` that
exports (HF transformers, torchvision, the YOLOv8-style detector, the
paddle2onnx-style constant-weight graph), in process:

* prune: wall time of ``graphprune.prune(path, ratio=0.5)`` (the API behind
  ``graphprune prune --ratio 0.5``, verification included), at the model's
  declared ``dynamic_input_shapes`` when ``prune`` takes ``input_shapes``;
  the MACs ratio after/before; whether a q/k/v projection group was pruned
  (``attn``) and an FFN group (``ffn``), found from graph structure since
  exporters drop module names; groups pruned (``removed > 0``) of the
  prunable ones, and pinned parameter groups.
* fold: node count and wall time of ``graphprune.fold`` (verified) against
  ``onnxslim.slim`` on the same file.

A failure of either tool is a result: its first line is recorded and the
run goes on.

Usage:
    python benchmarks/bench_dynamic.py
    python benchmarks/bench_dynamic.py --models bert,llama,yolov8 --exporters dynamo
    python benchmarks/bench_dynamic.py --json dynamic.json
Needs: pip install -e '.[torch,bench]' transformers
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import io
import json
import time
import warnings

import onnx

import graphprune
from graphprune.models import dynamic as dyn

RATIO = 0.5


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:160] if text else ''}"


@contextlib.contextmanager
def quiet():
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def timed(fn):
    start = time.perf_counter()
    with quiet():
        out = fn()
    return out, time.perf_counter() - start


def bench_prune(name: str, exporter: str, path, model: onnx.ModelProto) -> dict:
    kwargs = {}
    if "input_shapes" in inspect.signature(graphprune.prune).parameters:
        kwargs["input_shapes"] = dyn.dynamic_input_shapes(name, exporter)
    row = {"prune_shapes": "declared" if kwargs else "derived"}
    try:
        result, row["prune_s"] = timed(lambda: graphprune.prune(str(path), ratio=RATIO, **kwargs))
    except Exception as exc:  # a failure is a result
        row["prune_error"] = first_line(exc)
        return row
    report = result.report
    before, after = report["macs"]
    counts = dyn.pruned_roles(report, dyn.projection_roles(model))
    row.update(
        verification=result.verification.status,
        macs=[before, after],
        macs_ratio=after / before if before else None,
        attention_pruned=counts["attention"] > 0,
        ffn_pruned=counts["ffn"] > 0,
        groups_pruned=sum(1 for g in report["groups"] if g.get("removed")),
        groups_prunable=len(report["groups"]),
        groups_pinned=len(report["pinned"]),
    )
    return row


def bench_fold(path, model: onnx.ModelProto) -> dict:
    row = {"nodes": len(model.graph.node)}
    try:
        (folded, _), row["fold_s"] = timed(lambda: graphprune.fold(str(path)))
        row["fold_nodes"] = len(folded.graph.node)
    except Exception as exc:
        row["fold_error"] = first_line(exc)
    try:
        import onnxslim

        slimmed, row["slim_s"] = timed(lambda: onnxslim.slim(onnx.load(str(path))))
        row["slim_nodes"] = len(slimmed.graph.node)
    except Exception as exc:
        row["slim_error"] = first_line(exc)
    return row


def bench_pair(name: str, exporter: str) -> dict:
    row = {"model": name, "exporter": exporter,
           "dynamic": sorted({d for v in dyn.dynamic_axes(name, exporter).values() for d in v.values()})}
    try:
        path = dyn.export_dynamic(name, exporter)
    except ValueError as exc:
        row["skipped"] = first_line(exc)
        return row
    model = onnx.load(str(path))
    row.update(bench_prune(name, exporter, path, model))
    row.update(bench_fold(path, model))
    return row


def fmt(row: dict) -> str:
    head = f"{row['model']:18} {row['exporter']:7}"
    if "skipped" in row:
        return f"{head} skipped: {row['skipped']}"
    if "prune_error" in row:
        prune = f"{'FAIL':>8} {'':>6} {'':>4} {'':>4} {'':>9} {'':>6}"
    else:
        yes = {True: "yes", False: "no"}
        prune = (f"{row['prune_s']:8.2f} {row['macs_ratio']:6.3f} {yes[row['attention_pruned']]:>4} "
                 f"{yes[row['ffn_pruned']]:>4} {row['groups_pruned']:>4}/{row['groups_prunable']:<4} "
                 f"{row['groups_pinned']:>6}")
    fold = (f"{row['nodes']:>5}→{row['fold_nodes']:<5} {row['fold_s']:7.2f}" if "fold_nodes" in row
            else f"{'FAIL':>11} {'':>7}")
    slim = (f"{row['slim_nodes']:>6} {row['slim_s']:7.2f}" if "slim_nodes" in row else f"{'FAIL':>6} {'':>7}")
    errors = "; ".join(f"{k.split('_')[0]}: {row[k]}" for k in ("prune_error", "fold_error", "slim_error") if k in row)
    return f"{head} {prune} {fold} {slim}  {errors}"


HEADER = (f"{'model':18} {'export':7} {'prune s':>8} {'MACs':>6} {'attn':>4} {'ffn':>4} {'pruned':>9} "
          f"{'pinned':>6} {'fold nodes':>11} {'fold s':>7} {'slim':>6} {'slim s':>7}  errors")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="", help="comma-separated names (default: all)")
    parser.add_argument("--exporters", default=",".join(dyn.EXPORTERS), help="comma-separated: legacy,dynamo")
    parser.add_argument("--json", metavar="FILE", help="also write the raw rows as JSON")
    args = parser.parse_args()
    names = [n for n in args.models.split(",") if n] or list(dyn.DYNAMIC_MODELS)
    unknown = [n for n in names if n not in dyn.DYNAMIC_MODELS]
    if unknown:
        parser.error(f"unknown models {unknown}; choose from {', '.join(dyn.DYNAMIC_MODELS)}")
    exporters = [e for e in args.exporters.split(",") if e]
    print(HEADER)
    print("-" * len(HEADER))
    rows = []
    for name in names:
        for exporter in exporters:
            row = bench_pair(name, exporter)
            rows.append(row)
            print(fmt(row), flush=True)
    if rows and all(r.get("prune_shapes") == "derived" for r in rows if "prune_shapes" in r):
        print("\nnote: graphprune.prune has no input_shapes yet; MACs are at the shapes it derives")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
