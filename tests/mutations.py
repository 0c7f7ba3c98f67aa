"""Seeded protobuf mutations of a small conv net: malformed (and some valid but odd) models.

:func:`conv_net` builds a residual conv net with onnx.helper (no torch);
each mutation in :data:`MUTATIONS` damages it one way a real export or a
hand edit can (a dropped node, a dangling input, a wrong initializer shape, a
bad attribute, opset 0, an unknown op, shuffled nodes, flipped bytes, ...).
:func:`run_mutant` runs a graphprune command on one and classifies the
outcome the way the fuzz tests judge it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def conv_net(seed: int = 0) -> onnx.ModelProto:
    """conv → relu → [conv → relu → 1x1 conv → BN] + residual → relu → depthwise conv → GAP → Gemm.

    The 12 channels inside the residual branch are a prunable group; the rest
    couple through the residual add and the depthwise conv to the classifier.
    """
    rng = np.random.default_rng(seed)

    def init(name, *shape):
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32) * 0.3, name)

    inits = [init("w1", 8, 3, 3, 3), init("b1", 8), init("w2", 12, 8, 3, 3), init("w2b", 8, 12, 1, 1),
             init("bn_scale", 8), init("bn_bias", 8), init("bn_mean", 8),
             numpy_helper.from_array(rng.uniform(0.5, 1.5, 8).astype(np.float32), "bn_var"),
             init("w3", 8, 1, 3, 3), init("fc_w", 10, 8), init("fc_b", 10)]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["c2a"], name="conv2", pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        helper.make_node("Relu", ["c2a"], ["r2a"], name="relu2a"),
        helper.make_node("Conv", ["r2a", "w2b"], ["c2"], name="conv2b"),
        helper.make_node("BatchNormalization", ["c2", "bn_scale", "bn_bias", "bn_mean", "bn_var"], ["bn"],
                         name="bn", epsilon=1e-5),
        helper.make_node("Add", ["bn", "r1"], ["sum"], name="residual"),
        helper.make_node("Relu", ["sum"], ["r2"], name="relu2"),
        helper.make_node("Conv", ["r2", "w3"], ["c3"], name="dwconv", group=8, pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["c3"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["y"], name="fc", transB=1),
    ]
    graph = helper.make_graph(nodes, "conv_net",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _copy(model):
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def _node(model, rng):
    return model.graph.node[int(rng.integers(len(model.graph.node)))]


def drop_node(m, rng):
    del m.graph.node[int(rng.integers(len(m.graph.node)))]


def dangling_input(m, rng):
    n = _node(m, rng)
    n.input[int(rng.integers(len(n.input)))] = "missing_tensor"


def duplicate_output(m, rng):
    a, b = rng.choice(len(m.graph.node), 2, replace=False)
    m.graph.node[int(a)].output[0] = m.graph.node[int(b)].output[0]


def self_loop(m, rng):
    n = _node(m, rng)
    n.input[0] = n.output[0]


def cycle(m, rng):
    k = int(rng.integers(1, len(m.graph.node)))
    m.graph.node[0].input[0] = m.graph.node[k].output[0]


def shuffle_nodes(m, rng):  # valid: a graph out of topological order
    nodes = list(m.graph.node)
    order = rng.permutation(len(nodes))
    del m.graph.node[:]
    m.graph.node.extend(nodes[int(i)] for i in order)


def initializer_dims(m, rng):  # dims disagree with the data
    t = m.graph.initializer[int(rng.integers(len(m.graph.initializer)))]
    t.dims[0] += 1


def initializer_wrong_shape(m, rng):  # consistent tensor, wrong for its op
    k = int(rng.integers(len(m.graph.initializer)))
    t = m.graph.initializer[k]
    shape = list(t.dims)
    shape[int(rng.integers(len(shape)))] += int(rng.integers(1, 4))
    t.CopyFrom(numpy_helper.from_array(np.ones(shape, np.float32), t.name))


def initializer_dtype(m, rng):
    t = m.graph.initializer[int(rng.integers(len(m.graph.initializer)))]
    t.CopyFrom(numpy_helper.from_array(np.ones(list(t.dims), np.int64), t.name))


def truncate_raw_data(m, rng):
    t = m.graph.initializer[int(rng.integers(len(m.graph.initializer)))]
    t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t), t.name))
    t.raw_data = t.raw_data[: len(t.raw_data) // 2]


BAD_ATTRIBUTES = [("kernel_shape", [5, 5]), ("strides", [0, 0]), ("group", 3), ("pads", [-1, -1, -1, -1]),
                  ("axis", 7), ("dilations", [0]), ("transB", 5), ("epsilon", -1.0), ("group", 0),
                  ("pads", [1, 1]), ("auto_pad", "WRONG")]


def bad_attribute(m, rng):
    n = _node(m, rng)
    name, value = BAD_ATTRIBUTES[int(rng.integers(len(BAD_ATTRIBUTES)))]
    kept = [a for a in n.attribute if a.name != name]
    del n.attribute[:]
    n.attribute.extend(kept + [helper.make_attribute(name, value)])


def delete_attributes(m, rng):
    del _node(m, rng).attribute[:]


def opset_version(m, rng):
    m.opset_import[0].version = int(rng.choice([0, 1, 5, 99, -3]))


def no_opset(m, rng):
    del m.opset_import[:]


def ir_version(m, rng):
    m.ir_version = int(rng.choice([0, 1, 99]))


def huge_dim(m, rng):
    m.graph.input[0].type.tensor_type.shape.dim[int(rng.integers(4))].dim_value = 10**9


def zero_dim(m, rng):
    m.graph.input[0].type.tensor_type.shape.dim[int(rng.integers(1, 4))].dim_value = 0


def symbolic_dims(m, rng):  # valid: dynamic batch and spatial sizes
    dims = m.graph.input[0].type.tensor_type.shape.dim
    for k, name in ((0, "batch"), (2, "height"), (3, "width")):
        dims[k].dim_param = name
    m.graph.output[0].type.tensor_type.shape.dim[0].dim_param = "batch"


def unknown_op(m, rng):
    n = _node(m, rng)
    n.op_type = "NoSuchOp"


def custom_domain(m, rng):  # valid: an op in a domain only its author's runtime knows
    n = _node(m, rng)
    n.domain = "com.example"
    if not any(o.domain == "com.example" for o in m.opset_import):
        m.opset_import.append(helper.make_opsetid("com.example", 1))


def input_dtype(m, rng):
    m.graph.input[0].type.tensor_type.elem_type = int(rng.choice([TensorProto.INT64, TensorProto.STRING,
                                                                  TensorProto.FLOAT16, 0]))


def output_dtype(m, rng):
    m.graph.output[0].type.tensor_type.elem_type = TensorProto.INT64


def no_input_shape(m, rng):
    m.graph.input[0].type.tensor_type.ClearField("shape")


def missing_output(m, rng):
    m.graph.output[0].name = "not_computed"


def no_outputs(m, rng):
    del m.graph.output[:]


def no_nodes(m, rng):
    del m.graph.node[:]


def duplicate_input(m, rng):
    m.graph.input.append(m.graph.input[0])


def swap_inputs(m, rng):
    n = _node(m, rng)
    if len(n.input) > 1:
        n.input[0], n.input[1] = n.input[1], n.input[0]


def empty_constant(m, rng):
    m.graph.node.insert(0, helper.make_node("Constant", [], ["k"], name="const"))
    m.graph.node[-1].input.append("k") if m.graph.node[-1].op_type != "Gemm" else None


def nan_weights(m, rng):  # valid: NaN and Inf in a weight (positional comparison)
    t = m.graph.initializer[int(rng.integers(len(m.graph.initializer)))]
    a = numpy_helper.to_array(t).copy()
    a.flat[int(rng.integers(a.size))] = rng.choice([np.nan, np.inf])
    t.CopyFrom(numpy_helper.from_array(a, t.name))


def missing_external_data(m, rng):
    t = m.graph.initializer[int(rng.integers(len(m.graph.initializer)))]
    t.ClearField("raw_data")
    t.ClearField("float_data")
    t.data_location = TensorProto.EXTERNAL
    t.external_data.add(key="location", value="no_such_weights.bin")


def renamed_nodes(m, rng):  # valid: empty and duplicate node names
    for k, n in enumerate(m.graph.node):
        n.name = "" if k % 2 else "same"


MUTATIONS = [drop_node, dangling_input, duplicate_output, self_loop, cycle, shuffle_nodes,
             initializer_dims, initializer_wrong_shape, initializer_dtype, truncate_raw_data,
             bad_attribute, delete_attributes, opset_version, no_opset, ir_version, huge_dim, zero_dim,
             symbolic_dims, unknown_op, custom_domain, input_dtype, output_dtype, no_input_shape,
             missing_output, no_outputs, no_nodes, duplicate_input, swap_inputs, empty_constant,
             nan_weights, missing_external_data, renamed_nodes]
BYTE_MUTATIONS = ["truncate_file", "flip_bytes", "empty_file"]


def mutant(seed: int) -> tuple[str, bytes]:
    """Mutant number ``seed``: (description, file bytes). One or two model mutations, or a
    damaged file; the same seed always gives the same bytes."""
    rng = np.random.default_rng(seed)
    kinds = len(MUTATIONS) + len(BYTE_MUTATIONS)
    k = seed % kinds
    model = conv_net(seed % 3)
    if k >= len(MUTATIONS):
        data = model.SerializeToString()
        kind = BYTE_MUTATIONS[k - len(MUTATIONS)]
        if kind == "truncate_file":
            return kind, data[: int(rng.integers(1, len(data)))]
        if kind == "empty_file":
            return kind, b""
        data = bytearray(data)
        for i in rng.integers(0, len(data), int(rng.integers(1, 8))):
            data[int(i)] = int(rng.integers(256))
        return kind, bytes(data)
    m = _copy(model)
    names = [MUTATIONS[k].__name__]
    MUTATIONS[k](m, rng)
    if seed // kinds % 2:  # every other round: a second mutation on top
        extra = MUTATIONS[int(rng.integers(len(MUTATIONS)))]
        try:
            extra(m, rng)
            names.append(extra.__name__)
        except Exception:  # the first mutation left nothing this one can work on
            pass
    return "+".join(names), m.SerializeToString()


@dataclass
class MutantResult:
    mutation: str
    code: int
    stderr: str
    invalid_output: str = ""  # what is wrong with an exit-0 output ("" when nothing)
    input_changed: bool = False
    stray_files: list | None = None


def _output_problem(dst: Path, command: str) -> str:
    import onnxruntime as ort

    try:
        model = onnx.load(str(dst))
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:
        return f"checker: {str(exc).splitlines()[0][:200] if str(exc) else exc.__class__.__name__}"
    opts = ort.SessionOptions()
    opts.log_severity_level = 4
    try:
        ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        if any(n.domain not in ("", "ai.onnx") for n in model.graph.node):
            return ""  # an op only its author's runtime implements: the checker is the judge
        return f"onnxruntime: {str(exc).splitlines()[0][:200]}"
    return ""


def run_mutant(seed: int, command: str, workdir: Path) -> MutantResult:
    """Run ``graphprune COMMAND`` (fold | prune) on mutant ``seed`` in its own directory."""
    from node_cases import run_cli

    name, data = mutant(seed)
    folder = workdir / f"{command}-{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    src, dst = folder / "model.onnx", folder / "out.onnx"
    src.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    argv = ["fold", str(src), "-o", str(dst)] if command == "fold" else \
        ["prune", str(src), "-o", str(dst), "--ratio", "0.5"]
    code, stderr = run_cli(argv)
    result = MutantResult(name, code, stderr.strip())
    result.input_changed = hashlib.sha256(src.read_bytes()).hexdigest() != digest
    present = sorted(p.name for p in folder.iterdir())
    result.stray_files = [p for p in present if p not in ("model.onnx", "out.onnx")]
    if code == 0:
        result.invalid_output = _output_problem(dst, command) if dst.exists() else "no output written"
    elif dst.exists():
        result.invalid_output = f"exit {code} but {dst.name} was written"
    return result


def run_mutants(count: int, command: str, workdir: Path, start: int = 0) -> list[MutantResult]:
    return [run_mutant(seed, command, workdir) for seed in range(start, start + count)]
