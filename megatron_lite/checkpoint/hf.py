"""Hugging Face ``GPTNeoXForCausalLM`` <-> megatron_lite: configs and weights; and the one
dispatch by architecture (``model_type`` on import, ``export_architecture`` on export) to
``hf_llama.py`` for ``LlamaForCausalLM`` / ``MistralForCausalLM``.

Names map one to one (GPT-NeoX's layout is HF's, including the per-head ``[heads, 3, head_dim]``
rows of ``query_key_value``): ``gpt_neox.X`` <-> ``X``, except ``gpt_neox.final_layer_norm`` <->
``final_layernorm``, ``gpt_neox.embed_in`` <-> ``embedding.word_embeddings`` and the head,
``embed_out.weight`` (on disk) or ``lm_head.weight`` (transformers 5's in-memory name) <->
``lm_head.embed_out.weight``. Our embedding and head carry padding rows (``padded_vocab_size``);
they are added (zeros) on import and dropped on export.

``config.json`` comes in two styles, both read: older transformers (the Pythia checkpoints) put
``rotary_pct`` / ``rotary_emb_base`` at top level, transformers 5 writes
``rope_parameters: {rope_theta, partial_rotary_factor}``. We write both, so old and new readers
agree. Rotary scaling (``rope_scaling``: linear, llama3) converts both ways.

What GPTNeoX cannot express (ALiBi / learned / sinusoidal / no positions, RMSNorm, GLU
activations, grouped-query attention, MLP or norm without biases) raises ``UnsupportedForHF``
naming the option.
"""

from __future__ import annotations

import json
import os
from typing import Any

import torch

from megatron_lite.checkpoint.hf_common import (
    HEAD,
    UnsupportedForHF,
    common_hf_config,
    common_keys_from_hf,
    rope_from_hf,
    rope_parameters,
    save_with_transformers,
    vocab_rows_and_head,
)
from megatron_lite.checkpoint.hf_llama import ARCHITECTURES as LLAMA_ARCHITECTURES
from megatron_lite.checkpoint.hf_llama import (
    llama_problems,
    model_keys_from_llama,
    save_llama_model,
    state_dict_from_llama,
)
from megatron_lite.checkpoint.safe_load import safe_torch_load
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

# model_type -> the architecture it converts to and from.
MODEL_TYPES = {"gpt_neox": "GPTNeoXForCausalLM", **LLAMA_ARCHITECTURES}
ARCHITECTURES = tuple(MODEL_TYPES.values())


def _neox_problems(cfg: ModelConfig) -> list[str]:
    """What HF GPTNeoX cannot represent of ``cfg``."""
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
    if cfg.sliding_window_width is not None:
        problems.append(f"sliding_window_width: {cfg.sliding_window_width} (HF GPTNeoX attends to the whole context)")
    return problems


def _problems(cfg: ModelConfig, architecture: str) -> list[str]:
    return _neox_problems(cfg) if architecture == "GPTNeoXForCausalLM" else llama_problems(cfg, architecture)


def check_exportable(cfg: ModelConfig, architecture: str = "GPTNeoXForCausalLM") -> None:
    """Raise ``UnsupportedForHF`` listing every option that ``architecture`` cannot represent."""
    problems = _problems(cfg, architecture)
    if problems:
        raise UnsupportedForHF(f"Hugging Face {architecture} cannot express: " + "; ".join(problems))


def export_architecture(cfg: ModelConfig, requested: str | None = None) -> str:
    """The architecture to export ``cfg`` as: ``requested`` if it can express the model, else
    the first of GPTNeoX, Llama, Mistral that can (Mistral only for a sliding window, which is
    all Mistral adds to Llama); none: an error naming, per architecture, the options it lacks."""
    if requested is not None:
        if requested not in ARCHITECTURES:
            raise UnsupportedForHF(f"architecture {requested!r}: choose one of {', '.join(ARCHITECTURES)}")
        check_exportable(cfg, requested)
        return requested
    found = {arch: _problems(cfg, arch) for arch in ARCHITECTURES}
    fitting = [arch for arch, problems in found.items() if not problems]
    if fitting:
        return fitting[0]
    raise UnsupportedForHF("no Hugging Face architecture expresses this model: " + "; ".join(
        f"{arch} lacks {', '.join(problems)}" for arch, problems in found.items()))


def hf_config_dict(cfg: ModelConfig, vocab_size: int, eod: int | None, pad: int | None) -> dict[str, Any]:
    """``config.json`` content for transformers' GPTNeoXConfig (both rotary spellings)."""
    check_exportable(cfg)
    return {
        **common_hf_config(cfg, vocab_size, eod, pad),
        "architectures": ["GPTNeoXForCausalLM"], "model_type": "gpt_neox",
        "hidden_act": "gelu_new" if cfg.activation == "gelu" and cfg.bias_gelu_fusion else _ACT_TO_HF[cfg.activation],
        "rotary_pct": cfg.rotary_pct, "rotary_emb_base": cfg.rotary_emb_base,
        "rope_parameters": rope_parameters(cfg, partial=True),
        "use_parallel_residual": cfg.gpt_j_residual,
        "layer_norm_eps": cfg.layernorm_epsilon, "attention_bias": cfg.use_bias_in_attn_linear,
        "hidden_dropout": cfg.hidden_dropout,
    }


def model_keys_from_hf(hf: dict[str, Any], seq_length: int | None = None) -> dict[str, Any]:
    """Flat GPT-NeoX config keys (ours) from an HF ``config.json`` (either transformers style)
    of a supported ``model_type``; any other is an error naming it and the supported ones.

    ``seq_length`` defaults to (and is capped at) ``max_position_embeddings``.
    """
    classifiers = [a for a in hf.get("architectures") or [] if a.endswith("ForSequenceClassification")]
    if classifiers:  # its score head would otherwise surface as a missing LM head, or be dropped
        raise UnsupportedForHF(f"{classifiers[0]} is a sequence-classification (reward) model: only language "
                               "models import (tools/convert_to_hf.py exports reward models one way)")
    model_type = hf.get("model_type", "gpt_neox")  # very old GPTNeoX files carry none
    if model_type in LLAMA_ARCHITECTURES:
        return model_keys_from_llama(hf, seq_length)
    if model_type != "gpt_neox":
        supported = ", ".join(f"{t} ({a})" for t, a in MODEL_TYPES.items())
        raise UnsupportedForHF(f"model_type {model_type!r} ({', '.join(hf.get('architectures') or [])}) "
                               f"is not supported: supported model_types are {supported}")
    return _neox_keys_from_hf(hf, seq_length)


def _neox_keys_from_hf(hf: dict[str, Any], seq_length: int | None) -> dict[str, Any]:
    act = hf.get("hidden_act", "gelu")
    if act not in _ACT_FROM_HF:
        raise UnsupportedForHF(f"hidden_act {act!r}: convertible are {', '.join(_ACT_FROM_HF)}")
    rotary_pct, base, scaling = rope_from_hf(hf, default_pct=0.25)  # transformers' default
    return {
        **common_keys_from_hf(hf, seq_length),
        "rotary_pct": rotary_pct, "rotary_emb_base": base, "rope_scaling": scaling,
        "gpt_j_residual": bool(hf.get("use_parallel_residual", True)),
        "layernorm_epsilon": float(hf.get("layer_norm_eps", 1e-5)), "norm": "layernorm",
        "activation": _ACT_FROM_HF[act], "bias_gelu_fusion": act in _TANH_GELU_HF,
        "use_bias_in_attn_linear": bool(hf.get("attention_bias", True)),
        "use_bias_in_mlp": True, "use_bias_in_norms": True,
        "hidden_dropout": float(hf.get("hidden_dropout", 0.0)),
    }


def weights_from_hf(hf_config: dict[str, Any], hf_sd: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """An HF directory's weights -> our full (tp = 1) state dict, by its ``model_type``
    (``cfg``: the model config ``model_keys_from_hf`` gave, resolved)."""
    if hf_config.get("model_type") in LLAMA_ARCHITECTURES:
        return state_dict_from_llama(hf_sd, cfg, hf_config["vocab_size"])
    return state_dict_from_hf(hf_sd, cfg.padded_vocab_size, tied=not cfg.no_weight_tying)


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
                out[HEAD] = value
            continue
        name = key.removeprefix("gpt_neox.").replace("final_layer_norm", "final_layernorm")
        if name == "embed_in.weight":
            out["embedding.word_embeddings.weight"] = value
        else:
            out[name] = value
    return vocab_rows_and_head(out, padded_vocab, tied, "GPTNeoX")


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
                  eod: int | None = None, pad: int | None = None,
                  architecture: str = "GPTNeoXForCausalLM") -> None:
    """Write an ``architecture`` directory (config.json, model.safetensors,
    generation_config.json) with transformers' own ``save_pretrained``."""
    if architecture != "GPTNeoXForCausalLM":
        check_exportable(cfg, architecture)
        save_llama_model(cfg, full, vocab_size, out_dir, eod, pad, architecture)
        return
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    config = hf_config_dict(cfg, vocab_size, eod, pad)
    # Older transformers (and other GPT-NeoX readers) look for the top-level rotary keys.
    legacy = {k: config.pop(k) for k in ("rotary_pct", "rotary_emb_base")}
    save_with_transformers(GPTNeoXForCausalLM, GPTNeoXConfig(**config),
                           state_dict_to_hf(full, vocab_size, head_name="lm_head.weight"),
                           not cfg.no_weight_tying, out_dir, legacy)


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
