"""What the Hugging Face converters of every architecture share (``hf.py`` for GPTNeoX and the
dispatch, ``hf_llama.py`` for Llama / Mistral): the error type, the config.json keys every
architecture spells alike, the rotary section in either transformers style, the head and
vocabulary rows of a converted state dict, and writing a directory with transformers' own
``save_pretrained``.
"""

from __future__ import annotations

import json
import os
from typing import Any

import torch

from megatron_lite.checkpoint.weights import fit_vocab_rows
from megatron_lite.config.attention_options import ROPE_SCALING_PARAMS, canonical_rope_scaling
from megatron_lite.config.loader import ConfigError
from megatron_lite.config.schema import ModelConfig

EMBEDDING = "embedding.word_embeddings.weight"
HEAD = "lm_head.embed_out.weight"


class UnsupportedForHF(ValueError):
    """A model option (ours or in a config.json) that the other side cannot express."""


def common_keys_from_hf(hf: dict[str, Any], seq_length: int | None) -> dict[str, Any]:
    """Our flat keys for what every architecture's config.json spells alike. ``seq_length``
    defaults to (and is capped at) ``max_position_embeddings``."""
    max_pos = hf["max_position_embeddings"]
    return {
        "num_layers": hf["num_hidden_layers"], "hidden_size": hf["hidden_size"],
        "num_attention_heads": hf["num_attention_heads"],
        # HF's intermediate_size is the literal width; GPT-NeoX's key of that name is not.
        "mlp_inner_size": hf["intermediate_size"],
        "seq_length": min(seq_length or max_pos, max_pos), "max_position_embeddings": max_pos,
        "pos_emb": "rotary", "no_weight_tying": not hf.get("tie_word_embeddings", False),
        "attention_dropout": float(hf.get("attention_dropout", 0.0)),
        "init_method_std": float(hf.get("initializer_range", 0.02)),
    }


def common_hf_config(cfg: ModelConfig, vocab_size: int, eod: int | None, pad: int | None) -> dict[str, Any]:
    """The config.json keys every architecture spells alike."""
    return {
        "vocab_size": vocab_size, "hidden_size": cfg.hidden_size,
        "num_hidden_layers": cfg.num_layers, "num_attention_heads": cfg.num_attention_heads,
        "intermediate_size": cfg.mlp_inner_size, "max_position_embeddings": cfg.max_position_embeddings,
        "tie_word_embeddings": not cfg.no_weight_tying, "initializer_range": cfg.init_method_std,
        "attention_dropout": cfg.attention_dropout,
        "bos_token_id": eod, "eos_token_id": eod, "pad_token_id": pad, "use_cache": True,
    }


def rope_from_hf(hf: dict[str, Any], default_pct: float) -> tuple[float, int, dict[str, Any] | None]:
    """(rotary_pct, rotary_emb_base, rope_scaling or None) from either config.json style:
    transformers 5's ``rope_parameters``, or the older ``rope_scaling`` with top-level
    ``rope_theta`` (Llama, Mistral) / ``rotary_pct`` and ``rotary_emb_base`` (GPTNeoX).
    ``default_pct``: transformers' default when nothing says (GPTNeoX 0.25, Llama 1.0)."""
    rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type not in ("default", *ROPE_SCALING_PARAMS):
        raise UnsupportedForHF(f"rope_type {rope_type!r}: implemented are default, {', '.join(ROPE_SCALING_PARAMS)}")
    pct = float(rope.get("partial_rotary_factor", hf.get("partial_rotary_factor", hf.get("rotary_pct", default_pct))))
    base = float(rope.get("rope_theta", hf.get("rope_theta", hf.get("rotary_emb_base", 10000))))
    if base != int(base):
        raise UnsupportedForHF(f"rope_theta {base}: rotary_emb_base must be an integer here")
    if rope_type == "default":
        return pct, int(base), None
    params = {key: rope[key] for key in ROPE_SCALING_PARAMS[rope_type] if key in rope}
    if rope_type == "llama3":
        # transformers' order: a top-level original_max_position_embeddings, then the rope
        # section's, then max_position_embeddings (configuration_utils' standardize_rope_params).
        params["original_max_position_embeddings"] = hf.get(
            "original_max_position_embeddings",
            params.get("original_max_position_embeddings", hf["max_position_embeddings"]))
    try:
        return pct, int(base), canonical_rope_scaling({"type": rope_type, **params}, "rotary")
    except ConfigError as exc:
        raise UnsupportedForHF(str(exc)) from exc


def rope_parameters(cfg: ModelConfig, partial: bool) -> dict[str, Any]:
    """transformers 5's ``rope_parameters`` for our rotary settings (``partial``: with
    ``partial_rotary_factor``, which only GPTNeoX has)."""
    scaling = dict(cfg.rope_scaling or {})
    params: dict[str, Any] = {"rope_type": scaling.pop("type", "default"), "rope_theta": float(cfg.rotary_emb_base)}
    if partial:
        params["partial_rotary_factor"] = cfg.rotary_pct
    return {**params, **scaling}


def vocab_rows_and_head(out: dict[str, torch.Tensor], padded_vocab: int, tied: bool, model: str) -> dict[str, torch.Tensor]:
    """The tail of every import: the embedding must be there, an untied model's head too (a
    bare ``...Model`` has none), no more rows than ``padded_vocab``; rows padded with zeros."""
    if EMBEDDING not in out:
        raise UnsupportedForHF(f"the weights have no input embedding: not a {model} model")
    if not tied and HEAD not in out:
        raise UnsupportedForHF(f"untied model (tie_word_embeddings false) without an LM head: a bare {model}Model?")
    rows = out[EMBEDDING].shape[0]
    if rows > padded_vocab:
        raise UnsupportedForHF(f"vocabulary of {rows} rows exceeds padded_vocab_size {padded_vocab}")
    return fit_vocab_rows(out, padded_vocab)


def save_with_transformers(model_cls: type, config: Any, weights: dict[str, torch.Tensor], tied: bool,
                           out_dir: str, legacy: dict[str, Any]) -> None:
    """``model_cls(config)`` built on the meta device (no time or memory spent on a random init
    that would be overwritten), ``weights`` assigned, saved with ``save_pretrained``; then the
    ``legacy`` keys (spellings older transformers read) added to config.json."""
    with torch.device("meta"):
        model = model_cls(config)
    result = model.load_state_dict(weights, strict=False, assign=True)
    tied_head = ["lm_head.weight"] if tied else []
    if result.unexpected_keys or sorted(result.missing_keys) != tied_head:
        raise UnsupportedForHF(f"weights do not fit {model_cls.__name__}: missing {result.missing_keys}, "
                               f"unexpected {result.unexpected_keys}")
    if tied:
        model.tie_weights()
    model.save_pretrained(out_dir, safe_serialization=True)
    path = os.path.join(out_dir, "config.json")
    with open(path, encoding="utf-8") as handle:
        written = json.load(handle)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump({**written, **legacy}, handle, indent=2, sort_keys=True)
