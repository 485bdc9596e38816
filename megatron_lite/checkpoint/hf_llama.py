"""Hugging Face ``LlamaForCausalLM`` / ``MistralForCausalLM`` <-> megatron_lite.

The Llama family is our model with ``norm: rmsnorm``, ``activation: swiglu``, rotary over the
whole head (``rotary_pct: 1``, the same ``rotate_half`` form as GPTNeoX), sequential residual,
grouped-query attention, and (Mistral) a sliding window. What differs is the weight layout:

- HF has separate ``q_proj`` [heads*d, h], ``k_proj`` / ``v_proj`` [kv*d, h]; ours is one fused
  ``query_key_value`` laid out per key/value group, ``[kv, q_per_group + 2, d]`` rows (a group's
  queries, then its key, then its value), so that contiguous tensor-parallel chunks hold whole
  groups (``sharding.py``);
- HF's MLP is ``down(silu(gate(x)) * up(x))``; ours computes ``silu(gate) * value`` from one
  ``dense_h_to_4h`` whose rows are ``[value; gate]`` = ``[up_proj; gate_proj]``.

Config: ``rms_norm_eps`` <-> ``rms_norm_epsilon``, ``num_key_value_heads`` <-> ``num_kv_heads``,
``attention_bias`` (q/k/v/o) <-> ``use_bias_in_attn_linear``, ``mlp_bias`` <->
``use_bias_in_mlp`` (Llama; Mistral has neither), ``rope_theta`` <-> ``rotary_emb_base``,
``linear`` / ``llama3`` rope scaling <-> ``rope_scaling``, and Mistral's ``sliding_window`` (the
token itself included) <-> ``sliding_window_width + 1`` (GPT-NeoX's width excludes it).
"""

from __future__ import annotations

from typing import Any

import torch

from megatron_lite.checkpoint.hf_common import (
    EMBEDDING,
    HEAD,
    UnsupportedForHF,
    common_hf_config,
    common_keys_from_hf,
    rope_from_hf,
    rope_parameters,
    save_with_transformers,
    vocab_rows_and_head,
)
from megatron_lite.config.schema import ModelConfig

ARCHITECTURES = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM"}
_MODEL_TYPES = {arch: model_type for model_type, arch in ARCHITECTURES.items()}
_ACT_FROM_HF = ("silu", "swish")  # the gate of Llama's MLP; anything else is not our swiglu
_RENAMES = {  # per layer: HF name after "model.layers.{i}." -> ours after "layers.{i}."
    "input_layernorm.weight": "input_layernorm.weight",
    "post_attention_layernorm.weight": "post_attention_layernorm.weight",
    "self_attn.o_proj.weight": "attention.dense.weight", "self_attn.o_proj.bias": "attention.dense.bias",
    "mlp.down_proj.weight": "mlp.dense_4h_to_h.weight", "mlp.down_proj.bias": "mlp.dense_4h_to_h.bias",
}
_QKV = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")
_UP_GATE = ("mlp.up_proj", "mlp.gate_proj")  # [value; gate]


def model_keys_from_llama(hf: dict[str, Any], seq_length: int | None = None) -> dict[str, Any]:
    """Our flat config keys from a Llama or Mistral ``config.json`` (either transformers style)."""
    mistral = hf["model_type"] == "mistral"
    act = hf.get("hidden_act", "silu")
    if act not in _ACT_FROM_HF:
        raise UnsupportedForHF(f"hidden_act {act!r}: a {hf['model_type']} MLP converts with silu (our swiglu) only")
    heads = hf["num_attention_heads"]
    head_dim = hf.get("head_dim") or hf["hidden_size"] // heads
    if head_dim * heads != hf["hidden_size"]:
        raise UnsupportedForHF(f"head_dim {head_dim} x num_attention_heads {heads} != hidden_size "
                               f"{hf['hidden_size']}: our attention needs head_dim = hidden_size / heads")
    rotary_pct, base, scaling = rope_from_hf(hf, default_pct=1.0)
    if rotary_pct != 1.0:
        raise UnsupportedForHF(f"partial_rotary_factor {rotary_pct}: {hf['model_type']} rotates the whole head here")
    window = hf.get("sliding_window") if mistral else None
    return {
        **common_keys_from_hf(hf, seq_length),
        # None when every query head has its own (multi-head): what a hand-written config says.
        "num_kv_heads": None if hf.get("num_key_value_heads") in (None, heads) else hf["num_key_value_heads"],
        "rotary_pct": 1.0, "rotary_emb_base": base, "rope_scaling": scaling,
        "sliding_window_width": window - 1 if window else None,
        "norm": "rmsnorm", "rms_norm_epsilon": float(hf.get("rms_norm_eps", 1e-6)),
        "activation": "swiglu", "gpt_j_residual": False,
        "use_bias_in_attn_linear": bool(hf.get("attention_bias", False)) and not mistral,
        "use_bias_in_mlp": bool(hf.get("mlp_bias", False)) and not mistral,
        "use_bias_in_norms": False, "hidden_dropout": 0.0,
    }


def llama_shapes(cfg: ModelConfig, vocab: int) -> dict[str, tuple[int, ...]]:
    """HF parameter name -> shape, as the config says, in the model's order."""
    h, ff, heads = cfg.hidden_size, cfg.mlp_inner_size, cfg.num_attention_heads
    d, kv = h // heads, cfg.num_kv_heads or heads
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (vocab, h)}
    for i in range(cfg.num_layers):
        p = f"model.layers.{i}."
        proj = {"self_attn.q_proj": (heads * d, h), "self_attn.k_proj": (kv * d, h), "self_attn.v_proj": (kv * d, h),
                "self_attn.o_proj": (h, heads * d)}
        for name, shape in proj.items():
            shapes[p + name + ".weight"] = shape
            if cfg.use_bias_in_attn_linear:
                shapes[p + name + ".bias"] = shape[:1]
        for name, shape in {"mlp.gate_proj": (ff, h), "mlp.up_proj": (ff, h), "mlp.down_proj": (h, ff)}.items():
            shapes[p + name + ".weight"] = shape
            if cfg.use_bias_in_mlp:
                shapes[p + name + ".bias"] = shape[:1]
        shapes[p + "input_layernorm.weight"] = shapes[p + "post_attention_layernorm.weight"] = (h,)
    shapes["model.norm.weight"] = (h,)
    if cfg.no_weight_tying:
        shapes["lm_head.weight"] = (vocab, h)
    return shapes


def _check_shapes(hf_sd: dict[str, torch.Tensor], cfg: ModelConfig, vocab: int) -> None:
    """Every parameter the config implies, with its shape, before any is fused (fusing a wrong
    shape would fail somewhere unhelpful): the first one that differs is named."""
    for name, shape in llama_shapes(cfg, vocab).items():
        if name not in hf_sd:
            if name == "lm_head.weight":
                raise UnsupportedForHF("untied model (tie_word_embeddings false) without lm_head.weight: a bare LlamaModel?")
            raise UnsupportedForHF(f"the weights lack {name}, which config.json implies")
        if tuple(hf_sd[name].shape) != shape:
            raise UnsupportedForHF(f"{name} has shape {tuple(hf_sd[name].shape)} but config.json implies {shape} "
                                   f"(hidden_size {cfg.hidden_size}, num_key_value_heads {cfg.num_kv_heads}, "
                                   f"intermediate_size {cfg.mlp_inner_size}, vocab_size {vocab})")


def _fuse_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kv: int) -> torch.Tensor:
    """q [heads*d(, h)], k/v [kv*d(, h)] -> rows [kv, q_per_group + 2, d] flattened (weights or biases)."""
    rest = q.shape[1:]
    groups = [t.reshape(kv, -1, *rest) for t in (q, k, v)]  # [kv, q_per_group*d | d | d, (h)]
    d = k.shape[0] // kv
    return torch.cat([g.reshape(kv, -1, d, *rest) for g in groups], dim=1).reshape(-1, *rest)


def _split_qkv(qkv: torch.Tensor, kv: int, q_per_group: int) -> tuple[torch.Tensor, ...]:
    """Inverse of ``_fuse_qkv``: (q, k, v) in HF's row order."""
    rest = qkv.shape[1:]
    grouped = qkv.reshape(kv, q_per_group + 2, -1, *rest)  # [kv, q_per_group + 2, d, (h)]
    return tuple(t.reshape(-1, *rest).contiguous() for t in grouped.split([q_per_group, 1, 1], dim=1))


def state_dict_from_llama(hf_sd: dict[str, torch.Tensor], cfg: ModelConfig, vocab: int) -> dict[str, torch.Tensor]:
    """HF Llama / Mistral weights -> our full (tp = 1) GPTModel state dict (vocabulary rows
    padded to ``cfg.padded_vocab_size``). Rotary ``inv_freq`` buffers of older files are skipped;
    a tied model's ``lm_head.weight`` (if a file carries one) is the embedding and dropped."""
    sd = {k: v for k, v in hf_sd.items() if not k.endswith("rotary_emb.inv_freq")}
    _check_shapes(sd, cfg, vocab)
    out = {EMBEDDING: sd["model.embed_tokens.weight"], "final_layernorm.weight": sd["model.norm.weight"]}
    if cfg.no_weight_tying:
        out[HEAD] = sd["lm_head.weight"]
    kv = cfg.num_kv_heads or cfg.num_attention_heads
    for i in range(cfg.num_layers):
        hf, ours = f"model.layers.{i}.", f"layers.{i}."
        out.update({ours + new: sd[hf + old] for old, new in _RENAMES.items() if hf + old in sd})
        for kind in ("weight", "bias"):
            if hf + f"{_QKV[0]}.{kind}" in sd:
                out[ours + f"attention.query_key_value.{kind}"] = _fuse_qkv(*(sd[hf + f"{n}.{kind}"] for n in _QKV), kv)
            if hf + f"{_UP_GATE[0]}.{kind}" in sd:
                out[ours + f"mlp.dense_h_to_4h.{kind}"] = torch.cat([sd[hf + f"{n}.{kind}"] for n in _UP_GATE])
    known = set(llama_shapes(cfg, vocab)) | {"lm_head.weight"}
    extra = sorted(set(sd) - known)
    if extra:
        raise UnsupportedForHF(f"weights that a {cfg.num_layers}-layer Llama/Mistral does not have: {', '.join(extra[:4])}")
    return vocab_rows_and_head(out, cfg.padded_vocab_size, not cfg.no_weight_tying, "Llama")


def state_dict_to_llama(sd: dict[str, torch.Tensor], cfg: ModelConfig, vocab: int) -> dict[str, torch.Tensor]:
    """Our full GPTModel state dict -> Llama / Mistral names (padding rows dropped)."""
    heads = cfg.num_attention_heads
    kv = cfg.num_kv_heads or heads
    back = {new: old for old, new in _RENAMES.items()}
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        if key in (EMBEDDING, HEAD):
            out["model.embed_tokens.weight" if key == EMBEDDING else "lm_head.weight"] = value[:vocab].contiguous()
        elif key == "final_layernorm.weight":
            out["model.norm.weight"] = value
        else:
            _, i, rest = key.split(".", 2)
            hf = f"model.layers.{i}."
            kind = rest.rsplit(".", 1)[1]
            if rest.startswith("attention.query_key_value."):
                out.update({hf + f"{n}.{kind}": t for n, t in zip(_QKV, _split_qkv(value, kv, heads // kv))})
            elif rest.startswith("mlp.dense_h_to_4h."):
                out.update({hf + f"{n}.{kind}": t.contiguous() for n, t in zip(_UP_GATE, value.chunk(2))})
            else:
                out[hf + back[rest]] = value
    return out


def llama_problems(cfg: ModelConfig, architecture: str) -> list[str]:
    """What ``architecture`` (LlamaForCausalLM / MistralForCausalLM) cannot express of ``cfg``."""
    mistral = architecture == "MistralForCausalLM"
    wanted = {"pos_emb": "rotary", "norm": "rmsnorm", "activation": "swiglu", "rotary_pct": 1.0, "gpt_j_residual": False}
    problems = [f"{key}: {getattr(cfg, key)} (needs {value})" for key, value in wanted.items() if getattr(cfg, key) != value]
    if mistral:
        problems += [f"{key}: true (Mistral has no biases)" for key in ("use_bias_in_attn_linear", "use_bias_in_mlp")
                     if getattr(cfg, key)]
    elif cfg.sliding_window_width is not None:
        problems.append(f"sliding_window_width: {cfg.sliding_window_width} (Llama has no sliding window: MistralForCausalLM)")
    return problems


def llama_config_dict(cfg: ModelConfig, vocab: int, eod: int | None, pad: int | None,
                      architecture: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(config.json content for transformers' LlamaConfig / MistralConfig, the legacy rotary
    spellings older transformers read: top-level ``rope_theta`` and ``rope_scaling``)."""
    config = {
        **common_hf_config(cfg, vocab, eod, pad), "architectures": [architecture],
        "model_type": _MODEL_TYPES[architecture], "hidden_act": "silu",
        "num_key_value_heads": cfg.num_kv_heads or cfg.num_attention_heads,
        "head_dim": cfg.hidden_size // cfg.num_attention_heads, "rms_norm_eps": cfg.rms_norm_epsilon,
        "rope_parameters": rope_parameters(cfg, partial=False),
    }
    if architecture == "MistralForCausalLM":
        window = cfg.sliding_window_width
        config["sliding_window"] = window + 1 if window is not None else None
    else:
        config.update(attention_bias=cfg.use_bias_in_attn_linear, mlp_bias=cfg.use_bias_in_mlp)
    scaling = {k: v for k, v in config["rope_parameters"].items() if k != "rope_theta"}
    legacy = {"rope_theta": float(cfg.rotary_emb_base), "rope_scaling": scaling if cfg.rope_scaling else None}
    return config, legacy


def save_llama_model(cfg: ModelConfig, full: dict[str, torch.Tensor], vocab: int, out_dir: str,
                     eod: int | None, pad: int | None, architecture: str) -> None:
    """Write a ``LlamaForCausalLM`` / ``MistralForCausalLM`` directory with ``save_pretrained``."""
    import transformers

    config, legacy = llama_config_dict(cfg, vocab, eod, pad, architecture)
    config_cls = getattr(transformers, architecture.replace("ForCausalLM", "Config"))
    save_with_transformers(getattr(transformers, architecture), config_cls(**config),
                           state_dict_to_llama(full, cfg, vocab), not cfg.no_weight_tying, out_dir, legacy)
