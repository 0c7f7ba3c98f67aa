"""Prune the ONNX export of every torchvision classifier at one ratio, zero configuration.

Per model: export time, prune status (verified exact / approximate / failed /
error), prunable groups, MACs after/before, pass time, and the most common
reason channels were pinned. Models above ``--max-params`` are skipped to
keep the run within a 2-core, 24 GB machine.

Usage: python benchmarks/sweep_torchvision.py [--ratio 0.5] [--exporter legacy] [--max-params 150e6] [NAME ...]
"""

from __future__ import annotations

import argparse
import collections
import time

import torchvision

import graphprune
from graphprune import models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*")
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--exporter", default="legacy", choices=models.EXPORTERS)
    parser.add_argument("--max-params", type=float, default=150e6)
    args = parser.parse_args()
    names = args.names or torchvision.models.list_models(module=torchvision.models)
    print(f"{'model':28} {'export s':>8} {'status':>12} {'groups':>6} {'MACs after/before':>17} {'prune s':>8}  most common pin")
    counts = collections.Counter()
    for name in names:
        module = models.build(name)
        params = sum(p.numel() for p in module.parameters())
        del module
        if params > args.max_params:
            print(f"{name:28} {'':>8} {'skipped':>12}  ({params / 1e6:.0f}M params > --max-params)")
            counts["skipped"] += 1
            continue
        start = time.perf_counter()
        try:
            path = models.export_onnx(name, args.exporter)
        except Exception as exc:  # an exporter failure is a result
            print(f"{name:28} {'':>8} {'export-fail':>12}  {exc.__class__.__name__}: {str(exc)[:70]}")
            counts["export-fail"] += 1
            continue
        export_s = time.perf_counter() - start
        start = time.perf_counter()
        try:
            result = graphprune.prune(path, ratio=args.ratio)
            status = result.verification.status
            report = result.report
            macs = report["macs"][1] / report["macs"][0] if report["macs"][0] else 1.0
            pins = collections.Counter(g["pinned"].split(":")[0].split("'")[0] for g in report["pinned"])
            pin = pins.most_common(1)[0][0] if pins else "-"
            print(f"{name:28} {export_s:8.1f} {status:>12} {len(report['groups']):6d} {macs:17.3f} "
                  f"{time.perf_counter() - start:8.2f}  {pin}", flush=True)
            counts[status if report["groups"] else "nothing-prunable"] += 1
        except graphprune.GraphpruneError as exc:
            print(f"{name:28} {export_s:8.1f} {'refused':>12}  {str(exc)[:90]}", flush=True)
            counts["refused"] += 1
        except Exception as exc:  # a bug: report it, keep sweeping
            print(f"{name:28} {export_s:8.1f} {'ERROR':>12}  {exc.__class__.__name__}: {str(exc)[:80]}", flush=True)
            counts["error"] += 1
    print("\nsummary:", dict(counts))


if __name__ == "__main__":
    main()
