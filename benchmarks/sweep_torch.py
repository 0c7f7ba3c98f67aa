"""Prune every torchvision model through the PyTorch front end (zero configuration).

    python benchmarks/sweep_torch.py [--ratio 0.5] [--max-params 1e9] [--only REGEX] [--json out.json]

Prints one row per model: status (exact / approximate / error), tracer, what
was returned (the original class or a GraphModule), MACs and params after /
before, pass time. Covers every classification model of
``torchvision.models.list_models(module=torchvision.models)``, the segmentation
models and the detection backbones with their FPN.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
import traceback
import warnings

import torch

warnings.filterwarnings("ignore")


def main(argv=None) -> int:
    from graphprune.models.torch_zoo import build_torch, torch_model_names

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--max-params", type=float, default=float("inf"))
    parser.add_argument("--only", default="")
    parser.add_argument("--json", default="")
    args = parser.parse_args(argv)
    import graphprune

    rows = []
    for name in torch_model_names():
        if args.only and not re.search(args.only, name):
            continue
        torch.manual_seed(0)
        model, inputs = build_torch(name)
        params = sum(p.numel() for p in model.parameters())
        if params > args.max_params:
            continue
        start = time.perf_counter()
        try:
            result = graphprune.prune(model, args.ratio, example_inputs=inputs)
            r = result.report
            row = {"model": name, "status": result.verification.status, "tracer": r["torch"]["tracer"],
                   "returned": "class" if r["torch"]["returned"] == "original module" else "GraphModule",
                   "macs": r["macs"][1] / max(r["macs"][0], 1), "params": r["params"][1] / r["params"][0],
                   "untranslated": len(r["torch"]["untranslated_calls"])}
        except Exception as exc:  # a sweep reports every failure and goes on
            row = {"model": name, "status": "error", "error": f"{type(exc).__name__}: {exc}"[:300]}
            if "-v" in sys.argv:
                traceback.print_exc()
        row["seconds"] = round(time.perf_counter() - start, 2)
        rows.append(row)
        if row["status"] == "error":
            print(f"{name:28s} ERROR {row['error']}", flush=True)
        else:
            print(f"{name:28s} {row['status']:12s} {row['tracer']:15s} {row['returned']:12s} "
                  f"MACs {row['macs']:.3f} params {row['params']:.3f} untranslated {row['untranslated']:3d} "
                  f"{row['seconds']:6.2f}s", flush=True)
        del model
    counts = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    print("summary:", counts, "of", len(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0 if not counts.get("error") else 1


if __name__ == "__main__":
    sys.exit(main())
