"""ONNX exports with dynamic axes, the way users export real models, cached.

``models.export`` exports at static shapes, where every reshape target is a
constant. Real exports keep batch, sequence, height and width symbolic, so
reshape targets, masks and anchors are computed at run time
(``Shape -> Gather/Slice -> Concat -> Reshape``, ``Range``, ``Expand``,
``Where``). This zoo gives the pruner those graphs: tiny random-init Hugging
Face transformers (text, vision, audio), torchvision classifiers, a
YOLOv8-style detector and a hand-written paddle2onnx-style graph whose
weights are ``Constant`` nodes.

``export_dynamic(name, exporter)`` returns a cached single-file export. Before
a file enters the cache it is run in onnxruntime at the two ``check_shapes``
(neither is the export shape) and compared with torch, so a model whose
exporter baked a size into the graph is refused instead of silently becoming
a static model under a dynamic name. Run ``python -m models.dynamic`` for the
table of which (name, exporter) pairs export and run.
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import torch
import torchvision
from torch import nn

from .export import LEGACY_OPSET, _quiet, _zoo_source_hash, cache_root, write_cached
from .detector import build_detector
from .zoo import SEED, build

EXPORTERS = ("legacy", "dynamo")
RTOL = 1e-3
TEXT_AXES = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"}}


# --------------------------------------------------------------------------- torch models

class TextModel(nn.Module):
    """``(input_ids, attention_mask) -> last hidden state``: positional args, one tensor out.

    The legacy exporter cannot take keyword inputs or return a ``ModelOutput``.
    """

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        return self.model(input_ids=input_ids, attention_mask=attention_mask)[0]


class FirstOutput(nn.Module):
    """``x -> model(x)[0]`` for single-input HF models (ViT pixels, Whisper mel features)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x)[0]


def _hf_config(kind, **extra):
    """A tiny config: 2 layers, width 256, 8 heads, FFN 512, vocab 1000, eager attention, no cache.

    FFN width 512 appears in no other weight (positions are capped at 128),
    which lets tests recognise FFN groups by size as a cross-check.
    """
    import transformers

    common = dict(num_hidden_layers=2, hidden_size=256, num_attention_heads=8, intermediate_size=512,
                  vocab_size=1000, use_cache=False, max_position_embeddings=128,
                  pad_token_id=0, bos_token_id=1, eos_token_id=2)
    if kind == "gpt2":
        common = dict(n_layer=2, n_embd=256, n_head=8, n_inner=512, vocab_size=1000, n_positions=128,
                      use_cache=False, bos_token_id=1, eos_token_id=2)
    if kind == "whisper":
        common = dict(encoder_layers=2, decoder_layers=2, d_model=256, encoder_attention_heads=8,
                      decoder_attention_heads=8, encoder_ffn_dim=512, decoder_ffn_dim=512, vocab_size=1000,
                      num_mel_bins=80, max_source_positions=64, max_target_positions=64, use_cache=False,
                      pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1)
    if kind == "vit":
        common = dict(num_hidden_layers=2, hidden_size=256, num_attention_heads=8, intermediate_size=512,
                      image_size=64, patch_size=8)
    config = transformers.AutoConfig.for_model(kind, **common, **extra)
    config._attn_implementation = "eager"
    return config


def _hf(kind, **extra):
    """A seeded random-init HF base model (no LM head) in eval mode."""
    import transformers

    def builder():
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(SEED)
            model = transformers.AutoModel.from_config(_hf_config(kind, **extra), attn_implementation="eager")
        if kind == "whisper":
            return FirstOutput(model.get_encoder()).eval()
        return (FirstOutput(model) if kind == "vit" else TextModel(model)).eval()
    return builder


# --------------------------------------------------------------------------- constant-weight graph

def _constant_weights():
    """Seeded weights of the paddle2onnx-style graph, keyed by paddle's parameter names."""
    rng = np.random.default_rng(SEED)

    def normal(*shape, scale=0.2):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    return {
        "conv2d_0.w_0": normal(16, 3, 3, 3), "conv2d_0.b_0": normal(16),
        "batch_norm2d_0.w_0": rng.uniform(0.5, 1.5, 16).astype(np.float32),
        "batch_norm2d_0.b_0": normal(16), "batch_norm2d_0.w_1": normal(16),
        "batch_norm2d_0.w_2": rng.uniform(0.5, 1.5, 16).astype(np.float32),
        "conv2d_1.w_0": normal(32, 16, 3, 3), "conv2d_1.b_0": normal(32),
        "linear_0.w_0": normal(32, 64), "linear_0.b_0": normal(64),
        "linear_1.w_0": normal(10, 64), "linear_1.b_0": normal(10),
    }


def constant_weights_model() -> onnx.ModelProto:
    """A graph as paddle2onnx writes it: weights in ``Constant`` nodes, run-time reshape targets.

    conv-BN-ReLU (stride 2) -> conv-ReLU (stride 2) -> NHWC -> ``Reshape(x,
    Concat(Slice(Shape(x), 0, 1), [-1], [32]))`` into tokens -> MatMul + bias
    -> ReLU -> mean over tokens -> Flatten -> Gemm. The ``32`` in the
    run-time target is a channel count the pruner has to find and rewrite.
    Opset 11, dims named ``p2o.DynamicDimension.N``.
    """
    from onnx import TensorProto, helper, numpy_helper

    def const(name, value):
        return helper.make_node("Constant", [], [name], name=f"{name}.const",
                                value=numpy_helper.from_array(np.asarray(value), name))

    nodes = [const(k, v) for k, v in _constant_weights().items()]
    nodes += [const("shape.start", np.array([0], np.int64)), const("shape.end", np.array([1], np.int64)),
              const("shape.axes", np.array([0], np.int64)), const("shape.minus_one", np.array([-1], np.int64)),
              const("shape.channels", np.array([32], np.int64))]
    make = helper.make_node
    nodes += [
        make("Conv", ["x", "conv2d_0.w_0", "conv2d_0.b_0"], ["conv2d_0.tmp_0"], kernel_shape=[3, 3],
             pads=[1, 1, 1, 1], strides=[2, 2]),
        make("BatchNormalization", ["conv2d_0.tmp_0", "batch_norm2d_0.w_0", "batch_norm2d_0.b_0",
                                    "batch_norm2d_0.w_1", "batch_norm2d_0.w_2"], ["batch_norm2d_0.tmp_2"],
             epsilon=1e-5),
        make("Relu", ["batch_norm2d_0.tmp_2"], ["relu_0.tmp_0"]),
        make("Conv", ["relu_0.tmp_0", "conv2d_1.w_0", "conv2d_1.b_0"], ["conv2d_1.tmp_0"], kernel_shape=[3, 3],
             pads=[1, 1, 1, 1], strides=[2, 2]),
        make("Relu", ["conv2d_1.tmp_0"], ["relu_1.tmp_0"]),
        make("Transpose", ["relu_1.tmp_0"], ["transpose_0.tmp_0"], perm=[0, 2, 3, 1]),
        make("Shape", ["transpose_0.tmp_0"], ["shape_0.tmp_0"]),
        make("Slice", ["shape_0.tmp_0", "shape.start", "shape.end", "shape.axes"], ["slice_0.tmp_0"]),
        make("Concat", ["slice_0.tmp_0", "shape.minus_one", "shape.channels"], ["concat_0.tmp_0"], axis=0),
        make("Reshape", ["transpose_0.tmp_0", "concat_0.tmp_0"], ["reshape2_0.tmp_0"]),
        make("MatMul", ["reshape2_0.tmp_0", "linear_0.w_0"], ["linear_0.tmp_0"]),
        make("Add", ["linear_0.tmp_0", "linear_0.b_0"], ["linear_0.tmp_1"]),
        make("Relu", ["linear_0.tmp_1"], ["relu_2.tmp_0"]),
        make("ReduceMean", ["relu_2.tmp_0"], ["mean_0.tmp_0"], axes=[1], keepdims=1),
        make("Flatten", ["mean_0.tmp_0"], ["flatten_0.tmp_0"], axis=1),
        make("Gemm", ["flatten_0.tmp_0", "linear_1.w_0", "linear_1.b_0"], ["save_infer_model/scale_0.tmp_0"],
             transB=1),
    ]
    dims = ["p2o.DynamicDimension.0", 3, "p2o.DynamicDimension.1", "p2o.DynamicDimension.2"]
    graph = helper.make_graph(
        nodes, "constant_weights",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("save_infer_model/scale_0.tmp_0", TensorProto.FLOAT,
                                       ["p2o.DynamicDimension.0", 10])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)], producer_name="PaddlePaddle")
    model.ir_version = 7
    onnx.checker.check_model(model)
    return model


def constant_weights_reference(x: torch.Tensor) -> torch.Tensor:
    """``constant_weights_model`` written in torch, the oracle for its export check."""
    w = {k: torch.from_numpy(v) for k, v in _constant_weights().items()}
    f = nn.functional
    h = f.conv2d(x, w["conv2d_0.w_0"], w["conv2d_0.b_0"], stride=2, padding=1)
    h = f.batch_norm(h, w["batch_norm2d_0.w_1"], w["batch_norm2d_0.w_2"], w["batch_norm2d_0.w_0"],
                     w["batch_norm2d_0.b_0"], eps=1e-5).relu()
    h = f.conv2d(h, w["conv2d_1.w_0"], w["conv2d_1.b_0"], stride=2, padding=1).relu()
    h = h.permute(0, 2, 3, 1).reshape(h.shape[0], -1, 32)
    h = (h @ w["linear_0.w_0"] + w["linear_0.b_0"]).relu().mean(1)
    return h @ w["linear_1.w_0"].T + w["linear_1.b_0"]


# --------------------------------------------------------------------------- specs

@dataclass(frozen=True)
class DynamicSpec:
    """How one zoo entry is built, fed, exported and checked.

    ``axes`` names the dynamic axes of each input (outputs follow them);
    ``batch_only`` lists exporters whose export keeps only axis 0 dynamic,
    with the reason; ``unsupported`` lists exporters that cannot export it.
    ``multiple`` is the factor H/W must be a multiple of (the detector's 32).
    ``output_axes`` are the legacy exporter's output axes (default: batch,
    plus sequence for text), as users declare them.
    """

    build: Callable[[], nn.Module] | None
    export_shape: dict
    check_shapes: tuple
    axes: dict
    kinds: dict = field(default_factory=dict)  # input name -> "ids" | "mask" | "float"
    batch_only: dict = field(default_factory=dict)
    unsupported: dict = field(default_factory=dict)
    multiple: int = 1
    transformer: bool = False
    output_axes: dict | None = None


def _text(kind, **extra):
    return DynamicSpec(
        _hf(kind, **extra), {"input_ids": (2, 16), "attention_mask": (2, 16)},
        ({"input_ids": (1, 32), "attention_mask": (1, 32)}, {"input_ids": (3, 7), "attention_mask": (3, 7)}),
        TEXT_AXES, {"input_ids": "ids", "attention_mask": "mask"}, transformer=True)


def _image(builder, size=224, check=((1, 256, 256), (3, 160, 192)), **kwargs):
    return DynamicSpec(
        builder, {"input": (2, 3, size, size)},
        tuple({"input": (b, 3, h, w)} for b, h, w in check),
        {"input": {0: "batch", 2: "height", 3: "width"}}, {"input": "float"}, **kwargs)


def _torchvision(name, **kwargs):
    return _image(lambda: build(name), **kwargs)


_FIXED_224 = "the model only runs at 224x224 (torchvision asserts the image size)"
_SPECIALISED = "torch.export specialises H/W to 224 (the export silently comes out static)"
_SWIN_HW = ("the shifted-window masks are traced as constants of the export size: "
            "wrong outputs at other H/W (6.8e-2 relative error at 256x256)")

DYNAMIC_MODELS: dict[str, DynamicSpec] = {
    "bert": _text("bert"),
    "gpt2": _text("gpt2"),
    "llama": _text("llama", num_key_value_heads=2),
    "qwen2": _text("qwen2", num_key_value_heads=2),
    "phi3": _text("phi3", num_key_value_heads=2),
    "mistral": _text("mistral", num_key_value_heads=2),
    "vit": DynamicSpec(
        _hf("vit"), {"pixel_values": (2, 3, 64, 64)},
        ({"pixel_values": (1, 3, 64, 64)}, {"pixel_values": (3, 3, 64, 64)}),
        {"pixel_values": {0: "batch"}}, {"pixel_values": "float"}, transformer=True,
        batch_only={e: "position embeddings are fixed to 64x64 (no interpolate_pos_encoding)" for e in EXPORTERS}),
    "whisper_encoder": DynamicSpec(
        _hf("whisper"), {"input_features": (2, 80, 128)},
        ({"input_features": (1, 80, 128)}, {"input_features": (3, 80, 128)}),
        {"input_features": {0: "batch"}}, {"input_features": "float"}, transformer=True,
        batch_only={e: "the encoder requires exactly 2 * max_source_positions frames" for e in EXPORTERS}),
    "resnet18": _torchvision("resnet18"),
    "mobilenet_v3_small": _torchvision("mobilenet_v3_small"),
    "swin_t": _torchvision("swin_t", transformer=True, batch_only={"legacy": _SWIN_HW, "dynamo": _SPECIALISED}),
    "swin_v2_t": _torchvision("swin_v2_t", transformer=True, batch_only={"dynamo": _SPECIALISED}),
    "maxvit_t": _torchvision("maxvit_t", transformer=True, batch_only={
        e: "partition grids are sized for 224x224 at construction (Reshape fails at other H/W)" for e in EXPORTERS}),
    "vit_b_16": _torchvision("vit_b_16", transformer=True, batch_only={e: _FIXED_224 for e in EXPORTERS}),
    "yolov8": _image(build_detector, size=256, check=((1, 320, 320), (3, 192, 416)), multiple=32,
                     output_axes={0: "batch", 2: "anchors"}),  # as ultralytics' export declares them
    "constant_weights": DynamicSpec(
        None, {"x": (2, 3, 64, 64)}, ({"x": (1, 3, 96, 128)}, {"x": (3, 3, 32, 64)}),
        {"x": {0: "p2o.DynamicDimension.0", 2: "p2o.DynamicDimension.1", 3: "p2o.DynamicDimension.2"}},
        {"x": "float"}, multiple=4,
        unsupported={"dynamo": "written directly with onnx.helper (as paddle2onnx does); "
                               "it is listed under exporter='legacy' only"}),
}


def _spec(name) -> DynamicSpec:
    if name not in DYNAMIC_MODELS:
        raise ValueError(f"unknown dynamic model {name!r}; choose one of {', '.join(DYNAMIC_MODELS)}")
    return DYNAMIC_MODELS[name]


def dynamic_axes(name, exporter="legacy") -> dict:
    """``{input: {axis: dim name}}`` of the export by ``exporter``."""
    spec = _spec(name)
    if exporter in spec.batch_only:
        return {k: {a: n for a, n in v.items() if a == 0} for k, v in spec.axes.items()}
    return spec.axes


def check_shapes(name, exporter=None) -> list[dict]:
    """The two input shapes (neither the export shape) every export is verified at.

    A batch-only export varies only the batch of the spec's shapes. With
    ``exporter=None`` the shapes are valid for every exporter of ``name``.
    """
    spec = _spec(name)
    batch_only = spec.batch_only if exporter is None else {e: r for e, r in spec.batch_only.items() if e == exporter}
    if not batch_only:
        return [dict(s) for s in spec.check_shapes]
    return [{k: (s[k][0],) + tuple(spec.export_shape[k][1:]) for k in s} for s in spec.check_shapes]


def dynamic_input_shapes(name, exporter=None) -> dict[str, tuple]:
    """A realistic shape, other than the export shape, to prune and verify at."""
    return check_shapes(name, exporter)[0]


def feeds_at(name, shapes, seed=SEED) -> dict[str, np.ndarray]:
    """Seeded inputs of the given shapes: token ids in [0, 1000), all-ones masks, normal floats."""
    spec, rng = _spec(name), np.random.default_rng(seed)
    feeds = {}
    for key, shape in shapes.items():
        kind = spec.kinds.get(key, "float")
        if kind == "ids":
            feeds[key] = rng.integers(0, 1000, shape, dtype=np.int64)
        elif kind == "mask":
            feeds[key] = np.ones(shape, dtype=np.int64)
        else:
            feeds[key] = rng.standard_normal(shape, dtype=np.float32)
    return feeds


def example_feeds(name, seed=SEED) -> dict[str, np.ndarray]:
    """Inputs at the export shape (what the exporter traced)."""
    return feeds_at(name, _spec(name).export_shape, seed)


# --------------------------------------------------------------------------- export

def _dynamo_shapes(name, exporter):
    """``dynamic_shapes`` for torch.export, positional: one shared ``Dim`` per axis name.

    A tuple, not a dict: dict keys must be ``forward``'s argument names,
    which differ from the ONNX input names.

    H/W of a model that needs multiples of ``m`` are ``m * Dim``, a derived
    dim, so torch.export can prove the upsample/concat sizes agree.
    """
    spec, dims = _spec(name), {}
    out = []
    for axes in dynamic_axes(name, exporter).values():
        out.append({})
        for axis, dim_name in axes.items():
            if dim_name not in dims:
                if axis >= 2 and spec.multiple > 1:
                    dims[dim_name] = spec.multiple * torch.export.Dim(f"{dim_name}_div{spec.multiple}", min=1, max=64)
                else:
                    dims[dim_name] = torch.export.Dim(dim_name, min=1, max=4096)
            out[-1][axis] = dims[dim_name]
    return tuple(out)


def _torch_export(name, exporter, path):
    spec = _spec(name)
    model = spec.build()
    args = tuple(torch.from_numpy(v) for v in example_feeds(name).values())
    names = list(spec.export_shape)
    if exporter == "dynamo":
        kwargs = dict(dynamo=True, dynamic_shapes=_dynamo_shapes(name, exporter), external_data=False)
    else:
        axes = dynamic_axes(name, exporter)
        out_axes = spec.output_axes or {0: "batch"}
        if spec.kinds.get(names[0]) == "ids":
            out_axes = dict(axes[names[0]])  # (batch, sequence, hidden)
        kwargs = dict(dynamo=False, opset_version=LEGACY_OPSET, dynamic_axes={**axes, "output": out_axes})
    # Under no_grad nn.MultiheadAttention takes its fused fast path
    # (aten::_native_multi_head_attention), which the legacy exporter cannot
    # export; with grad enabled it traces the op-by-op path.
    grad = torch.no_grad() if exporter == "dynamo" else contextlib.nullcontext()
    with _quiet(), grad:
        torch.onnx.export(model, args, str(path), input_names=names, output_names=["output"],
                          verbose=False, **kwargs)


def cache_path(name, exporter="legacy", cache_dir=None) -> Path:
    """Where ``export_dynamic`` stores this export; the key holds every version that changes it."""
    import transformers

    _check_exporter(name, exporter)
    versions = (f"torch{torch.__version__}-tf{transformers.__version__}-tv{torchvision.__version__}"
                f"-onnx{onnx.__version__}-{_zoo_source_hash()}")
    return cache_root(cache_dir) / f"dyn-{name}-{exporter}-{versions}.onnx"


def _check_exporter(name, exporter):
    spec = _spec(name)
    if exporter not in EXPORTERS:
        raise ValueError(f"exporter must be one of {EXPORTERS}, got {exporter!r}")
    if exporter in spec.unsupported:
        raise ValueError(f"{name} cannot be exported with exporter={exporter!r}: {spec.unsupported[exporter]}")


def export_dynamic(name, exporter="legacy", cache_dir=None) -> Path:
    """Path to a cached, checked single-file ONNX export of ``name`` with dynamic axes.

    Raises ``ValueError`` when that exporter cannot export the model (the
    reason is in ``DYNAMIC_MODELS[name].unsupported``) or when the export
    does not match torch at both ``check_shapes``; nothing is cached then.
    """
    path = cache_path(name, exporter, cache_dir)
    if path.exists():
        return path

    def write(tmp):
        if name == "constant_weights":
            onnx.save(constant_weights_model(), tmp)
        else:
            _torch_export(name, exporter, tmp)
        problems = [p for p in check_export(name, exporter, tmp) if p]
        if problems:
            raise ValueError(f"{name}/{exporter} exported but does not match torch: {'; '.join(problems)}")

    return write_cached(path, name, write)


# --------------------------------------------------------------------------- checking

def reference(name, feeds) -> np.ndarray:
    """The torch output for ``feeds`` (the constant-weight graph has a torch twin)."""
    spec = _spec(name)
    args = [torch.from_numpy(v) for v in feeds.values()]
    with torch.no_grad():
        if spec.build is None:
            return constant_weights_reference(*args).numpy()
        return spec.build()(*args).numpy()


def run_onnx(model, feeds) -> list[np.ndarray]:
    """Run a path or ``ModelProto`` in onnxruntime on CPU."""
    import onnxruntime as ort

    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def _static_axes(name, exporter, path) -> list[str]:
    """Requested dynamic axes that came out as fixed sizes (torch.export may specialise silently)."""
    inputs = {i.name: i.type.tensor_type.shape.dim for i in onnx.load(str(path), load_external_data=False).graph.input}
    return [f"{key} axis {axis} ({dim_name}) is static"
            for key, axes in dynamic_axes(name, exporter).items() for axis, dim_name in axes.items()
            if key in inputs and not inputs[key][axis].dim_param]


def check_export(name, exporter, path) -> list[str | None]:
    """Per check shape: ``None`` when onnxruntime matches torch within ``RTOL``, else why not.

    Requested dynamic axes that the export fixed are reported first.
    """
    results = _static_axes(name, exporter, path)
    for shapes in check_shapes(name, exporter):
        feeds = feeds_at(name, shapes, seed=SEED + 1)
        try:
            got = run_onnx(path, feeds)[0]
        except Exception as exc:  # an export that cannot run at this shape is a finding
            results.append(f"at {shapes}: onnxruntime failed: {str(exc).splitlines()[0][:200]}")
            continue
        want = reference(name, feeds)
        if got.shape != want.shape:
            results.append(f"at {shapes}: shape {got.shape} != torch {want.shape}")
            continue
        err = float(np.abs(got - want).max()) / max(float(np.abs(want).max()), 1e-6)
        results.append(None if err <= RTOL else f"at {shapes}: relative error {err:.2e}")
    return results


# --------------------------------------------------------------------------- graph roles

# Ops a projection's output flows through on its way to the attention matmul
# or the next projection; anything else (norms, softmax, reductions, convs)
# ends the walk.
_FLOW = {"Add", "Sub", "Mul", "Div", "Pow", "Neg", "Reshape", "Transpose", "Split", "Slice", "Squeeze",
         "Unsqueeze", "Identity", "Cast", "Concat", "Expand", "Tile", "Where", "Gather"}
_NONLINEAR = {"Sigmoid", "Tanh", "Erf", "Gelu", "FastGelu", "Relu", "HardSigmoid", "HardSwish", "Softplus", "Elu"}
_PROJECTIONS = {"MatMul", "Gemm"}


def projection_roles(model: onnx.ModelProto) -> dict[str, str]:
    """Constant tensors of transformer projections, by role: ``"attention"`` or ``"ffn"``.

    Exporters drop module names (``onnx::MatMul_647``, ``val_79``), so roles
    come from structure. A projection is a MatMul/Gemm with one constant
    and one activation input. Walking its output forward through
    reshapes and elementwise ops: reaching a MatMul or Einsum of two
    activations (the q.k scores, or probabilities times v) makes it an attention q/k/v
    projection; reaching another projection after crossing a nonlinearity
    (GELU, SiLU's sigmoid, tanh) makes it an FFN input projection. Every
    constant feeding the projection's weight input (the initializer and a
    ``Transpose`` of it, say) gets the role, so report labels match
    whichever name the pruner kept.
    """
    nodes = list(model.graph.node)
    producer = {o: n for n in nodes for o in n.output}
    consumers: dict[str, list] = {}
    for n in nodes:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    const = {t.name for t in model.graph.initializer}
    for n in nodes:  # graph order is topological
        if n.op_type == "Constant" or (n.input and n.op_type != "Shape" and all(i in const for i in n.input if i)):
            const.update(n.output)

    def constant_sources(name, seen):
        if name in seen or name not in const:
            return
        seen.add(name)
        for i in (producer[name].input if name in producer else ()):
            constant_sources(i, seen)

    def role_of(node):
        todo, seen = [(node.output[0], False)], set()
        while todo and len(seen) < 400:
            tensor, crossed = todo.pop()
            for user in consumers.get(tensor, ()):
                if (user.name, crossed) in seen:
                    continue
                seen.add((user.name, crossed))
                if user.op_type == "Einsum" and all(i not in const for i in user.input):
                    return "attention"  # maxvit writes q.k and p.v as einsums
                if user.op_type in _PROJECTIONS:
                    if all(i not in const for i in user.input[:2]):
                        return "attention"
                    if crossed:
                        return "ffn"
                elif user.op_type in _FLOW or user.op_type in _NONLINEAR:
                    todo.extend((o, crossed or user.op_type in _NONLINEAR) for o in user.output)
        return None

    roles = {}
    for node in nodes:
        if node.op_type not in _PROJECTIONS:
            continue
        weights = [i for i in node.input[:2] if i in const]
        if len(weights) != 1 or not (role := role_of(node)):
            continue
        names: set[str] = set()
        constant_sources(weights[0], names)
        roles.update(dict.fromkeys(names, role))
    return roles


def pruned_roles(report: dict, roles: dict[str, str]) -> dict[str, int]:
    """How many pruned groups (``removed > 0``) of a prune report touch each role."""
    counts = {"attention": 0, "ffn": 0}
    for group in report.get("groups", []):
        if not group.get("removed"):
            continue
        touched = {roles.get(label.split("[axis")[0].strip()) for label in group.get("parameters", [])}
        for role in counts:
            counts[role] += role in touched
    return counts


def pairs() -> list[tuple[str, str]]:
    """Every (name, exporter) combination, supported or not (callers skip the unsupported)."""
    return [(n, e) for n in DYNAMIC_MODELS for e in EXPORTERS]


def main(argv=None) -> int:
    """Export every pair (or those named) and print whether it exports and runs at both check shapes."""
    names = (argv if argv is not None else sys.argv[1:]) or list(DYNAMIC_MODELS)
    print(f"{'model':20} {'exporter':8} {'dynamic axes':34} result")
    for name in names:
        for exporter in EXPORTERS:
            try:
                axes = sorted({n for v in dynamic_axes(name, exporter).values() for n in v.values()})
                path = export_dynamic(name, exporter)
                result = f"ok ({onnx.load(str(path), load_external_data=False).graph.node.__len__()} nodes)"
            except Exception as exc:
                result = f"{type(exc).__name__}: {str(exc).splitlines()[0][:150]}"
            print(f"{name:20} {exporter:8} {','.join(axes):34} {result}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
