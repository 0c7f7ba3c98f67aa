"""Robustness figures: outcomes of `fold` and `prune` on onnx's backend node tests and on
seeded mutants of a small conv net.

    python benchmarks/bench_robustness.py nodes [--every N]     # backend node tests (N=1: all)
    python benchmarks/bench_robustness.py mutants [--count N]  # protobuf mutants

Prints counts by exit code (and, for node tests, changed outputs) per command,
then one line per exit 3 / exit 1 / changed output / multi-line error.
"""

import argparse
import collections
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def nodes(every: int, show: int) -> None:
    from node_cases import node_cases, ort_passes, run_case, sample

    cases = [c for c in sample(node_cases(), every) if ort_passes(c)]
    print(f"{len(cases)} cases onnxruntime passes (every {every}th of the node tests)")
    with tempfile.TemporaryDirectory() as tmp:
        for command in ("fold", "prune"):
            counts, bad = collections.Counter(), []
            for case in cases:
                o = run_case(case, command, Path(tmp))
                counts[f"exit {o.code}"] += 1
                if o.changed:
                    counts["changed"] += 1
                if o.code in (1, 3) or o.changed or len(o.stderr.splitlines()) > 1:
                    bad.append(o)
            print(command, dict(sorted(counts.items())))
            for o in bad[:show]:
                print(f"  {o.case}: exit {o.code} {o.changed} {o.stderr[:300]!r}")


def mutants(count: int, show: int) -> None:
    from mutations import run_mutants

    with tempfile.TemporaryDirectory() as tmp:
        for command in ("fold", "prune"):
            results = run_mutants(count, command, Path(tmp))
            counts = collections.Counter(f"exit {r.code}" for r in results)
            counts["invalid at exit 0"] = sum(1 for r in results if r.invalid_output)
            counts["multi-line"] = sum(1 for r in results if len(r.stderr.splitlines()) > 1)
            print(command, dict(sorted(counts.items())))
            for r in [r for r in results if r.code == 3 or r.invalid_output or
                      len(r.stderr.splitlines()) > 1][:show]:
                print(f"  {r.mutation}: exit {r.code} {r.invalid_output} {r.stderr[:300]!r}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=("nodes", "mutants"))
    parser.add_argument("--every", type=int, default=7)
    parser.add_argument("--count", type=int, default=256)
    parser.add_argument("--show", type=int, default=40)
    args = parser.parse_args()
    nodes(args.every, args.show) if args.what == "nodes" else mutants(args.count, args.show)
