"""LLaMA-shaped ONNX models built with onnx.helper, weights streamed to external data.

No torch model is materialised: every weight is random (normal, σ 0.02; norm
scales 1) and written tensor by tensor at 4096-byte aligned offsets, so a 7 B
model needs no more memory than its largest tensor. Dynamic ``batch`` and
``sequence``. The graph is what exporters write for LLaMA: embedding
``Gather``, RMSNorm decomposed into Pow/ReduceMean/Add/Sqrt/Div and a scale
``Mul``, q/k/v ``MatMul``s with run-time head reshapes (``Reshape`` to ``[0, 0,
heads, head_dim]``), grouped-query attention expanded with
``Unsqueeze``/``Expand``/``Reshape``, softmax attention, the SiLU-gated MLP and
the LM head. Rotary embeddings and the causal mask are left out: they touch no
prunable channel. Used by ``benchmarks/bench_llm_scale.py`` (1.1 B and 7 B
shapes) and by the tests (the ``tiny`` shape).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from onnx import TensorProto, helper

ALIGN = 4096


@dataclass(frozen=True)
class Shape:
    hidden: int
    layers: int
    ffn: int
    heads: int
    kv_heads: int
    vocab: int


SHAPES = {
    "tinyllama": Shape(2048, 22, 5632, 32, 4, 32000),  # TinyLlama-1.1B
    "llama7b": Shape(4096, 32, 11008, 32, 32, 32000),  # LLaMA-7B
    "tiny": Shape(256, 2, 688, 8, 2, 1000),
}

DTYPES = {"fp16": (np.float16, TensorProto.FLOAT16), "fp32": (np.float32, TensorProto.FLOAT)}


class ExternalWriter:
    """Appends tensors to one external-data file at aligned offsets, chunk by chunk."""

    def __init__(self, path: str, dtype: str, seed: int = 0):
        self.path, self.file = path, open(path, "wb")
        self.np_dtype, self.onnx_dtype = DTYPES[dtype]
        self.rng = np.random.default_rng(seed)
        self.offset = 0

    def random(self, name: str, shape: tuple[int, ...], scale: float = 0.02, constant: float | None = None):
        pad = (-self.offset) % ALIGN
        self.file.write(b"\0" * pad)
        self.offset += pad
        start, count = self.offset, int(np.prod(shape))
        rows = max(1, (1 << 24) // max(shape[-1], 1))  # ~16 M elements per chunk
        leading = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
        width = shape[-1] if len(shape) > 1 else count
        for r in range(0, leading, rows):
            n = min(rows, leading - r)
            if constant is not None:
                chunk = np.full((n, width), constant, dtype=self.np_dtype)
            else:
                chunk = (self.rng.standard_normal((n, width), dtype=np.float32) * scale).astype(self.np_dtype)
            self.file.write(chunk.tobytes())
        length = count * np.dtype(self.np_dtype).itemsize
        self.offset += length
        tensor = TensorProto(name=name, data_type=self.onnx_dtype, dims=list(shape))
        tensor.data_location = TensorProto.EXTERNAL
        for key, value in (("location", os.path.basename(self.path)), ("offset", str(start)),
                           ("length", str(length))):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
        return tensor

    def close(self):
        self.file.close()


def _ints(name: str, values) -> TensorProto:
    return helper.make_tensor(name, TensorProto.INT64, [len(values)], list(values))


def build(shape: Shape, path: str, dtype: str = "fp16") -> str:
    """Write the model to ``path`` (+ ``path.data``); returns ``path``."""
    head_dim = shape.hidden // shape.heads
    group = shape.heads // shape.kv_heads
    elem = DTYPES[dtype][1]
    writer = ExternalWriter(path + ".data", dtype)
    inits, nodes = [], []

    def weight(name, dims, **kw):
        inits.append(writer.random(name, dims, **kw))
        return name

    def node(op, inputs, name, **attrs):
        nodes.append(helper.make_node(op, inputs, [name], name=f"{op}_{name}", **attrs))
        return name

    small = [_ints("heads_shape", [0, 0, shape.heads, head_dim]), _ints("kv_shape", [0, 0, shape.kv_heads, head_dim]),
             _ints("expand_shape", [1, 1, group, 1, 1]), _ints("merge_kv", [0, shape.heads, -1, head_dim]),
             _ints("hidden_shape", [0, 0, shape.hidden]), _ints("last_axis", [-1]), _ints("axis2", [2]),
             helper.make_tensor("two", elem, [], [2.0]), helper.make_tensor("eps", elem, [], [1e-5]),
             helper.make_tensor("attn_scale", elem, [], [1.0 / np.sqrt(head_dim)])]

    def rms_norm(x, prefix):
        square = node("Pow", [x, "two"], f"{prefix}.square")
        mean = node("ReduceMean", [square, "last_axis"], f"{prefix}.mean", keepdims=1)
        root = node("Sqrt", [node("Add", [mean, "eps"], f"{prefix}.var_eps")], f"{prefix}.rms")
        normed = node("Div", [x, root], f"{prefix}.normed")
        return node("Mul", [normed, weight(f"{prefix}.weight", (shape.hidden,), constant=1.0)], f"{prefix}.out")

    x = node("Gather", [weight("model.embed_tokens.weight", (shape.vocab, shape.hidden)), "input_ids"], "embeds")
    for i in range(shape.layers):
        p = f"model.layers.{i}"
        h = rms_norm(x, f"{p}.input_layernorm")
        q = node("MatMul", [h, weight(f"{p}.self_attn.q_proj.weight", (shape.hidden, shape.hidden))], f"{p}.q")
        k = node("MatMul", [h, weight(f"{p}.self_attn.k_proj.weight", (shape.hidden, shape.kv_heads * head_dim))],
                 f"{p}.k")
        v = node("MatMul", [h, weight(f"{p}.self_attn.v_proj.weight", (shape.hidden, shape.kv_heads * head_dim))],
                 f"{p}.v")
        q = node("Transpose", [node("Reshape", [q, "heads_shape"], f"{p}.q_heads")], f"{p}.q_t", perm=[0, 2, 1, 3])

        def kv_heads(t, tag):
            t = node("Transpose", [node("Reshape", [t, "kv_shape"], f"{p}.{tag}_heads")], f"{p}.{tag}_t",
                     perm=[0, 2, 1, 3])
            if group == 1:
                return t
            t = node("Expand", [node("Unsqueeze", [t, "axis2"], f"{p}.{tag}_u"), "expand_shape"], f"{p}.{tag}_x")
            return node("Reshape", [t, "merge_kv"], f"{p}.{tag}_rep")

        k, v = kv_heads(k, "k"), kv_heads(v, "v")
        scores = node("Mul", [node("MatMul", [q, node("Transpose", [k], f"{p}.k_T", perm=[0, 1, 3, 2])],
                                   f"{p}.qk"), "attn_scale"], f"{p}.scores")
        attn = node("MatMul", [node("Softmax", [scores], f"{p}.probs", axis=-1), v], f"{p}.ctx")
        attn = node("Reshape", [node("Transpose", [attn], f"{p}.ctx_t", perm=[0, 2, 1, 3]), "hidden_shape"],
                    f"{p}.ctx_flat")
        o = node("MatMul", [attn, weight(f"{p}.self_attn.o_proj.weight", (shape.hidden, shape.hidden))], f"{p}.o")
        x = node("Add", [x, o], f"{p}.attn_residual")
        h = rms_norm(x, f"{p}.post_attention_layernorm")
        gate = node("MatMul", [h, weight(f"{p}.mlp.gate_proj.weight", (shape.hidden, shape.ffn))], f"{p}.gate")
        up = node("MatMul", [h, weight(f"{p}.mlp.up_proj.weight", (shape.hidden, shape.ffn))], f"{p}.up")
        act = node("Mul", [gate, node("Sigmoid", [gate], f"{p}.gate_sigmoid")], f"{p}.silu")
        down = node("MatMul", [node("Mul", [act, up], f"{p}.gated"),
                               weight(f"{p}.mlp.down_proj.weight", (shape.ffn, shape.hidden))], f"{p}.down")
        x = node("Add", [x, down], f"{p}.mlp_residual")
    h = rms_norm(x, "model.norm")
    node("MatMul", [h, weight("lm_head.weight", (shape.hidden, shape.vocab))], "logits")
    writer.close()
    graph = helper.make_graph(
        nodes, "llama", [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"])],
        [helper.make_tensor_value_info("logits", elem, ["batch", "sequence", shape.vocab])],
        initializer=small + inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], producer_name="bench_llm_scale")
    model.ir_version = 9
    with open(path, "wb") as f:
        f.write(model.SerializeToString())
    return path
