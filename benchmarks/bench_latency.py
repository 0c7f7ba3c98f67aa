"""Latency speed-up against MACs reduction, with and without ``--round-to`` (issue 13).

For each model: export it (cached), prune at ``--ratio`` (default 0.5, local,
l2) once per ``--round-to`` value (default 1, 8, 16), and measure the
original and every pruned model together with ``graphprune.bench`` (the same
inputs, warm-up, then timed runs taken in interleaved blocks so that the
shared machine's load hits all of them alike) in onnxruntime and, when
installed, OpenVINO (CPU, f32). Per pruned model:

* MACs reduction = MACs before / MACs after (graphprune's counts at the
  measured shapes);
* speed-up = median latency before / median latency after;
* efficiency = speed-up / MACs reduction (1.0: latency falls as much as
  MACs; Torch-Pruning's pruned exports measured a median of 0.76 here).

Prints one row per (model, round-to) and the median efficiency per
round-to and runtime.

Models: the torchvision classifiers of ``models.CORE_MODELS`` (legacy
exporter, 1x3x224x224) and the tiny Hugging Face families of
``models.dynamic`` (the same configs as ``models/hf_zoo.py``: 2 layers,
width 256; text at 1x128 tokens, ViT at 1x3x64x64).

Usage: python benchmarks/bench_latency.py [--threads 1] [--repeats 40] [--round-to 1 8 16]
           [--models resnet18 ...] [--hf bert gpt2 ...] [--no-openvino] [--json OUT.json]
Needs: pip install -e '.[torch,bench,openvino]'
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import graphprune
from graphprune import models
from graphprune.bench import bench

TORCHVISION = [m for m in models.CORE_MODELS if m in models.available_models() and not m.endswith("_block")]
HF = ["bert", "gpt2", "llama", "vit"]
HF_SHAPES = {"bert": {"input_ids": (1, 128), "attention_mask": (1, 128)},
             "gpt2": {"input_ids": (1, 128), "attention_mask": (1, 128)},
             "llama": {"input_ids": (1, 128), "attention_mask": (1, 128)},
             "vit": {"pixel_values": (1, 3, 64, 64)}}


def export(name: str) -> tuple[Path, dict | None]:
    if name in HF_SHAPES:
        from graphprune.models import dynamic

        return dynamic.export_dynamic(name, "legacy"), HF_SHAPES[name]
    return models.export_onnx(name, "legacy"), None


def measure_model(name: str, args, tmp: Path) -> list[dict]:
    src, shapes = export(name)
    pruned, rows = [], []
    for r in args.round_to:
        start = time.perf_counter()
        result = graphprune.prune(src, ratio=args.ratio, round_to=r, input_shapes=shapes, verify=not args.no_verify)
        out = tmp / f"{name}-r{r}.onnx"
        graphprune.save(result.model, out)
        pruned.append((r, out, result.verification.status if result.verification else "skipped",
                       time.perf_counter() - start))
    measured = bench([src] + [p for _, p, _, _ in pruned], threads=args.threads, input_shapes=shapes,
                     warmup=args.warmup, repeats=args.repeats, openvino=False if args.no_openvino else None)
    base = measured["models"][0]
    for (r, _, status, seconds), m in zip(pruned, measured["models"][1:]):
        rows.append({"model": name, "round_to": r, "verification": status, "prune_s": round(seconds, 2),
                     "macs_before": base["macs"], "macs_after": m["macs"],
                     "macs_reduction": base["macs"] / m["macs"],
                     "ort_ms_before": base["onnxruntime"]["median_ms"], "ort_ms_after": m["onnxruntime"]["median_ms"],
                     "ort_iqr_after": [m["onnxruntime"]["q1_ms"], m["onnxruntime"]["q3_ms"]],
                     "ort_speedup": m["onnxruntime_speedup"], "ort_efficiency": m["onnxruntime_efficiency"],
                     "ov_ms_before": (base.get("openvino") or {}).get("median_ms"),
                     "ov_ms_after": (m.get("openvino") or {}).get("median_ms"),
                     "ov_speedup": m.get("openvino_speedup"), "ov_efficiency": m.get("openvino_efficiency"),
                     "shapes": base["shapes"]})
    return rows


def _f(x, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def print_row(row: dict) -> None:
    print(f"{row['model']:<20} {row['round_to']:>5} {row['macs_reduction']:>7.2f}x "
          f"{row['ort_ms_before']:>9.2f} {row['ort_ms_after']:>9.2f} {_f(row['ort_speedup'], '>7.2f')}x "
          f"{_f(row['ort_efficiency'], '>6.2f')}  {_f(row['ov_ms_before'], '>9.2f')} {_f(row['ov_ms_after'], '>9.2f')} "
          f"{_f(row['ov_speedup'], '>7.2f')}x {_f(row['ov_efficiency'], '>6.2f')}  {row['verification']}", flush=True)


def summary(rows: list[dict], round_to: list[int]) -> list[dict]:
    out = []
    for r in round_to:
        sel = [x for x in rows if x["round_to"] == r]
        entry = {"round_to": r, "models": len(sel)}
        for key in ("ort_efficiency", "ov_efficiency", "ort_speedup", "ov_speedup", "macs_reduction"):
            values = [x[key] for x in sel if x[key] is not None]
            entry[f"median_{key}"] = statistics.median(values) if values else None
        tv = [x["ort_efficiency"] for x in sel if x["model"] not in HF_SHAPES and x["ort_efficiency"] is not None]
        entry["median_ort_efficiency_torchvision"] = statistics.median(tv) if tv else None
        tv = [x["ov_efficiency"] for x in sel if x["model"] not in HF_SHAPES and x["ov_efficiency"] is not None]
        entry["median_ov_efficiency_torchvision"] = statistics.median(tv) if tv else None
        out.append(entry)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="*", default=TORCHVISION, help="torchvision names (default: the core list)")
    parser.add_argument("--hf", nargs="*", default=HF, help=f"Hugging Face families (default: {' '.join(HF)})")
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--round-to", type=int, nargs="+", default=[1, 8, 16])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--no-openvino", action="store_true")
    parser.add_argument("--no-verify", action="store_true", help="skip the oracle check of each prune")
    parser.add_argument("--json", help="also write every row and the medians here")
    args = parser.parse_args(argv)
    names = list(args.models) + list(args.hf)
    print(f"ratio {args.ratio}, round-to {args.round_to}, threads {args.threads}, {args.warmup} warm-up + "
          f"{args.repeats} timed runs per model and runtime (interleaved); efficiency = speed-up / MACs reduction")
    print(f"{'model':<20} {'round':>5} {'MACs÷':>8} {'ORT ms':>9} {'after':>9} {'speedup':>8} {'eff':>6}  "
          f"{'OV ms':>9} {'after':>9} {'speedup':>8} {'eff':>6}  check")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            try:
                new = measure_model(name, args, Path(tmp))
            except Exception as exc:  # noqa: BLE001 -- one model's failure is a row, not the end
                print(f"{name:<20} failed: {exc.__class__.__name__}: {str(exc)[:200]}", flush=True)
                continue
            for row in new:
                print_row(row)
            rows += new
    medians = summary(rows, args.round_to)
    print("\nmedians per round-to (efficiency = speed-up / MACs reduction):")
    print(f"{'round-to':>8} {'models':>6} {'MACs÷':>7} {'ORT speedup':>11} {'ORT eff':>8} {'OV speedup':>10} "
          f"{'OV eff':>7} {'ORT eff tv':>10} {'OV eff tv':>9}")
    for m in medians:
        print(f"{m['round_to']:>8} {m['models']:>6} {_f(m['median_macs_reduction'], '>6.2f')}x "
              f"{_f(m['median_ort_speedup'], '>10.2f')}x {_f(m['median_ort_efficiency'], '>8.2f')} "
              f"{_f(m['median_ov_speedup'], '>9.2f')}x {_f(m['median_ov_efficiency'], '>7.2f')} "
              f"{_f(m['median_ort_efficiency_torchvision'], '>10.2f')} {_f(m['median_ov_efficiency_torchvision'], '>9.2f')}")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "medians": medians, "settings": vars(args)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
