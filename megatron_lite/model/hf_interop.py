"""Hugging Face ``GPTNeoXForCausalLM`` <-> megatron_lite: configs and weights.

Names map one to one (GPT-NeoX's layout is HF's): ``gpt_neox.X`` <-> ``X``, except
``gpt_neox.final_layer_norm`` <-> ``final_layernorm``, ``gpt_neox.embed_in`` <->
``embedding.word_embeddings`` and the head, ``embed_out.weight`` (on disk) or
``lm_head.weight`` (transformers 5's in-memory name) <-> ``lm_head.embed_out.weight``. Our embedding and head
carry padding rows (``padded_vocab_size``); they are added on import and dropped on export.
"""

from __future__ import annotations

import json
import os
from typing import Any

import torch

from megatron_lite.config.schema import ModelConfig

SAFETENSORS = "model.safetensors"


class UnsupportedForHF(ValueError):
    """A model option that GPTNeoXForCausalLM cannot express."""


def check_exportable(cfg: ModelConfig) -> None:
    """Raise for every option of ours that HF GPTNeoX has no way to represent."""
    problems = []
    if cfg.pos_emb != "rotary":
        problems.append(f"pos_emb: {cfg.pos_emb} (HF GPTNeoX has rotary positions only)")
    if cfg.norm != "layernorm" or not cfg.use_bias_in_norms:
        problems.append("norm: rmsnorm / LayerNorm without bias (HF GPTNeoX uses LayerNorm with bias)")
    if cfg.activation != "gelu":
        problems.append(f"activation: {cfg.activation} (exportable: gelu)")
    if cfg.num_kv_heads not in (None, cfg.num_attention_heads):
        problems.append("num_kv_heads (grouped-query attention)")
    if not (cfg.use_bias_in_attn_linear and cfg.use_bias_in_mlp):
        problems.append("use_bias_in_attn_linear / use_bias_in_mlp: false (HF GPTNeoX has biases)")
    if problems:
        raise UnsupportedForHF("Hugging Face GPTNeoX cannot express: " + "; ".join(problems))


def hf_config_dict(cfg: ModelConfig, vocab_size: int, eod: int | None, pad: int | None) -> dict[str, Any]:
    """``config.json`` content for transformers' GPTNeoXConfig (both rotary spellings)."""
    check_exportable(cfg)
    return {
        "architectures": ["GPTNeoXForCausalLM"], "model_type": "gpt_neox",
        "vocab_size": vocab_size, "hidden_size": cfg.hidden_size,
        "num_hidden_layers": cfg.num_layers, "num_attention_heads": cfg.num_attention_heads,
        "intermediate_size": cfg.intermediate_size, "hidden_act": "gelu",
        "max_position_embeddings": cfg.max_position_embeddings,
        "rotary_pct": cfg.rotary_pct, "rotary_emb_base": cfg.rotary_emb_base,
        "rope_parameters": {"rope_type": "default", "rope_theta": float(cfg.rotary_emb_base),
                            "partial_rotary_factor": cfg.rotary_pct},
        "use_parallel_residual": cfg.gpt_j_residual, "tie_word_embeddings": not cfg.no_weight_tying,
        "layer_norm_eps": cfg.layernorm_epsilon, "attention_bias": True,
        "initializer_range": cfg.init_method_std, "hidden_dropout": 0.0, "attention_dropout": 0.0,
        "bos_token_id": eod, "eos_token_id": eod, "pad_token_id": pad, "use_cache": True,
    }


def model_keys_from_hf(hf: dict[str, Any], seq_length: int | None = None) -> dict[str, Any]:
    """Flat GPT-NeoX config keys (ours) from an HF GPTNeoX ``config.json``, either style."""
    if hf.get("model_type") not in (None, "gpt_neox"):
        raise UnsupportedForHF(f"model_type {hf.get('model_type')!r}: only gpt_neox models convert")
    rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
    if rope.get("rope_type", rope.get("type", "default")) not in ("default", None):
        raise UnsupportedForHF(f"rope scaling {rope.get('rope_type')!r} is not implemented")
    rotary_pct = rope.get("partial_rotary_factor", hf.get("rotary_pct", 0.25))
    base = rope.get("rope_theta", hf.get("rotary_emb_base", 10000))
    if hf.get("hidden_act", "gelu") != "gelu":
        raise UnsupportedForHF(f"hidden_act {hf['hidden_act']!r}: only gelu converts")
    if hf.get("attention_bias", True) is False:
        raise UnsupportedForHF("attention_bias: false is not representable (biases are on)")
    max_pos = hf["max_position_embeddings"]
    return {
        "num_layers": hf["num_hidden_layers"], "hidden_size": hf["hidden_size"],
        "num_attention_heads": hf["num_attention_heads"], "intermediate_size": hf["intermediate_size"],
        "seq_length": min(seq_length or max_pos, max_pos), "max_position_embeddings": max_pos,
        "pos_emb": "rotary", "rotary_pct": float(rotary_pct), "rotary_emb_base": int(base),
        "gpt_j_residual": bool(hf.get("use_parallel_residual", True)),
        "no_weight_tying": not hf.get("tie_word_embeddings", False),
        "layernorm_epsilon": float(hf.get("layer_norm_eps", 1e-5)), "norm": "layernorm",
        "activation": "gelu", "init_method_std": float(hf.get("initializer_range", 0.02)),
    }


def _pad_rows(t: torch.Tensor, rows: int) -> torch.Tensor:
    if t.shape[0] > rows:
        raise UnsupportedForHF(f"vocabulary of {t.shape[0]} rows exceeds padded_vocab_size {rows}")
    return torch.cat([t, t.new_zeros(rows - t.shape[0], *t.shape[1:])]) if t.shape[0] < rows else t


def state_dict_from_hf(hf_sd: dict[str, torch.Tensor], padded_vocab: int, tied: bool) -> dict[str, torch.Tensor]:
    """HF GPTNeoXForCausalLM weights -> our full (tp = 1) GPTModel state dict."""
    out: dict[str, torch.Tensor] = {}
    for key, value in hf_sd.items():
        if key.endswith((".attention.bias", ".attention.masked_bias", "rotary_emb.inv_freq")):
            continue  # causal-mask and rotary buffers, not weights
        if key in ("lm_head.weight", "embed_out.weight"):
            if not tied:
                out["lm_head.embed_out.weight"] = _pad_rows(value, padded_vocab)
            continue
        name = key.removeprefix("gpt_neox.")
        name = name.replace("final_layer_norm", "final_layernorm")
        if name == "embed_in.weight":
            out["embedding.word_embeddings.weight"] = _pad_rows(value, padded_vocab)
        else:
            out[name] = value
    return out


def state_dict_to_hf(sd: dict[str, torch.Tensor], vocab_size: int) -> dict[str, torch.Tensor]:
    """Our full GPTModel state dict -> GPTNeoXForCausalLM file names (padding dropped).

    The head is written as ``embed_out.weight``, the name transformers itself writes to disk
    (and that older releases read)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        if key == "embedding.word_embeddings.weight":
            out["gpt_neox.embed_in.weight"] = value[:vocab_size].contiguous()
        elif key == "lm_head.embed_out.weight":
            out["embed_out.weight"] = value[:vocab_size].contiguous()
        else:
            out["gpt_neox." + key.replace("final_layernorm", "final_layer_norm")] = value.contiguous()
    return out


def is_hf_dir(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "config.json")) and any(
        os.path.isfile(os.path.join(path, f)) for f in (SAFETENSORS, "pytorch_model.bin"))


def read_hf_dir(path: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(config.json, weights) of an HF directory; weights via safetensors or weights-only load."""
    with open(os.path.join(path, "config.json"), encoding="utf-8") as handle:
        config = json.load(handle)
    st_path = os.path.join(path, SAFETENSORS)
    if os.path.isfile(st_path):
        from safetensors.torch import load_file

        return config, load_file(st_path)
    index = os.path.join(path, SAFETENSORS + ".index.json")
    if os.path.isfile(index):
        from safetensors.torch import load_file

        with open(index, encoding="utf-8") as handle:
            files = sorted(set(json.load(handle)["weight_map"].values()))
        weights: dict[str, torch.Tensor] = {}
        for name in files:
            weights.update(load_file(os.path.join(path, name)))
        return config, weights
    bin_path = os.path.join(path, "pytorch_model.bin")
    if os.path.isfile(bin_path):
        return config, torch.load(bin_path, map_location="cpu", weights_only=True)
    raise FileNotFoundError(f"{path}: no model.safetensors or pytorch_model.bin")
