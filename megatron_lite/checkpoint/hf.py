"""Hugging Face ``GPTNeoXForCausalLM`` <-> megatron_lite: configs and weights.

Names map one to one (GPT-NeoX's layout is HF's, including the per-head ``[heads, 3, head_dim]``
rows of ``query_key_value``): ``gpt_neox.X`` <-> ``X``, except ``gpt_neox.final_layer_norm`` <->
``final_layernorm``, ``gpt_neox.embed_in`` <-> ``embedding.word_embeddings`` and the head,
``embed_out.weight`` (on disk) or ``lm_head.weight`` (transformers 5's in-memory name) <->
``lm_head.embed_out.weight``. Our embedding and head carry padding rows (``padded_vocab_size``);
they are added (zeros) on import and dropped on export.

``config.json`` comes in two styles, both read: older transformers (the Pythia checkpoints) put
``rotary_pct`` / ``rotary_emb_base`` at top level, transformers 5 writes
``rope_parameters: {rope_theta, partial_rotary_factor}``. We write both, so old and new readers
agree.

What GPTNeoX cannot express (ALiBi / learned / sinusoidal / no positions, RMSNorm, GLU
activations, grouped-query attention, MLP or norm without biases) raises ``UnsupportedForHF``
naming the option.
"""

from __future__ import annotations

import json
import os
from typing import Any

import torch

from megatron_lite.checkpoint.safe_load import safe_torch_load
from megatron_lite.checkpoint.weights import fit_vocab_rows
from megatron_lite.config.schema import ModelConfig
from megatron_lite.utils.logging import get_logger

logger = get_logger(__name__)

SAFETENSORS = "model.safetensors"
PYTORCH_BIN = "pytorch_model.bin"
_WEIGHT_FILES = (SAFETENSORS, SAFETENSORS + ".index.json", PYTORCH_BIN, PYTORCH_BIN + ".index.json")
HEAD_KEYS = ("embed_out.weight", "lm_head.weight")  # on-disk name, transformers 5 in-memory name
# Our activation <-> transformers ACT2FN name; all are exact (HF "gelu" is erf GELU, as F.gelu).
_ACT_TO_HF = {"gelu": "gelu", "relu": "relu", "silu": "silu"}
_ACT_FROM_HF = {"gelu": "gelu", "relu": "relu", "silu": "silu", "swish": "silu",
                "gelu_new": "gelu", "gelu_pytorch_tanh": "gelu"}  # the last two: tanh GeLU
_TANH_GELU_HF = ("gelu_new", "gelu_pytorch_tanh")  # our gelu with bias_gelu_fusion (GPT-NeoX's kernel)


class UnsupportedForHF(ValueError):
    """A model option (ours or in a config.json) that the other side cannot express."""


def check_exportable(cfg: ModelConfig) -> None:
    """Raise ``UnsupportedForHF`` listing every option that HF GPTNeoX cannot represent."""
    problems = []
    if cfg.pos_emb != "rotary":
        problems.append(f"pos_emb: {cfg.pos_emb} (HF GPTNeoX has rotary positions only)")
    if cfg.norm != "layernorm":
        problems.append(f"norm: {cfg.norm} (HF GPTNeoX uses LayerNorm)")
    if not cfg.use_bias_in_norms:
        problems.append("use_bias_in_norms: false (HF GPTNeoX's LayerNorms have biases)")
    if cfg.activation not in _ACT_TO_HF:
        problems.append(f"activation: {cfg.activation} (exportable: {', '.join(_ACT_TO_HF)})")
    if cfg.num_kv_heads not in (None, cfg.num_attention_heads):
        problems.append(f"num_kv_heads: {cfg.num_kv_heads} (grouped-query attention)")
    if not cfg.use_bias_in_mlp:
        problems.append("use_bias_in_mlp: false (HF GPTNeoX's MLP has biases)")
    if problems:
        raise UnsupportedForHF("Hugging Face GPTNeoX cannot express: " + "; ".join(problems))


def hf_config_dict(cfg: ModelConfig, vocab_size: int, eod: int | None, pad: int | None) -> dict[str, Any]:
    """``config.json`` content for transformers' GPTNeoXConfig (both rotary spellings)."""
    check_exportable(cfg)
    return {
        "architectures": ["GPTNeoXForCausalLM"], "model_type": "gpt_neox",
        "vocab_size": vocab_size, "hidden_size": cfg.hidden_size,
        "num_hidden_layers": cfg.num_layers, "num_attention_heads": cfg.num_attention_heads,
        "intermediate_size": cfg.mlp_inner_size,
        "hidden_act": "gelu_new" if cfg.activation == "gelu" and cfg.bias_gelu_fusion else _ACT_TO_HF[cfg.activation],
        "max_position_embeddings": cfg.max_position_embeddings,
        "rotary_pct": cfg.rotary_pct, "rotary_emb_base": cfg.rotary_emb_base,
        "rope_parameters": {"rope_type": "default", "rope_theta": float(cfg.rotary_emb_base),
                            "partial_rotary_factor": cfg.rotary_pct},
        "use_parallel_residual": cfg.gpt_j_residual, "tie_word_embeddings": not cfg.no_weight_tying,
        "layer_norm_eps": cfg.layernorm_epsilon, "attention_bias": cfg.use_bias_in_attn_linear,
        "initializer_range": cfg.init_method_std, "hidden_dropout": cfg.hidden_dropout,
        "attention_dropout": cfg.attention_dropout,
        "bos_token_id": eod, "eos_token_id": eod, "pad_token_id": pad, "use_cache": True,
    }


def _rotary_from_hf(hf: dict[str, Any]) -> tuple[float, int]:
    """(rotary_pct, rotary_emb_base) from either config.json style."""
    rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type not in ("default", None):
        raise UnsupportedForHF(f"rope_parameters.rope_type {rope_type!r}: only default rotary is implemented")
    # transformers' own defaults when a key is absent: 0.25 and 10000.
    pct = float(rope.get("partial_rotary_factor", hf.get("rotary_pct", 0.25)))
    base = float(rope.get("rope_theta", hf.get("rotary_emb_base", 10000)))
    if base != int(base):
        raise UnsupportedForHF(f"rope_theta {base}: rotary_emb_base must be an integer here")
    return pct, int(base)


def model_keys_from_hf(hf: dict[str, Any], seq_length: int | None = None) -> dict[str, Any]:
    """Flat GPT-NeoX config keys (ours) from an HF GPTNeoX ``config.json``, either style.

    ``seq_length`` defaults to (and is capped at) ``max_position_embeddings``.
    """
    if hf.get("model_type") not in (None, "gpt_neox"):
        raise UnsupportedForHF(f"model_type {hf.get('model_type')!r}: only gpt_neox (GPTNeoXForCausalLM) models convert")
    act = hf.get("hidden_act", "gelu")
    if act not in _ACT_FROM_HF:
        raise UnsupportedForHF(f"hidden_act {act!r}: convertible are {', '.join(_ACT_FROM_HF)}")
    rotary_pct, base = _rotary_from_hf(hf)
    max_pos = hf["max_position_embeddings"]
    return {
        "num_layers": hf["num_hidden_layers"], "hidden_size": hf["hidden_size"],
        "num_attention_heads": hf["num_attention_heads"],
        # HF's intermediate_size is the literal width; GPT-NeoX's key of that name is not.
        "mlp_inner_size": hf["intermediate_size"],
        "seq_length": min(seq_length or max_pos, max_pos), "max_position_embeddings": max_pos,
        "pos_emb": "rotary", "rotary_pct": rotary_pct, "rotary_emb_base": base,
        "gpt_j_residual": bool(hf.get("use_parallel_residual", True)),
        "no_weight_tying": not hf.get("tie_word_embeddings", False),
        "layernorm_epsilon": float(hf.get("layer_norm_eps", 1e-5)), "norm": "layernorm",
        "activation": _ACT_FROM_HF[act], "bias_gelu_fusion": act in _TANH_GELU_HF,
        "use_bias_in_attn_linear": bool(hf.get("attention_bias", True)),
        "use_bias_in_mlp": True, "use_bias_in_norms": True,
        "hidden_dropout": float(hf.get("hidden_dropout", 0.0)),
        "attention_dropout": float(hf.get("attention_dropout", 0.0)),
        "init_method_std": float(hf.get("initializer_range", 0.02)),
    }


def state_dict_from_hf(hf_sd: dict[str, torch.Tensor], padded_vocab: int, tied: bool) -> dict[str, torch.Tensor]:
    """HF GPTNeoXForCausalLM weights -> our full (tp = 1) GPTModel state dict.

    Accepts both head names; a tied model's head (if a file carries one) is the embedding and
    is dropped. An untied model without a head (a bare ``GPTNeoXModel``) is an error.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in hf_sd.items():
        if key.endswith((".attention.bias", ".attention.masked_bias", "rotary_emb.inv_freq")):
            continue  # causal-mask and rotary buffers of older files, not weights
        if key in HEAD_KEYS:
            if not tied:
                out["lm_head.embed_out.weight"] = value
            continue
        name = key.removeprefix("gpt_neox.").replace("final_layer_norm", "final_layernorm")
        if name == "embed_in.weight":
            out["embedding.word_embeddings.weight"] = value
        else:
            out[name] = value
    if "embedding.word_embeddings.weight" not in out:
        raise UnsupportedForHF("the weights have no gpt_neox.embed_in.weight: not a GPTNeoX model")
    if not tied and "lm_head.embed_out.weight" not in out:
        raise UnsupportedForHF("untied model (tie_word_embeddings false) without an LM head "
                               "(embed_out.weight / lm_head.weight): a bare GPTNeoXModel?")
    rows = out["embedding.word_embeddings.weight"].shape[0]
    if rows > padded_vocab:
        raise UnsupportedForHF(f"vocabulary of {rows} rows exceeds padded_vocab_size {padded_vocab}")
    return fit_vocab_rows(out, padded_vocab)


def state_dict_to_hf(sd: dict[str, torch.Tensor], vocab_size: int, head_name: str = "embed_out.weight") -> dict[str, torch.Tensor]:
    """Our full GPTModel state dict -> GPTNeoXForCausalLM names (padding rows dropped).

    ``head_name``: ``embed_out.weight`` is what transformers writes to disk (and what older
    releases read); ``lm_head.weight`` is transformers 5's module name (for ``load_state_dict``).
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        if key == "embedding.word_embeddings.weight":
            out["gpt_neox.embed_in.weight"] = value[:vocab_size].contiguous()
        elif key == "lm_head.embed_out.weight":
            out[head_name] = value[:vocab_size].contiguous()
        else:
            out["gpt_neox." + key.replace("final_layernorm", "final_layer_norm")] = value.contiguous()
    return out


def save_hf_model(cfg: ModelConfig, full: dict[str, torch.Tensor], vocab_size: int, out_dir: str,
                  eod: int | None = None, pad: int | None = None) -> None:
    """Write a ``GPTNeoXForCausalLM`` directory (config.json, model.safetensors,
    generation_config.json) with transformers' own ``save_pretrained``.

    The model is built on the meta device and the weights assigned, so no memory or time goes
    to a random init that would be overwritten.
    """
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    config = hf_config_dict(cfg, vocab_size, eod, pad)
    legacy = {k: config.pop(k) for k in ("rotary_pct", "rotary_emb_base")}
    with torch.device("meta"):
        model = GPTNeoXForCausalLM(GPTNeoXConfig(**config))
    weights = state_dict_to_hf(full, vocab_size, head_name="lm_head.weight")
    result = model.load_state_dict(weights, strict=False, assign=True)
    tied_head = ["lm_head.weight"] if not cfg.no_weight_tying else []
    if result.unexpected_keys or sorted(result.missing_keys) != tied_head:
        raise UnsupportedForHF(f"weights do not fit GPTNeoXForCausalLM: missing {result.missing_keys}, "
                               f"unexpected {result.unexpected_keys}")
    if not cfg.no_weight_tying:
        model.tie_weights()
    model.save_pretrained(out_dir, safe_serialization=True)
    # Older transformers (and other GPT-NeoX readers) look for the top-level rotary keys.
    path = os.path.join(out_dir, "config.json")
    with open(path, encoding="utf-8") as handle:
        written = json.load(handle)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump({**written, **legacy}, handle, indent=2, sort_keys=True)


def is_hf_dir(path: str) -> bool:
    """A directory with config.json and HF weights (single file or sharded)."""
    return os.path.isfile(os.path.join(path, "config.json")) and any(
        os.path.isfile(os.path.join(path, f)) for f in _WEIGHT_FILES)


def _sharded(path: str, index_name: str) -> list[str]:
    with open(os.path.join(path, index_name), encoding="utf-8") as handle:
        return [os.path.join(path, name) for name in sorted(set(json.load(handle)["weight_map"].values()))]


def _load_bin(path: str) -> dict[str, torch.Tensor]:
    # weights_only: a shared file is never unpickled with the full (code-running) unpickler.
    return safe_torch_load(path)


def read_hf_config(path: str) -> dict[str, Any]:
    """An HF directory's ``config.json``."""
    with open(os.path.join(path, "config.json"), encoding="utf-8") as handle:
        return json.load(handle)


def read_hf_dir(path: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(config.json, weights) of an HF directory; safetensors preferred, else a weights-only
    ``torch.load`` of pytorch_model.bin; sharded files (``*.index.json``) too."""
    config = read_hf_config(path)
    from safetensors.torch import load_file

    candidates = [(SAFETENSORS, load_file), (SAFETENSORS + ".index.json", load_file),
                  (PYTORCH_BIN, _load_bin), (PYTORCH_BIN + ".index.json", _load_bin)]
    for name, loader in candidates:
        if not os.path.isfile(os.path.join(path, name)):
            continue
        files = _sharded(path, name) if name.endswith(".index.json") else [os.path.join(path, name)]
        weights: dict[str, torch.Tensor] = {}
        for file in files:
            weights.update(loader(file))
        logger.info("read %d tensors from %s", len(weights), ", ".join(map(os.path.basename, files)))
        return config, weights
    raise FileNotFoundError(f"{path}: no {SAFETENSORS} or {PYTORCH_BIN}")
