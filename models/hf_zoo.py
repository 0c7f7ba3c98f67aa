"""The Hugging Face zoo of the PyTorch path: one tiny random-init model per family.

Every config has 2 layers, width 256, 8 heads (2 key/value heads where the
family has GQA), FFN 512 and vocabulary 1000, built as a user would build it
(the ``*For*`` class with its head, ``use_cache`` as the family ships it, the
attention implementation given) and passed to ``graphprune.prune`` with no
per-model configuration. ``example(name)`` gives the positional inputs.
"""

from __future__ import annotations

import torch

SEED = 0
COMMON = dict(num_hidden_layers=2, hidden_size=256, num_attention_heads=8, intermediate_size=512,
              vocab_size=1000, max_position_embeddings=128, pad_token_id=0, bos_token_id=1, eos_token_id=2)
GQA = dict(num_key_value_heads=2)

# name -> (model type, auto class, config overrides, input kind)
FAMILIES = {
    "bert": ("bert", "AutoModelForMaskedLM", {}, "text"),
    "roberta": ("roberta", "AutoModelForMaskedLM", {}, "text"),
    "distilbert": ("distilbert", "AutoModelForMaskedLM",
                   dict(n_layers=2, dim=256, n_heads=8, hidden_dim=512, _drop=COMMON.keys() - {
                       "vocab_size", "max_position_embeddings", "pad_token_id"}), "text"),
    "albert": ("albert", "AutoModelForMaskedLM", dict(embedding_size=128), "text"),
    "gpt2": ("gpt2", "AutoModelForCausalLM",
             dict(n_layer=2, n_embd=256, n_head=8, n_inner=512, n_positions=128,
                  _drop={"num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size",
                         "max_position_embeddings"}), "text"),
    "gpt_neox": ("gpt_neox", "AutoModelForCausalLM", {}, "text"),
    "llama": ("llama", "AutoModelForCausalLM", GQA, "text"),
    "llama_mha": ("llama", "AutoModelForCausalLM", {}, "text"),
    "qwen2": ("qwen2", "AutoModelForCausalLM", GQA, "text"),
    "qwen3": ("qwen3", "AutoModelForCausalLM", dict(GQA, head_dim=32), "text"),
    "mistral": ("mistral", "AutoModelForCausalLM", GQA, "text"),
    "gemma": ("gemma", "AutoModelForCausalLM", dict(GQA, head_dim=32), "text"),
    "gemma2": ("gemma2", "AutoModelForCausalLM", dict(GQA, head_dim=32), "text"),
    "phi3": ("phi3", "AutoModelForCausalLM", GQA, "text"),
    "opt": ("opt", "AutoModelForCausalLM", dict(ffn_dim=512, word_embed_proj_dim=256), "text"),
    "mixtral": ("mixtral", "AutoModelForCausalLM", dict(GQA, num_local_experts=4), "text"),
    "qwen2_moe": ("qwen2_moe", "AutoModelForCausalLM",
                  dict(GQA, num_experts=4, moe_intermediate_size=128, shared_expert_intermediate_size=256),
                  "text"),
    "t5": ("t5", "AutoModelForSeq2SeqLM",
           dict(num_layers=2, d_model=256, num_heads=8, d_ff=512, d_kv=32, decoder_start_token_id=0,
                _drop={"num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size"}),
           "seq2seq"),
    "bart": ("bart", "AutoModelForSeq2SeqLM",
             dict(encoder_layers=2, decoder_layers=2, d_model=256, encoder_attention_heads=8,
                  decoder_attention_heads=8, encoder_ffn_dim=512, decoder_ffn_dim=512,
                  _drop={"num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size"}),
             "seq2seq"),
    "vit": ("vit", "AutoModelForImageClassification", dict(image_size=64, patch_size=8), "image"),
    "swin": ("swin", "AutoModelForImageClassification",
             dict(image_size=64, patch_size=4, embed_dim=32, depths=[2, 2], num_heads=[2, 4], window_size=4,
                  _drop=set(COMMON)), "image"),
    "clip_text": ("clip_text_model", "CLIPTextModel", {}, "text"),
    "clip_vision": ("clip_vision_model", "CLIPVisionModel", dict(image_size=64, patch_size=8,
                                                                 _drop={"vocab_size", "pad_token_id",
                                                                        "bos_token_id", "eos_token_id"}),
                    "image"),
    "whisper": ("whisper", "WhisperForConditionalGeneration",
                dict(encoder_layers=2, decoder_layers=2, d_model=256, encoder_attention_heads=8,
                     decoder_attention_heads=8, encoder_ffn_dim=512, decoder_ffn_dim=512, num_mel_bins=80,
                     max_source_positions=32, max_target_positions=64, decoder_start_token_id=1,
                     _drop={"num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size",
                            "max_position_embeddings"}), "audio"),
}
DECODERS = {n for n, (_, cls, _, _) in FAMILIES.items() if cls in ("AutoModelForCausalLM",)}


def hf_names() -> list[str]:
    return list(FAMILIES)


def config(name: str, attention: str = "eager"):
    import transformers

    kind, _, overrides, _ = FAMILIES[name]
    overrides = dict(overrides)
    drop = overrides.pop("_drop", set())
    kwargs = {k: v for k, v in COMMON.items() if k not in drop}
    kwargs.update(overrides)
    cfg = transformers.AutoConfig.for_model(kind, **kwargs)
    cfg._attn_implementation = attention
    return cfg


def build_hf(name: str, attention: str = "eager", seed: int = SEED):
    """``(model in eval mode, example inputs tuple)`` with seeded random weights."""
    import transformers

    _, auto, _, _ = FAMILIES[name]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        cls = getattr(transformers, auto)
        cfg = config(name, attention)
        model = cls.from_config(cfg, attn_implementation=attention) if hasattr(cls, "from_config") else cls(cfg)
    return model.eval(), example(name, model.config)


def example(name: str, cfg, batch: int = 1, length: int = 16, seed: int = SEED + 1) -> tuple:
    g = torch.Generator().manual_seed(seed)
    kind = FAMILIES[name][3]
    if kind == "image":
        size = cfg.image_size
        return (torch.randn(batch, 3, size, size, generator=g),)
    if kind == "audio":
        frames = 2 * cfg.max_source_positions
        return (torch.randn(batch, cfg.num_mel_bins, frames, generator=g),
                None, torch.randint(3, cfg.vocab_size, (batch, length // 2), generator=g))
    ids = torch.randint(3, cfg.vocab_size, (batch, length), generator=g)
    if kind == "seq2seq":
        return (ids, None, torch.randint(3, cfg.vocab_size, (batch, length // 2), generator=g))
    return (ids,)
