"""Torch-Pruning vs graphprune on the Hugging Face models of ``models/hf_zoo.py``, one run.

Both tools prune a freshly built copy of each model (``build_hf(name)``: same
seed, identical weights, eager attention) at the same ratio with L2 magnitude
importance.

* graphprune: ``graphprune.prune(model, ratio, example_inputs=x)``, zero
  configuration (verification on), and again with ``verify=False`` for timing.
* Torch-Pruning: the recipe of its own Hugging Face examples
  (``examples/transformers/prune_hf_bert.py``, ``prune_hf_vit.py`` and
  ``examples/LLMs/prune_llm.py`` of github.com/VainF/Torch-Pruning):
  ``tp.pruner.BasePruner`` (= ``MetaPruner``) with ``MagnitudeImportance(p=2)``,
  ``pruning_ratio=ratio``, ``num_heads`` for the q/k/v projections (key/value
  heads for GQA, and ``out_channel_groups`` for a fused ``gate_up_proj``, as
  the LLM example does), ``prune_num_heads=True, prune_head_dims=False,
  head_pruning_ratio=ratio``, the LM head / classifier in ``ignored_layers``,
  ``round_to=4`` for decoder LMs (the LLM example) and none otherwise (the
  BERT/ViT examples), ``output_transform`` = the first output tensor, then
  ``for g in pruner.step(interactive=True): g.prune()`` and the examples'
  post-processing: the attention modules' head counts / sizes and, as the LLM
  example does, the config fields (``hidden_size``, heads, FFN width) so that
  ``save_pretrained`` / ``from_pretrained`` can work.
  Families the examples do not cover get the closest recipe adapted to their
  module and config names (BERT's for encoders and encoder-decoders, the
  LLM's for decoder LMs); what happens is reported as is.
  The per-family part of each recipe is written as the two functions
  ``tp_<recipe>_setup`` / ``tp_<recipe>_post`` below; its "config lines" are
  their code lines (no ``def``, docstring, comment or blank line), counted
  from the source. graphprune needs none.

Every (tool, model) pair runs in its own fresh subprocess, single-threaded,
killed past ``--timeout`` seconds or ``--mem-limit-gb`` of RSS. Reported:

* result: ``ok`` (graphprune: with its verification status and whether the
  original class was returned) or the one-line failure reason (an exception
  while pruning, a pruned model that fails on the example input, or whose
  first output -- logits / last hidden state -- changed shape);
* pass time: wall clock of the pruning call (TP: the recipe's setup, pruner
  construction, ``step()`` and post-processing; graphprune: ``prune()``, with
  verification, and with ``verify=False``), median over ``--repeats`` fresh
  copies in the same process after one warm-up call (one-time costs; its time
  in parentheses);
* peak memory: increase of ``ru_maxrss`` from after the model is built to
  after the first pruning call (libraries imported before);
* params and MACs after / before, both tools counted identically: parameters
  (``model.parameters()``, shared ones once) and
  ``torch.utils.flop_counter.FlopCounterMode`` on the example (FLOPs / 2);
* other shape: the pruned model runs at ``example(name, cfg, batch=3,
  length=10)`` and gives the dense model's first-output shape there;
* reloads: graphprune -- ``graphprune.hf.save_pretrained`` then
  ``graphprune.hf.from_pretrained`` gives the same outputs (at the example and
  the other shape), and ``plain`` when ``report["hf"]["config_fits"]`` and plain
  ``<class>.from_pretrained`` does too; TP -- ``model.save_pretrained`` then
  ``<class>.from_pretrained`` after the recipe's config updates.

Usage:
    python benchmarks/bench_hf_vs_tp.py                         # default 15 families
    python benchmarks/bench_hf_vs_tp.py --models bert,llama --ratio 0.3 --json out.json
"""

from __future__ import annotations

import argparse
import concurrent.futures
import inspect
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_MODELS = ["bert", "roberta", "distilbert", "gpt2", "llama", "llama_mha", "qwen2", "mistral", "phi3",
                  "opt", "t5", "bart", "vit", "clip_text", "whisper"]
TOOLS = ("tp", "gp", "gp_noverify")
THREADS = 1
RTOL, ATOL = 1e-4, 1e-5  # reload must reproduce the pruned model's outputs to this


# =========================================================================== Torch-Pruning recipes
# Per-family configuration, as the Torch-Pruning examples write it. ``setup`` returns the pruner's
# model-specific arguments; ``post`` is the post-processing after ``g.prune()``. Each recipe names
# the example it follows. Everything outside these functions is generic and shared.

def tp_bert_setup(model):  # prune_hf_bert.py
    from transformers.models.bert.modeling_bert import BertSelfAttention
    heads = {}
    for m in model.modules():
        if isinstance(m, BertSelfAttention):
            heads.update({m.query: m.num_attention_heads, m.key: m.num_attention_heads, m.value: m.num_attention_heads})
    return dict(num_heads=heads, ignored_layers=[model.cls.predictions.decoder])


def tp_bert_post(model, pruner):  # prune_hf_bert.py (+ config fields as in prune_llm.py)
    from transformers.models.bert.modeling_bert import BertSelfAttention
    for m in model.modules():
        if isinstance(m, BertSelfAttention):
            m.num_attention_heads = pruner.num_heads[m.query]
            m.attention_head_size = m.query.out_features // m.num_attention_heads
            m.all_head_size = m.query.out_features
    model.config.hidden_size = model.cls.predictions.decoder.in_features
    model.config.num_attention_heads = model.bert.encoder.layer[0].attention.self.num_attention_heads
    model.config.intermediate_size = model.bert.encoder.layer[0].intermediate.dense.out_features


def tp_roberta_setup(model):  # prune_hf_bert.py, RoBERTa names
    from transformers.models.roberta.modeling_roberta import RobertaSelfAttention
    heads = {}
    for m in model.modules():
        if isinstance(m, RobertaSelfAttention):
            heads.update({m.query: m.num_attention_heads, m.key: m.num_attention_heads, m.value: m.num_attention_heads})
    return dict(num_heads=heads, ignored_layers=[model.lm_head.decoder])


def tp_roberta_post(model, pruner):
    from transformers.models.roberta.modeling_roberta import RobertaSelfAttention
    for m in model.modules():
        if isinstance(m, RobertaSelfAttention):
            m.num_attention_heads = pruner.num_heads[m.query]
            m.attention_head_size = m.query.out_features // m.num_attention_heads
            m.all_head_size = m.query.out_features
    model.config.hidden_size = model.lm_head.decoder.in_features
    model.config.num_attention_heads = model.roberta.encoder.layer[0].attention.self.num_attention_heads
    model.config.intermediate_size = model.roberta.encoder.layer[0].intermediate.dense.out_features


def tp_distilbert_setup(model):  # closest: prune_hf_bert.py, DistilBERT names
    from transformers.models.distilbert.modeling_distilbert import DistilBertSelfAttention
    heads = {}
    for m in model.modules():
        if isinstance(m, DistilBertSelfAttention):
            heads.update({m.q_lin: m.n_heads, m.k_lin: m.n_heads, m.v_lin: m.n_heads})
    return dict(num_heads=heads, ignored_layers=[model.vocab_projector])


def tp_distilbert_post(model, pruner):
    from transformers.models.distilbert.modeling_distilbert import DistilBertSelfAttention
    for m in model.modules():
        if isinstance(m, DistilBertSelfAttention):
            m.n_heads = pruner.num_heads[m.q_lin]
            m.dim = m.q_lin.out_features
    model.config.dim = model.vocab_projector.in_features
    model.config.n_heads = model.distilbert.transformer.layer[0].attention.n_heads
    model.config.hidden_dim = model.distilbert.transformer.layer[0].ffn.lin1.out_features


def tp_gpt2_setup(model):  # closest: prune_llm.py, fused-qkv branch (GPT-2 names, HF Conv1D layers)
    heads = {block.attn.c_attn: model.config.n_head for block in model.transformer.h}
    return dict(num_heads=heads, ignored_layers=[model.lm_head], round_to=4)


def tp_gpt2_post(model, pruner):
    for block in model.transformer.h:
        block.attn.num_heads = pruner.num_heads[block.attn.c_attn]
        block.attn.split_size = block.attn.embed_dim = block.attn.num_heads * block.attn.head_dim
    model.config.n_embd = model.lm_head.in_features
    model.config.n_head = model.transformer.h[0].attn.num_heads
    model.config.n_inner = model.transformer.h[0].mlp.c_fc.nf


def tp_llm_setup(model):  # prune_llm.py (LLaMA, Qwen2, Mistral: q/k/v_proj; Phi-3: qkv_proj + gate_up_proj)
    heads, groups = {}, {}
    for name, m in model.named_modules():
        if name.endswith("self_attn"):
            if hasattr(m, "q_proj"):
                heads[m.q_proj] = model.config.num_attention_heads
                heads[m.k_proj] = model.config.num_key_value_heads
                heads[m.v_proj] = model.config.num_key_value_heads
            elif hasattr(m, "qkv_proj"):
                heads[m.qkv_proj] = model.config.num_attention_heads
        if name.endswith("mlp") and hasattr(m, "gate_up_proj"):
            groups[m.gate_up_proj] = 2
    return dict(num_heads=heads, out_channel_groups=groups, ignored_layers=[model.lm_head], round_to=4)


def tp_llm_post(model, pruner):  # prune_llm.py: "Update model attributes"
    is_gqa = model.config.num_attention_heads != model.config.num_key_value_heads
    model.config.hidden_size = model.lm_head.in_features
    for name, m in model.named_modules():
        if name.endswith("self_attn"):
            if hasattr(m, "q_proj"):
                m.hidden_size = m.q_proj.out_features
            else:
                m.hidden_size = m.qkv_proj.out_features // 3
            m.num_heads = m.hidden_size // m.head_dim
            model.config.num_attention_heads = m.num_heads
            if not is_gqa:
                m.num_key_value_heads = m.num_heads
                model.config.num_key_value_heads = m.num_heads
            if hasattr(m, "num_key_value_groups"):
                m.num_key_value_groups = m.num_heads // model.config.num_key_value_heads
        elif name.endswith("mlp"):
            if hasattr(m, "gate_proj"):
                m.hidden_size = m.gate_proj.in_features
                model.config.intermediate_size = m.gate_proj.out_features
            elif hasattr(m, "gate_up_proj"):
                m.hidden_size = m.gate_up_proj.in_features
                model.config.intermediate_size = m.gate_up_proj.out_features // 2
            else:
                raise ValueError("Unknown mlp layer")


def tp_opt_setup(model):  # closest: prune_llm.py, OPT names (no num_key_value_heads, no mlp module)
    heads = {}
    for name, m in model.named_modules():
        if name.endswith("self_attn"):
            heads.update({m.q_proj: m.num_heads, m.k_proj: m.num_heads, m.v_proj: m.num_heads})
    return dict(num_heads=heads, ignored_layers=[model.lm_head], round_to=4)


def tp_opt_post(model, pruner):
    for name, m in model.named_modules():
        if name.endswith("self_attn"):
            m.num_heads = m.q_proj.out_features // m.head_dim
            m.embed_dim = m.q_proj.out_features
    model.config.hidden_size = model.config.word_embed_proj_dim = model.lm_head.in_features
    model.config.num_attention_heads = model.model.decoder.layers[0].self_attn.num_heads
    model.config.ffn_dim = model.model.decoder.layers[0].fc1.out_features


def tp_t5_setup(model):  # closest: prune_hf_bert.py, T5 names
    from transformers.models.t5.modeling_t5 import T5Attention
    heads = {}
    for m in model.modules():
        if isinstance(m, T5Attention):
            heads.update({m.q: m.n_heads, m.k: m.n_heads, m.v: m.n_heads})
    return dict(num_heads=heads, ignored_layers=[model.lm_head])


def tp_t5_post(model, pruner):
    from transformers.models.t5.modeling_t5 import T5Attention
    for m in model.modules():
        if isinstance(m, T5Attention):
            m.n_heads = pruner.num_heads[m.q]
            m.inner_dim = m.q.out_features
    model.config.d_model = model.lm_head.in_features
    model.config.num_heads = model.encoder.block[0].layer[0].SelfAttention.n_heads
    model.config.d_ff = model.encoder.block[0].layer[1].DenseReluDense.wi.out_features


def tp_bart_setup(model):  # closest: prune_hf_bert.py, BART names
    from transformers.models.bart.modeling_bart import BartAttention
    heads = {}
    for m in model.modules():
        if isinstance(m, BartAttention):
            heads.update({m.q_proj: m.num_heads, m.k_proj: m.num_heads, m.v_proj: m.num_heads})
    return dict(num_heads=heads, ignored_layers=[model.lm_head])


def tp_bart_post(model, pruner):
    from transformers.models.bart.modeling_bart import BartAttention
    for m in model.modules():
        if isinstance(m, BartAttention):
            m.num_heads = pruner.num_heads[m.q_proj]
            m.embed_dim = m.q_proj.out_features
    model.config.d_model = model.lm_head.in_features
    model.config.encoder_attention_heads = model.model.encoder.layers[0].self_attn.num_heads
    model.config.decoder_attention_heads = model.model.decoder.layers[0].self_attn.num_heads
    model.config.encoder_ffn_dim = model.model.encoder.layers[0].fc1.out_features
    model.config.decoder_ffn_dim = model.model.decoder.layers[0].fc1.out_features


def tp_vit_setup(model):  # prune_hf_vit.py (transformers 5 names: ViTAttention.q_proj/k_proj/v_proj)
    from transformers.models.vit.modeling_vit import ViTAttention
    heads = {}
    for m in model.modules():
        if isinstance(m, ViTAttention):
            heads.update({m.q_proj: m.num_attention_heads, m.k_proj: m.num_attention_heads,
                          m.v_proj: m.num_attention_heads})
    return dict(num_heads=heads, ignored_layers=[model.classifier])


def tp_vit_post(model, pruner):
    from transformers.models.vit.modeling_vit import ViTAttention
    for m in model.modules():
        if isinstance(m, ViTAttention):
            m.num_attention_heads = pruner.num_heads[m.q_proj]
    model.config.hidden_size = model.classifier.in_features
    model.config.num_attention_heads = model.vit.layers[0].attention.num_attention_heads
    model.config.intermediate_size = model.vit.layers[0].mlp.fc1.out_features


def tp_clip_text_setup(model):  # closest: prune_hf_bert.py, CLIP names; no head: keep the output width
    from transformers.models.clip.modeling_clip import CLIPAttention
    heads = {}
    for m in model.modules():
        if isinstance(m, CLIPAttention):
            heads.update({m.q_proj: m.num_heads, m.k_proj: m.num_heads, m.v_proj: m.num_heads})
    return dict(num_heads=heads, ignored_layers=[model.final_layer_norm])


def tp_clip_text_post(model, pruner):
    from transformers.models.clip.modeling_clip import CLIPAttention
    for m in model.modules():
        if isinstance(m, CLIPAttention):
            m.num_heads = pruner.num_heads[m.q_proj]
            m.embed_dim = m.q_proj.out_features
    model.config.hidden_size = model.final_layer_norm.normalized_shape[0]
    model.config.num_attention_heads = model.encoder.layers[0].self_attn.num_heads
    model.config.intermediate_size = model.encoder.layers[0].mlp.fc1.out_features


def tp_whisper_setup(model):  # closest: prune_hf_bert.py, Whisper names
    from transformers.models.whisper.modeling_whisper import WhisperAttention
    heads = {}
    for m in model.modules():
        if isinstance(m, WhisperAttention):
            heads.update({m.q_proj: m.num_heads, m.k_proj: m.num_heads, m.v_proj: m.num_heads})
    return dict(num_heads=heads, ignored_layers=[model.proj_out])


def tp_whisper_post(model, pruner):
    from transformers.models.whisper.modeling_whisper import WhisperAttention
    for m in model.modules():
        if isinstance(m, WhisperAttention):
            m.num_heads = pruner.num_heads[m.q_proj]
            m.embed_dim = m.q_proj.out_features
    model.config.d_model = model.proj_out.in_features
    model.config.encoder_attention_heads = model.model.encoder.layers[0].self_attn.num_heads
    model.config.decoder_attention_heads = model.model.decoder.layers[0].self_attn.num_heads
    model.config.encoder_ffn_dim = model.model.encoder.layers[0].fc1.out_features
    model.config.decoder_ffn_dim = model.model.decoder.layers[0].fc1.out_features


# family -> (recipe, where it comes from)
TP_RECIPES = {
    "bert": ("bert", "prune_hf_bert.py"), "roberta": ("roberta", "prune_hf_bert.py"),
    "distilbert": ("distilbert", "closest: prune_hf_bert.py"),
    "gpt2": ("gpt2", "closest: prune_llm.py (fused qkv)"),
    "llama": ("llm", "prune_llm.py"), "llama_mha": ("llm", "prune_llm.py"), "qwen2": ("llm", "prune_llm.py"),
    "mistral": ("llm", "prune_llm.py"), "phi3": ("llm", "prune_llm.py (qkv_proj, gate_up_proj)"),
    "opt": ("opt", "closest: prune_llm.py"), "t5": ("t5", "closest: prune_hf_bert.py"),
    "bart": ("bart", "closest: prune_hf_bert.py"), "vit": ("vit", "prune_hf_vit.py"),
    "clip_text": ("clip_text", "closest: prune_hf_bert.py"), "whisper": ("whisper", "closest: prune_hf_bert.py"),
}


def recipe_functions(name: str):
    recipe = TP_RECIPES.get(name, ("llm", ""))[0]
    module = sys.modules[__name__]
    return getattr(module, f"tp_{recipe}_setup"), getattr(module, f"tp_{recipe}_post")


# scaffolding that names nothing of an architecture (not counted as configuration)
GENERIC_LINE = re.compile(r"^(\w+(, \w+)* = (\{\}(, \{\})*)"
                          r"|for (\w+, )?\w+ in model\.(named_)?modules\(\):"
                          r"|else:|raise ValueError\(.*\))$")


def code_lines(fn) -> int:
    """Configuration lines of a function body: code lines (no def line, docstring, comment or
    blank line) other than scaffolding that names no module, attribute or size (GENERIC_LINE)."""
    body = [line.strip() for line in inspect.getsource(fn).splitlines()[1:]]
    body = [line.split("  #")[0].rstrip() for line in body if line and not line.startswith("#")]
    return sum(1 for line in body if not GENERIC_LINE.match(line))


def config_lines(name: str) -> int:
    return sum(code_lines(fn) for fn in recipe_functions(name))


# =========================================================================== worker side

def max_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def one_line(exc: BaseException, limit: int = 170) -> str:
    text = " ".join(str(exc).split())
    text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def raised_at(exc: BaseException) -> str:
    """Where an exception was raised: the innermost frame of torch_pruning, graphprune or transformers."""
    import traceback

    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        for lib in ("torch_pruning/", "graphprune/", "transformers/", "bench_hf_vs_tp"):
            if lib in frame.filename:
                short = frame.filename[frame.filename.index(lib.split("/")[0]):]
                return f" [at {short}:{frame.lineno} {frame.name}]"
    return ""


def tensor_leaves(out) -> list:
    import torch
    import torch.utils._pytree as pytree

    return [t for t in pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]


def first_output(model, inputs):
    import torch

    with torch.no_grad():
        return tensor_leaves(model(*inputs))[0]


def output_shapes(model, inputs) -> dict:
    """Shape of every tensor output, by name (a ModelOutput's fields; positions otherwise)."""
    import torch

    with torch.no_grad():
        out = model(*inputs)
    items = out.items() if hasattr(out, "items") else enumerate(tensor_leaves(out))
    return {str(k): list(v.shape) for k, v in items if isinstance(v, torch.Tensor)}


def first_tensor(out):
    """TP's output_transform: the first output (logits, or the last hidden state)."""
    return tensor_leaves(out)[0]


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model, inputs):
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(*inputs)
    return counter.get_total_flops() / 2


def prune_tp(name: str, model, x, ratio: float):
    import torch_pruning as tp

    setup, post = recipe_functions(name)
    spec = setup(model)
    pruner = tp.pruner.BasePruner(
        model, example_inputs=x, importance=tp.importance.MagnitudeImportance(p=2), global_pruning=False,
        pruning_ratio=ratio, prune_num_heads=True, prune_head_dims=False, head_pruning_ratio=ratio,
        output_transform=first_tensor, **spec)
    for group in pruner.step(interactive=True):
        group.prune()
    post(model, pruner)
    return model, {}


def prune_gp(model, x, ratio: float, verify: bool):
    import graphprune

    result = graphprune.prune(model, ratio, example_inputs=x, verify=verify)
    report = result.report
    return result.model, {"verification": result.verification.status,
                          "verification_message": getattr(result.verification, "message", ""),
                          "returned": report.get("torch", {}).get("returned"),
                          "tracer": report.get("torch", {}).get("tracer"),
                          "hf": report.get("hf")}


def preload_libraries() -> None:
    """Import what the pruning calls use, so ru_maxrss deltas don't count imports."""
    import torch.export  # noqa: F401
    import torch.fx  # noqa: F401
    import torch_pruning  # noqa: F401
    import transformers  # noqa: F401

    import graphprune  # noqa: F401
    import graphprune.hf  # noqa: F401
    import graphprune.torch_prune  # noqa: F401


def prune_once(tool: str, name: str, ratio: float):
    import copy

    from graphprune.models.hf_zoo import build_hf, example

    model, x = build_hf(name)
    cls, cfg = type(model), copy.deepcopy(model.config)
    other = example(name, cfg, batch=3, length=10)
    rss_before = max_rss_mb()
    start = time.perf_counter()
    if tool == "tp":
        pruned, info = prune_tp(name, model, x, ratio)
    else:
        pruned, info = prune_gp(model, x, ratio, verify=(tool == "gp"))
    seconds = time.perf_counter() - start
    return pruned, x, other, cls, info, seconds, max_rss_mb() - rss_before


def same(a, b) -> bool:
    import torch

    return a.shape == b.shape and bool(torch.allclose(a, b, rtol=RTOL, atol=ATOL))


def reload_check(tool: str, pruned, cls, inputs: list, info: dict) -> dict:
    """Save and reload the pruned model; do the reloaded outputs equal the pruned model's?"""
    out = {}
    expected = [first_output(pruned, i) for i in inputs]
    with tempfile.TemporaryDirectory() as tmp:
        if tool == "tp":
            try:
                pruned.save_pretrained(tmp)
                reloaded = cls.from_pretrained(tmp).eval()
                ok = all(same(first_output(reloaded, i), e) for i, e in zip(inputs, expected))
                out["reload"] = "yes (plain HF)" if ok else "no: reloaded outputs differ"
            except Exception as exc:
                out["reload"] = f"no: {config_mismatch(pruned) or one_line(exc, 110)}"
            return out
        import graphprune.hf as ghf

        try:
            ghf.save_pretrained(pruned, tmp)
            reloaded = ghf.from_pretrained(tmp).eval()
            ok = all(same(first_output(reloaded, i), e) for i, e in zip(inputs, expected))
            out["reload"] = "yes" if ok else "no: reloaded outputs differ"
        except Exception as exc:
            out["reload"] = f"no: {one_line(exc, 110)}"
            return out
        fits = bool((info.get("hf") or {}).get("config_fits"))
        out["config_fits"] = fits
        if fits:
            try:
                plain = cls.from_pretrained(tmp).eval()
                ok = all(same(first_output(plain, i), e) for i, e in zip(inputs, expected))
                out["plain_reload"] = "yes" if ok else "no: outputs differ"
            except Exception as exc:
                out["plain_reload"] = f"no: {one_line(exc, 110)}"
    return out


def tied_pairs(model) -> set:
    """The (tied, source) weight pairs of ``_tied_weights_keys`` that really share storage."""
    keys = getattr(model, "_tied_weights_keys", None) or {}
    if not isinstance(keys, dict):
        return set()
    state = model.state_dict(keep_vars=True)
    return {(a, b) for a, b in keys.items() if a in state and b in state
            and state[a].data_ptr() == state[b].data_ptr()}


def config_mismatch(model) -> str:
    """Which saved tensors the (updated) config does not rebuild: why a plain reload refuses them."""
    import torch

    try:
        with torch.device("meta"):
            fresh = {k: tuple(v.shape) for k, v in type(model)(model.config).state_dict().items()}
    except Exception as exc:
        return f"the config does not build: {one_line(exc, 100)}"
    bad = [(k, tuple(v.shape), fresh[k]) for k, v in model.state_dict().items() if k in fresh and fresh[k] != tuple(v.shape)]
    if not bad:
        return ""
    key, have, want = bad[0]
    return f"{len(bad)} tensors disagree with the config, e.g. {key} {list(have)} vs {list(want)}"


def relative_change(a, b):
    import torch

    if a.shape != b.shape:
        return None
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b).clamp_min(1e-30))


def _first(r: dict) -> str:
    """`` (first call s)`` where the warm-up call was timed."""
    return f" ({r['first_seconds']:.2f})" if r.get("first_seconds") is not None else ""


def run_worker(tool: str, name: str, ratio: float, repeats: int) -> dict:
    import faulthandler
    import warnings

    import torch
    import transformers

    faulthandler.register(signal.SIGUSR1, file=sys.stderr, all_threads=False)
    warnings.filterwarnings("ignore")
    transformers.logging.set_verbosity_error()
    torch.set_num_threads(THREADS)
    preload_libraries()
    result = {"tool": tool, "model": name, "ok": False}
    timings = []
    for attempt in range(repeats + 1):  # the first call warms up (reported on its own)
        try:
            pruned, x, other, cls, info, seconds, rss_mb = prune_once(tool, name, ratio)
        except Exception as exc:
            return {**result, "error": one_line(exc) + raised_at(exc)}
        timings.append(seconds)
        if attempt == 0:  # later attempts build more models; the first RSS delta is the clean one
            first = (pruned, x, other, cls)
            result.update(info, mem_mb=rss_mb)
    pruned, x, other, cls = first
    result.update(seconds=statistics.median(timings[1:]), first_seconds=timings[0], timings=timings)
    if tool == "gp_noverify":  # timing only; the verified run measures the (identical) pruned model
        result["ok"] = True
        return result
    # the dense model, freshly built: sizes and first-output shapes at both input shapes
    from graphprune.models.hf_zoo import build_hf

    dense, _ = build_hf(name)
    result.update(params_before=n_params(dense), macs_before=count_macs(dense, x))
    dense_x, dense_other = first_output(dense, x), first_output(dense, other)
    dense_ties, dense_shapes = tied_pairs(dense), output_shapes(dense, x)
    del dense
    notes = result.setdefault("notes", [])
    untied = sorted(a for a, _ in dense_ties - tied_pairs(pruned))
    if untied:
        notes.append(f"weight tying broken: {', '.join(untied)}")
    pruned.eval()
    try:
        got = first_output(pruned, x)
    except Exception as exc:
        return {**result, "error": f"pruned model fails on the example: {one_line(exc)}"}
    if got.shape != dense_x.shape:
        return {**result, "error": f"output shape changed: {list(dense_x.shape)} -> {list(got.shape)}"}
    result.update(ok=True, rel_change=relative_change(got, dense_x), params=n_params(pruned))
    try:
        shapes = output_shapes(pruned, x)
        changed = [f"{k} {dense_shapes[k]}->{v}" for k, v in shapes.items() if k in dense_shapes and dense_shapes[k] != v]
        if changed:
            notes.append("other outputs changed shape: " + ", ".join(changed))
    except Exception as exc:
        notes.append(f"outputs not comparable: {one_line(exc, 80)}")
    try:
        result["macs"] = count_macs(pruned, x)
    except Exception as exc:
        result["macs_error"] = one_line(exc)
    try:
        got_other = first_output(pruned, other)
        result["other_shape"] = ("yes" if got_other.shape == dense_other.shape else
                                 f"no: shape {list(got_other.shape)} != {list(dense_other.shape)}")
    except Exception as exc:
        result["other_shape"] = f"no: {one_line(exc, 110)}"
    result.update(reload_check(tool, pruned, cls, [x, other], info))
    return result


# =========================================================================== parent side

def rss_gb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**30
    except (OSError, ValueError, IndexError):
        return 0.0


def watch(proc: subprocess.Popen, timeout: float, mem_limit_gb: float):
    """Wait for the worker, killing it past the time or memory limit: (status, peak RSS GiB, kill reason)."""
    deadline, killed = time.monotonic() + timeout, None
    while True:
        try:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        except ChildProcessError:  # already reaped
            return proc.returncode if proc.returncode is not None else -9, 0.0, killed
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return proc.returncode, usage.ru_maxrss / 2**20, killed
        if killed is None and time.monotonic() > deadline:
            killed = f"timeout after {timeout:.0f} s"
        elif killed is None and rss_gb(proc.pid) > mem_limit_gb:
            killed = f"exceeded the {mem_limit_gb:.1f} GiB memory limit (--mem-limit-gb)"
        if killed:
            try:  # the worker dumps its Python stack on SIGUSR1 (faulthandler): say where it was stuck
                os.kill(proc.pid, signal.SIGUSR1)
                time.sleep(1.0)
                os.kill(proc.pid, signal.SIGKILL)  # not proc.kill(): its poll() would reap the child
            except OSError:
                pass
        time.sleep(0.05)


def stuck_at(stderr: str) -> str:
    """From a faulthandler dump (most recent call first): the innermost frames of the library at work."""
    frames = re.findall(r'File "([^"]+)", line (?:\d+|\?\?\?) in (\w+)', stderr.split("most recent call first")[-1])
    lib = [(path, fn) for path, fn in frames if "torch_pruning" in path or "/graphprune/" in path]
    if not lib:
        return ""
    path, _ = lib[0]
    short = re.sub(r".*/site-packages/|.*/(?=graphprune/)", "", path)
    return f"{short}: " + " <- ".join(fn for _, fn in lib[:3])


def run_in_subprocess(tool: str, name: str, args) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out_path, err_path = Path(tmp) / "result.json", Path(tmp) / "stderr.txt"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", tool, "--worker-model", name,
               "--worker-out", str(out_path), "--ratio", str(args.ratio), "--repeats", str(args.repeats)]
        env = dict(os.environ, OMP_NUM_THREADS=str(THREADS), MKL_NUM_THREADS=str(THREADS),
                   TOKENIZERS_PARALLELISM="false")
        start = time.perf_counter()
        with open(err_path, "w") as err:
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=env)
            returncode, peak_gb, killed = watch(proc, args.timeout, args.mem_limit_gb)
        if killed:
            where = stuck_at(err_path.read_text(errors="replace"))
            result = {"tool": tool, "model": name, "ok": False, "error": killed + (f" (stuck in {where})" if where else "")}
        elif out_path.exists():
            result = json.loads(out_path.read_text())
        else:
            lines = [line for line in err_path.read_text(errors="replace").splitlines() if line.strip()]
            reason = lines[-1].strip() if lines else ""
            how = f"killed by signal {-returncode}" if returncode < 0 else f"exit {returncode}"
            result = {"tool": tool, "model": name, "ok": False,
                      "error": f"worker crashed ({how}, peak RSS {peak_gb:.1f} GiB)"
                               f"{': ' + reason[:120] if reason else ''}"}
        result.update(wall_s=time.perf_counter() - start, worker_peak_rss_gb=peak_gb)
        return result


def fmt_num(value) -> str:
    if value is None:
        return "-"
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.2f}{suffix}"
    return f"{value:.0f}"


def fmt_after_before(after, before) -> str:
    if after is None or before is None:
        return "-"
    share = f" ({100 * after / before:.0f}%)" if before else ""
    return f"{fmt_num(after)} / {fmt_num(before)}{share}"


def fmt_float(value, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def cell(text) -> str:
    return str(text).replace("|", "/")


def result_cell(r: dict) -> str:
    if not r.get("ok"):
        return "FAIL: " + cell(r.get("error", "?"))
    if r["tool"] == "gp":
        details = [r.get("verification")]
        details.append("original class" if r.get("returned") == "original module" else r.get("returned"))
        details += r.get("notes", [])
        return "ok (" + ", ".join(d for d in details if d) + ")"
    return "ok" + (f" ({cell('; '.join(r['notes']))})" if r.get("notes") else "")


def reload_cell(r: dict) -> str:
    if not r.get("ok") or "reload" not in r:
        return "-"
    text = r["reload"]
    if r["tool"] == "gp" and text == "yes":
        if r.get("config_fits"):
            text += "; plain HF " + r.get("plain_reload", "?")
        else:
            text += " (graphprune.hf); config fits: no"
    return cell(text)


def table_rows(name: str, res: dict) -> list[list[str]]:
    rows = []
    for tool in ("tp", "gp"):
        r = res.get(tool)
        if r is None:
            continue
        seconds, mem = fmt_float(r.get("seconds")) + _first(r), fmt_float(r.get("mem_mb"), 0)
        if tool == "gp" and "gp_noverify" in res:
            nv = res["gp_noverify"]
            seconds += " / " + (fmt_float(nv.get("seconds")) + _first(nv) if nv.get("ok") else "FAIL")
            if nv.get("mem_mb") is not None:
                mem += f" / {nv['mem_mb']:.0f}"
        lines = str(config_lines(name)) if tool == "tp" else "0"
        rows.append([name, {"tp": "Torch-Pruning", "gp": "graphprune"}[tool], result_cell(r), seconds, mem,
                     fmt_after_before(r.get("params"), r.get("params_before")) if r.get("ok") else "-",
                     fmt_after_before(r.get("macs"), r.get("macs_before")) if r.get("ok") else "-",
                     lines, cell(r.get("other_shape", "-")) if r.get("ok") else "-", reload_cell(r)])
    return rows


def markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def ratio(a, b):
    return a / b if a is not None and b else None


def median_or_none(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def comparison_rows(all_results: dict) -> list[list[str]]:
    rows = []
    for name, res in all_results.items():
        tp_, gp, nv = res.get("tp", {}), res.get("gp", {}), res.get("gp_noverify", {})
        if not (tp_.get("ok") and gp.get("ok")):
            continue
        rows.append([name, fmt_float(ratio(gp.get("seconds"), tp_.get("seconds"))),
                     fmt_float(ratio(nv.get("seconds"), tp_.get("seconds")) if nv.get("ok") else None),
                     fmt_float(ratio(gp.get("macs"), tp_.get("macs"))),
                     fmt_float(ratio(gp.get("params"), tp_.get("params"))),
                     fmt_float(ratio(gp.get("mem_mb"), tp_.get("mem_mb")))])
    return rows


def summary(all_results: dict) -> str:
    n = len(all_results)

    def count(tool, key=None):
        return sum(1 for res in all_results.values() if res.get(tool, {}).get("ok")
                   and (key is None or str(res[tool].get(key, "")).startswith("yes")))

    both = [res for res in all_results.values() if res.get("tp", {}).get("ok") and res.get("gp", {}).get("ok")]
    t_v = median_or_none([ratio(r["gp"].get("seconds"), r["tp"].get("seconds")) for r in both])
    t_nv = median_or_none([ratio(r.get("gp_noverify", {}).get("seconds"), r["tp"].get("seconds")) for r in both
                           if r.get("gp_noverify", {}).get("ok")])
    macs = median_or_none([ratio(r["gp"].get("macs"), r["tp"].get("macs")) for r in both])
    tp_fail = [f"{name} ({res['tp'].get('error', '?')[:80]})" for name, res in all_results.items()
               if "tp" in res and not res["tp"].get("ok")]
    gp_fail = [f"{name} ({res['gp'].get('error', '?')[:80]})" for name, res in all_results.items()
               if "gp" in res and not res["gp"].get("ok")]
    lines = [f"Models pruned: Torch-Pruning {count('tp')}/{n}, graphprune {count('gp')}/{n} "
             f"(verify=False {count('gp_noverify')}/{n}); run at another batch/length: TP {count('tp', 'other_shape')}, "
             f"graphprune {count('gp', 'other_shape')}; reload with the same outputs: TP {count('tp', 'reload')}, "
             f"graphprune {count('gp', 'reload')}.",
             f"Over the {len(both)} models both pruned: median pass time graphprune / TP {fmt_float(t_v)} with "
             f"verification, {fmt_float(t_nv)} with verify=False; median MACs after graphprune / TP {fmt_float(macs)}."]
    if tp_fail:
        lines.append("Torch-Pruning failures: " + "; ".join(tp_fail))
    if gp_fail:
        lines.append("graphprune failures: " + "; ".join(gp_fail))
    return "\n".join(lines)


def run_benchmark(args) -> dict:
    from graphprune.models.hf_zoo import hf_names

    names = DEFAULT_MODELS if args.models == "default" else [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = sorted(set(names) - set(hf_names()))
    if unknown:
        raise SystemExit(f"unknown model(s): {', '.join(unknown)}; see graphprune.models.hf_zoo.hf_names()")
    tools = [t for t in TOOLS if t in args.tools.split(",")]
    pairs = [(name, tool) for name in names for tool in tools]
    all_results = {name: {} for name in names}
    done = 0
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = {pool.submit(run_in_subprocess, tool, name, args): (name, tool) for name, tool in pairs}
        for future in concurrent.futures.as_completed(futures):
            name, tool = futures[future]
            r = all_results[name][tool] = future.result()
            done += 1
            status = "ok" if r.get("ok") else "FAIL " + r.get("error", "?")
            print(f"[{done}/{len(pairs)}] {name:12} {tool:12} {status[:120]:120} ({r.get('wall_s', 0):.0f} s)",
                  file=sys.stderr, flush=True)
    return {name: {tool: res[tool] for tool in tools if tool in res} for name, res in all_results.items()}


def report(all_results: dict, args) -> None:
    header = ["model", "tool", "result", "pass s (verify / noverify)", "peak ΔRSS MB", "params after / before",
              "MACs after / before", "config lines", "runs at other shape", "reloads"]
    rows = [row for name, res in all_results.items() for row in table_rows(name, res)]
    print(f"\nratio={args.ratio}, L2 magnitude importance, {THREADS} torch thread, pass s: median of {args.repeats} "
          f"calls after a warm-up call (its time in parentheses); MACs: FlopCounterMode / 2 at the example; "
          f"other shape: batch 3, length 10; "
          f"graphprune ΔRSS: verify / verify=False\n")
    print(markdown(header, rows))
    print("\ngraphprune / Torch-Pruning ratios (models both pruned; < 1: graphprune smaller / faster):\n")
    print(markdown(["model", "pass time (verify)", "pass time (verify=False)", "MACs after", "params after",
                    "peak ΔRSS"], comparison_rows(all_results)))
    recipes = sorted({(TP_RECIPES.get(n, ("llm", "?"))[0], TP_RECIPES.get(n, ("", "?"))[1]) for n in all_results})
    print("\nTorch-Pruning recipes used (config lines = code lines of tp_<recipe>_setup + tp_<recipe>_post): "
          + "; ".join(f"{r}: {src}" for r, src in recipes))
    print("\n" + summary(all_results))


def total_memory_gb() -> float:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Run Torch-Pruning and graphprune side by side on the Hugging Face zoo and print a "
                    "markdown table.", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--models", default="default",
                        help="'default' (15 families Torch-Pruning's recipes cover or come close to) or a "
                             "comma-separated list of hf_zoo names")
    parser.add_argument("--ratio", type=float, default=0.3, help="pruning ratio given to both tools")
    parser.add_argument("--repeats", type=int, default=3,
                        help="prune this many fresh copies per pair and report the median pass time "
                             "(memory is from the first)")
    parser.add_argument("--timeout", type=float, default=300, help="seconds allowed per (tool, model) subprocess")
    parser.add_argument("--mem-limit-gb", type=float, default=round(total_memory_gb() * 0.6, 1),
                        help="kill a subprocess whose RSS exceeds this many GiB")
    parser.add_argument("--jobs", type=int, default=1,
                        help="subprocesses run at once (more than 1 makes the timings noisier)")
    parser.add_argument("--tools", default="tp,gp,gp_noverify", help="comma-separated subset of tp, gp, gp_noverify")
    parser.add_argument("--json", metavar="PATH", help="also write the raw per-pair results to this JSON file")
    parser.add_argument("--load", metavar="PATH", help="print the table of an earlier --json file instead of running")
    parser.add_argument("--worker", choices=TOOLS, help=argparse.SUPPRESS)
    parser.add_argument("--worker-model", help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.worker:
        result = run_worker(args.worker, args.worker_model, args.ratio, args.repeats)
        Path(args.worker_out).write_text(json.dumps(result))
        return
    if args.load:
        report(json.loads(Path(args.load).read_text()), args)
        return
    all_results = run_benchmark(args)
    if args.json:
        Path(args.json).write_text(json.dumps(all_results, indent=1))
    report(all_results, args)


if __name__ == "__main__":
    main()
