"""LLM-scale ONNX: build LLaMA-shaped models without torch, then time graphprune and onnxslim on them.

    python benchmarks/bench_llm_scale.py build tinyllama --out /tmp/llm       # 1.1 B, fp16, ~2.2 GB
    python benchmarks/bench_llm_scale.py build llama7b --out /tmp/llm         # 6.7 B, fp16, ~13.5 GB
    python benchmarks/bench_llm_scale.py build tiny --layers 2 --out /tmp/llm # a small one to try things on
    python benchmarks/bench_llm_scale.py run /tmp/llm/tinyllama.onnx [--skip verified]

``build`` writes ``NAME.onnx`` plus ``NAME.onnx.data`` (external data, every
tensor at a 4096-byte aligned offset) with dynamic ``batch`` and ``sequence``.
The graph is what exporters write for LLaMA: embedding ``Gather``, RMSNorm
decomposed into Pow/ReduceMean/Add/Sqrt/Div and a scale ``Mul``, q/k/v
``MatMul``s with run-time head reshapes (``Reshape`` to ``[0, 0, heads,
head_dim]``), grouped-query attention expanded with ``Unsqueeze``/``Expand``/
``Reshape``, softmax attention, the SiLU-gated MLP and the LM head. Rotary
embeddings and the causal mask are left out: they touch no prunable channel.
Weights are random (normal, σ 0.02) and streamed to disk tensor by tensor,
so building a 7 B model needs no more memory than its largest tensor.

``run`` times, each in a fresh process under ``/usr/bin/time -v`` (wall time,
peak RSS): ``graphprune inspect``, ``graphprune prune --ratio 0.25`` with and
without verification, ``graphprune fold``, and onnxslim on the same file.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

from graphprune.models.llama_onnx import DTYPES, SHAPES, Shape, build


def _timed(command: list[str]) -> dict:
    """Wall seconds, peak RSS (GB) and exit code of ``command`` under /usr/bin/time -v."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as log:
        started = time.perf_counter()
        proc = subprocess.run(["/usr/bin/time", "-v", "-o", log.name, *command], capture_output=True, text=True)
        wall = time.perf_counter() - started
        text = open(log.name).read()
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    return {"seconds": round(wall, 1), "peak_rss_gb": round(int(rss.group(1)) / 1e6, 2) if rss else None,
            "exit": proc.returncode, "error": _why(proc) if proc.returncode else ""}


def _why(proc) -> str:
    """The last line of a failed step's stderr, or the signal that ended it (the OOM killer's SIGKILL)."""
    lines = proc.stderr.strip().splitlines()
    if lines:
        return lines[-1][:160]
    return f"killed by signal {-proc.returncode}" if proc.returncode < 0 else "no message"


RUN_IN_ORT = """
import sys, numpy as np, onnxruntime as ort
sess = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
out = sess.run(None, {"input_ids": np.arange(16, dtype=np.int64).reshape(1, 16)})[0]
assert np.isfinite(out.astype(np.float32)).all(), "non-finite logits"
print(out.shape)
"""


def run(model: str, skip: set[str]) -> None:
    out = tempfile.mkdtemp(prefix="llm_scale_")
    size = sum(os.path.getsize(p) for p in (model, model + ".data") if os.path.exists(p)) / 1e9
    gp = [sys.executable, "-m", "graphprune.cli"]
    steps = {
        "inspect": gp + ["inspect", model],
        "prune (no verify)": gp + ["prune", model, "-o", f"{out}/p.onnx", "--ratio", "0.25", "--no-verify"],
        "prune (verified)": gp + ["prune", model, "-o", f"{out}/v.onnx", "--ratio", "0.25",
                                  "--input-shape", "input_ids=1x16"],
        "onnxruntime runs the verified result": [sys.executable, "-c", RUN_IN_ORT, f"{out}/v.onnx"],
        "fold": gp + ["fold", model, "-o", f"{out}/f.onnx"],
        "onnxslim": [sys.executable, "-m", "onnxslim", model, f"{out}/s.onnx"],
    }
    written = {"prune (no verify)": "p.onnx", "onnxruntime runs the verified result": "v.onnx",
               "fold": "f.onnx", "onnxslim": "s.onnx"}  # removed once measured: disk space
    print(f"{os.path.basename(model)}: {size:.2f} GB on disk")
    print("| step | seconds | peak RSS GB | × model bytes | exit |")
    print("|---|---|---|---|---|")
    for label, command in steps.items():
        if any(s in label for s in skip):
            continue
        r = _timed(command)
        ratio = f"{r['peak_rss_gb'] / size:.1f}" if r["peak_rss_gb"] and size else "-"
        print(f"| {label} | {r['seconds']} | {r['peak_rss_gb']} | {ratio} | {r['exit']} {r['error']} |", flush=True)
        for name in ([written[label]] if label in written else []):
            for path in (f"{out}/{name}", f"{out}/{name}.data"):
                if os.path.exists(path):
                    os.remove(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="write a LLaMA-shaped ONNX model with external data")
    b.add_argument("shape", choices=sorted(SHAPES))
    b.add_argument("--out", default=".", help="output folder")
    b.add_argument("--layers", type=int, help="override the number of layers")
    b.add_argument("--dtype", choices=sorted(DTYPES), default="fp16")
    r = sub.add_parser("run", help="time graphprune and onnxslim on a built model")
    r.add_argument("model")
    r.add_argument("--skip", nargs="*", default=[], help="steps to leave out (substring of the step name)")
    args = parser.parse_args()
    if args.command == "build":
        shape = SHAPES[args.shape]
        if args.layers:
            shape = Shape(shape.hidden, args.layers, shape.ffn, shape.heads, shape.kv_heads, shape.vocab)
        os.makedirs(args.out, exist_ok=True)
        started = time.perf_counter()
        path = build(shape, os.path.join(args.out, f"{args.shape}.onnx"), args.dtype)
        print(json.dumps({"model": path, "seconds": round(time.perf_counter() - started, 1),
                          "bytes": os.path.getsize(path + ".data")}))
    else:
        run(args.model, set(args.skip))


if __name__ == "__main__":
    main()
