"""The verification oracle (DESIGN.md), run in onnxruntime.

Oracle: take the *original* model and zero every removed channel where it is
consumed — the contracted input of each Conv/Gemm/MatMul — with
``Where(mask, x, 0)`` (not ``x * mask``, so an inf or NaN in a removed channel
cannot leak through ``0 · inf``; models older than opset 9, which lack
``Where``, get ``x * mask``). If only channel-wise ops lie between
producers and contractions, the pruned model must reproduce this oracle on
any input; we check random inputs to a relative error below ``tolerance``.

Groups marked approximate (a LayerNorm over the pruned axis, say) change the
function by design; when any of them was pruned the check is downgraded to
"same output shapes and all values finite".
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper



@dataclass
class Verification:
    status: str  # "exact" | "approximate" | "failed" | "skipped"
    max_relative_error: float = 0.0
    outputs: dict[str, float] = field(default_factory=dict)
    tolerance: float = 1e-4
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.status != "failed"

    def to_dict(self) -> dict:
        return {"status": self.status, "max_relative_error": self.max_relative_error,
                "tolerance": self.tolerance, "outputs": self.outputs, "message": self.message}


def session(model: onnx.ModelProto):
    """An onnxruntime session; models over 2 GB go through a temporary file."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    except ValueError:  # protobuf refuses to serialise over 2 GB
        pass
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.onnx")
        onnx.save(model, path, save_as_external_data=True, location="model.data")
        return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def random_inputs(sess, seed: int = 0, symbolic: int = 1) -> dict[str, np.ndarray]:
    """Random feeds for every input: normal floats, zero integers, symbolic sizes set to ``symbolic``."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for inp in sess.get_inputs():
        shape = [d if isinstance(d, int) else symbolic for d in inp.shape]
        kind = inp.type[len("tensor("):-1]
        if "float" in kind or kind == "double":
            dtype = {"float": np.float32, "double": np.float64, "float16": np.float16}.get(kind, np.float32)
            feeds[inp.name] = rng.standard_normal(shape).astype(dtype)
        elif kind == "bool":
            feeds[inp.name] = np.zeros(shape, dtype=bool)
        else:
            feeds[inp.name] = np.zeros(shape, dtype=np.int64 if kind == "int64" else np.int32)
    return feeds


def oracle_model(original: onnx.ModelProto, plan) -> onnx.ModelProto:
    """The original model with removed channels zeroed at every contraction input."""
    table = plan.analysis.table
    graph = plan.analysis.graph
    masks: dict[str, list] = {}
    for c in table.contractions:
        kept = plan.kept(c.dim)
        if kept is not None:
            masks.setdefault(c.anchor, []).append((c, kept))
    model = onnx.ModelProto()
    model.CopyFrom(original)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
    nodes = []
    for node in model.graph.node:
        for c, kept in masks.get(node.output[0] if node.output else "", []):
            info = graph.tensors.get(c.tensor)
            dtype = info.dtype if info is not None and info.dtype is not None else np.dtype(np.float32)
            shape = [1] * c.rank
            shape[c.axis] = table.sizes[c.dim]
            mask = np.zeros(shape[c.axis], dtype=bool)
            mask[kept] = True
            base = f"graphprune_oracle_{len(nodes)}_{c.input_index}"
            if opset >= 9:  # Where: an inf or NaN in a removed channel cannot leak
                model.graph.initializer.extend([
                    numpy_helper.from_array(mask.reshape(shape), base + "_mask"),
                    numpy_helper.from_array(np.zeros((), dtype=dtype), base + "_zero")])
                nodes.append(helper.make_node("Where", [base + "_mask", c.tensor, base + "_zero"],
                                              [base + "_out"], name=base))
            else:  # Where does not exist before opset 9
                model.graph.initializer.append(
                    numpy_helper.from_array(mask.reshape(shape).astype(dtype), base + "_mask"))
                nodes.append(helper.make_node("Mul", [c.tensor, base + "_mask"], [base + "_out"], name=base))
            node.input[c.input_index] = base + "_out"
        nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    del model.graph.value_info[:]
    return model


def relative_error(expected: np.ndarray, actual: np.ndarray) -> float:
    scale = max(float(np.max(np.abs(expected))) if expected.size else 0.0, 1e-6)
    diff = np.abs(expected.astype(np.float64) - actual.astype(np.float64))
    return float(np.max(diff)) / scale if diff.size else 0.0


def compare(reference: onnx.ModelProto, candidate: onnx.ModelProto, approximate: bool = False,
            tolerance: float = 1e-4, seed: int = 0) -> Verification:
    """Run both models on the same random inputs and compare every output."""
    ref, cand = session(reference), session(candidate)
    try:  # symbolic sizes of 2, so attention over tokens and batch statistics are non-trivial
        feeds = random_inputs(ref, seed, symbolic=2)
        expected = ref.run(None, feeds)
    except Exception:  # some models only run with their symbolic sizes at 1
        feeds = random_inputs(ref, seed, symbolic=1)
        expected = ref.run(None, feeds)
    actual = cand.run(None, {k: v for k, v in feeds.items() if k in {i.name for i in cand.get_inputs()}})
    names = [o.name for o in ref.get_outputs()]
    result = Verification("approximate" if approximate else "exact", tolerance=tolerance)
    for name, e, a in zip(names, expected, actual):
        if e.shape != a.shape:
            result.status = "failed"
            result.message = f"output '{name}' has shape {a.shape}, expected {e.shape}"
            return result
        if approximate:
            if not np.all(np.isfinite(a)):
                result.status = "failed"
                result.message = f"output '{name}' has non-finite values"
            continue
        err = relative_error(e, a)
        result.outputs[name] = err
        result.max_relative_error = max(result.max_relative_error, err)
        if not err < tolerance:
            result.status = "failed"
            result.message = (f"output '{name}' differs from the oracle by {err:.3g} "
                              f"(relative; tolerance {tolerance:g})")
    return result


def verify_prune(original: onnx.ModelProto, pruned: onnx.ModelProto, plan,
                 tolerance: float = 1e-4, seed: int = 0) -> Verification:
    """Check a pruned model against the oracle built from ``original`` and ``plan``."""
    approximate = any(plan.analysis.groups[gid].approximate and mask.any()
                      for gid, mask in plan.removed.items())
    return compare(oracle_model(original, plan), pruned, approximate, tolerance, seed)
