"""graphprune fold vs onnxslim, onnxsim and onnxoptimizer, same models, one run.

Per model and tool: node count after, pass time, onnxruntime latency after,
and whether the outputs equal the input model's (relative error < 1e-4 on
random inputs). Models: torchvision exports with both exporters, the legacy
export without constant folding (BatchNorm nodes kept, weights behind ops),
and a variant whose weights are all ``Constant`` nodes.

Pass time is the median of ``--repeats`` calls on fresh copies, after one
untimed warm-up call per tool in the process (so neither tool's first-call
imports count; the CLI's import floor is measured by bench_llm_scale.py).

Usage: python benchmarks/bench_simplifiers.py [--runs 20] [--repeats 3] [--zoo | MODEL ...]
Needs: pip install -e '.[torch,bench]' (onnxsim is skipped if it is not installed)
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import time
import warnings

import onnx
import onnxruntime as ort
import torch
from onnx import helper

import graphprune
from graphprune import models
from graphprune.verify import compare, random_inputs

DEFAULT = ["resnet18", "mobilenet_v2", "efficientnet_b0", "densenet121", "mha_block", "vit_block"]


def variants(name: str):
    for exporter in ("legacy", "dynamo"):
        yield f"{name}/{exporter}", onnx.load(str(models.export_onnx(name, exporter)))
    module, example = models.build(name), models.example_input(name)
    buffer = io.BytesIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (example,), buffer, dynamo=False, do_constant_folding=False,
                          input_names=["input"], output_names=["output"])
    unfolded = onnx.load_from_string(buffer.getvalue())
    yield f"{name}/unfolded", unfolded
    yield f"{name}/constant-nodes", as_constant_nodes(unfolded)


def as_constant_nodes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Every initializer becomes a Constant node, as some exporters and tools write them."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    consts = [helper.make_node("Constant", [], [t.name], value=t) for t in out.graph.initializer]
    inputs = [i for i in out.graph.input if i.name not in {t.name for t in out.graph.initializer}]
    del out.graph.initializer[:]
    del out.graph.input[:]
    out.graph.input.extend(inputs)
    nodes = list(out.graph.node)
    del out.graph.node[:]
    out.graph.node.extend(consts + nodes)
    return out


def latency_ms(model: onnx.ModelProto, runs: int) -> float:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    feeds = random_inputs(sess)
    for _ in range(3):
        sess.run(None, feeds)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        sess.run(None, feeds)
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def tools():
    yield "graphprune", lambda m: graphprune.fold(m, verify=False)[0]
    with contextlib.suppress(ImportError):
        import onnxslim
        yield "onnxslim", lambda m: onnxslim.slim(m)
    with contextlib.suppress(ImportError):
        import onnxsim
        yield "onnxsim", lambda m: onnxsim.simplify(m)[0]
    with contextlib.suppress(ImportError):
        import onnxoptimizer
        yield "onnxoptimizer", lambda m: onnxoptimizer.optimize(m)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", default=DEFAULT)
    parser.add_argument("--runs", type=int, default=20, help="onnxruntime latency runs")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per tool and model (median)")
    parser.add_argument("--zoo", action="store_true", help="every model of graphprune.models.CORE_MODELS")
    args = parser.parse_args()
    names = list(models.CORE_MODELS) if args.zoo else args.names
    warmed: set[str] = set()
    slower: list[str] = []
    header = f"{'model':32} {'tool':14} {'nodes':>11} {'time s':>8} {'ms':>8}  outputs"
    print(header)
    print("-" * len(header))
    for name in names:
        for label, model in variants(name):
            base_ms = latency_ms(model, args.runs)
            print(f"{label:32} {'(input)':14} {len(model.graph.node):>11} {'':>8} {base_ms:8.2f}")
            seconds_of = {}
            for tool, run in tools():
                try:
                    if tool not in warmed:
                        timed_call(run, model)
                        warmed.add(tool)
                    calls = [timed_call(run, model) for _ in range(args.repeats)]
                except Exception as exc:  # a tool failure is a result
                    print(f"{'':32} {tool:14} {'FAIL':>11}  {exc.__class__.__name__}: {str(exc)[:60]}")
                    continue
                seconds, out = statistics.median(c[0] for c in calls), calls[-1][1]
                seconds_of[tool] = seconds
                same = compare(model, out).status
                print(f"{'':32} {tool:14} {len(model.graph.node):>5}→{len(out.graph.node):<5} "
                      f"{seconds:8.3f} {latency_ms(out, args.runs):8.2f}  {same}", flush=True)
            if {"onnxslim", "graphprune"} <= set(seconds_of) and seconds_of["graphprune"] >= seconds_of["onnxslim"]:
                slower.append(f"{label} ({seconds_of['graphprune']:.3f} s vs {seconds_of['onnxslim']:.3f} s)")
    print(f"\ngraphprune fold slower than onnxslim on {len(slower)} model(s)"
          + (": " + ", ".join(slower) if slower else ""))


def timed_call(run, model: onnx.ModelProto) -> tuple[float, onnx.ModelProto]:
    """Seconds of one call on a fresh copy (tools may edit their input), and its result."""
    source = onnx.ModelProto()
    source.CopyFrom(model)
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = run(source)
    return time.perf_counter() - start, out


if __name__ == "__main__":
    main()
