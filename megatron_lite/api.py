"""Python API: load a model from one of our checkpoints or a Hugging Face GPTNeoX directory.

    model, tokenizer = megatron_lite.load_model("checkpoints")      # any tp/pp layout
    logits = model(tokens)                                          # [b, s] -> [b, s, vocab]
    texts = megatron_lite.generate(model, tokenizer, ["Once upon a time"], max_new_tokens=32)
"""

from __future__ import annotations

import os
from typing import Any

import torch
import yaml
from torch import nn

from megatron_lite.config import config_from_flat, pad_vocab_size
from megatron_lite.config.derived import resolve
from megatron_lite.config.schema import ModelConfig
from megatron_lite.model.gpt import GPTModel
from megatron_lite.model.hf_interop import (
    is_hf_dir,
    model_keys_from_hf,
    read_hf_dir,
    state_dict_from_hf,
)
from megatron_lite.tokenizer import build_tokenizer_from
from megatron_lite.training.checkpoint_format import (
    CONFIG_FILE,
    TOKENIZER_DIR,
    read_full_state_dict,
    read_meta,
    resolve_step_dir,
)


class CausalLM(nn.Module):
    """A GPTModel on one process whose forward returns logits over the real vocabulary."""

    def __init__(self, gpt: GPTModel, vocab_size: int) -> None:
        super().__init__()
        self.gpt, self.vocab_size = gpt, vocab_size

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.gpt(tokens, gather_logits=True)[..., : self.vocab_size]  # [b, s, vocab]


def _hf_model(path: str) -> tuple[ModelConfig, dict[str, torch.Tensor], Any, int]:
    hf_config, weights = read_hf_dir(path)
    tok_file = os.path.join(path, "tokenizer.json")
    tokenizer = build_tokenizer_from("HFTokenizer", tok_file) if os.path.isfile(tok_file) else None
    vocab = max(hf_config["vocab_size"], tokenizer.vocab_size if tokenizer else 0)
    flat = {**model_keys_from_hf(hf_config), "padded_vocab_size": pad_vocab_size(vocab, 128, 1),
            "make_vocab_size_divisible_by": 128, "tokenizer_type": "HFTokenizer"}
    cfg = resolve(config_from_flat(flat), 1).model
    full = state_dict_from_hf(weights, cfg.padded_vocab_size, tied=not cfg.no_weight_tying)
    return cfg, full, tokenizer, hf_config["vocab_size"]


def _checkpoint_model(path: str, iteration: int | None) -> tuple[ModelConfig, dict[str, torch.Tensor], Any, int]:
    step = resolve_step_dir(path, iteration)
    with open(os.path.join(step, CONFIG_FILE), encoding="utf-8") as handle:
        flat = yaml.safe_load(handle)
    cfg = config_from_flat(flat)  # the saved, already resolved values (padded vocab included)
    tokenizer = None
    tok = cfg.tokenizer
    if tok.tokenizer_type == "CharLevelTokenizer":
        tokenizer = build_tokenizer_from("CharLevelTokenizer")
    else:
        local = [os.path.join(step, TOKENIZER_DIR, os.path.basename(f)) if f else None
                 for f in (tok.vocab_file, tok.merge_file)]
        if local[0] and os.path.isfile(local[0]):
            tokenizer = build_tokenizer_from(tok.tokenizer_type, *local)
    full = read_full_state_dict(step, glu=cfg.model.activation in ("swiglu", "geglu"))
    # The vocabulary the model was made for: recorded at save/convert time (a converted HF model
    # keeps its own, possibly padded, size), else the tokenizer's.
    vocab = read_meta(step).vocab_size or (tokenizer.vocab_size if tokenizer else cfg.model.padded_vocab_size)
    return cfg.model, full, tokenizer, vocab


def load_weights(path: str, iteration: int | None = None) -> tuple[ModelConfig, dict[str, torch.Tensor], Any, int]:
    """(model config, full tp=1 state dict, tokenizer or None, real vocab size) of a checkpoint
    directory (ours, any layout) or a Hugging Face GPTNeoX directory."""
    if is_hf_dir(path):
        return _hf_model(path)
    return _checkpoint_model(path, iteration)


def load_model(path: str, device: str | torch.device = "cpu", iteration: int | None = None) -> tuple[CausalLM, Any]:
    """``(model, tokenizer)`` in eval mode on ``device``; see the module docstring."""
    cfg, full, tokenizer, vocab = load_weights(path, iteration)
    gpt = GPTModel(cfg)
    gpt.load_state_dict(full, strict=True)
    return CausalLM(gpt, vocab).to(device).eval(), tokenizer
