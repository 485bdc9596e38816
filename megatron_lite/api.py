"""Python API: load a model from one of our checkpoints or a Hugging Face GPTNeoX directory.

    model, tokenizer = megatron_lite.load_model("checkpoints")      # any tp/pp layout
    logits = model(tokens)                                          # [b, s] -> [b, s, vocab]
    texts = megatron_lite.generate(model, tokenizer, ["Once upon a time"], max_new_tokens=32)

Everything is merged into one process (tensor-parallel shards and pipeline layer files become
one tp = 1 state dict), so no ``torch.distributed`` is needed.
"""

from __future__ import annotations

import os
from typing import Any

import torch
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
from megatron_lite.model.kv_cache import KVCache
from megatron_lite.tokenizer import build_tokenizer_from
from megatron_lite.training.checkpoint_format import (
    TOKENIZER_DIR,
    CheckpointError,
    read_full_state_dict,
    read_meta,
    read_step_config,
    resolve_step_dir,
)
from megatron_lite.utils.logging import get_logger

logger = get_logger(__name__)

Loaded = tuple[ModelConfig, dict[str, torch.Tensor], Any, int]


class CausalLM(nn.Module):
    """A GPTModel on one process whose forward returns logits over the real vocabulary.

    ``self.gpt`` is the inner ``GPTModel`` (its ``new_kv_cache`` / ``cfg`` serve generation);
    ``self.vocab_size`` the real vocabulary (the embedding's padding rows are cut off).
    """

    def __init__(self, gpt: GPTModel, vocab_size: int) -> None:
        super().__init__()
        self.gpt, self.vocab_size = gpt, vocab_size

    def forward(self, tokens: torch.Tensor, position_ids: torch.Tensor | None = None,
                cache: KVCache | None = None, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """tokens [b, s] LongTensor -> logits [b, s, vocab_size]."""
        logits = self.gpt(tokens, position_ids=position_ids, cache=cache,
                          attention_mask=attention_mask, gather_logits=True)
        return logits[..., : self.vocab_size]

    def new_kv_cache(self, batch_size: int, max_len: int) -> KVCache:
        """An empty KV cache for incremental decoding (see ``GPTModel.new_kv_cache``)."""
        return self.gpt.new_kv_cache(batch_size, max_len)


def _hf_tokenizer(path: str) -> Any:
    tok_file = os.path.join(path, "tokenizer.json")
    if not os.path.isfile(tok_file):
        logger.info("%s has no tokenizer.json: no tokenizer returned", path)
        return None
    try:
        return build_tokenizer_from("HFTokenizer", tok_file)
    except ValueError as exc:  # e.g. no <|endoftext|>: the model itself is still usable
        logger.warning("tokenizer of %s not loaded: %s", path, exc)
        return None


def _hf_model(path: str) -> Loaded:
    hf_config, weights = read_hf_dir(path)
    tokenizer = _hf_tokenizer(path)
    vocab = hf_config["vocab_size"]
    rows = max(vocab, tokenizer.vocab_size if tokenizer else 0)
    flat = {**model_keys_from_hf(hf_config), "padded_vocab_size": pad_vocab_size(rows, 128, 1),
            "make_vocab_size_divisible_by": 128, "tokenizer_type": "HFTokenizer"}
    cfg = resolve(config_from_flat(flat), 1).model
    full = state_dict_from_hf(weights, cfg.padded_vocab_size, tied=not cfg.no_weight_tying)
    return cfg, full, tokenizer, vocab


def _checkpoint_tokenizer(step: str, flat: dict[str, Any]) -> Any:
    """The tokenizer saved with the checkpoint (its tokenizer/ copies), else the files the
    config names if they still exist, else None."""
    kind = flat.get("tokenizer_type", "GPT2BPETokenizer")
    if kind == "CharLevelTokenizer":
        return build_tokenizer_from(kind)
    files = [flat.get("vocab_file"), flat.get("merge_file")]
    local = [os.path.join(step, TOKENIZER_DIR, os.path.basename(f)) if f else None for f in files]
    for candidate in (local, files):
        if candidate[0] and os.path.isfile(candidate[0]):
            return build_tokenizer_from(kind, *candidate)
    logger.warning("%s carries no tokenizer files (%s): no tokenizer returned", step, kind)
    return None


def _checkpoint_model(path: str, iteration: int | None) -> Loaded:
    step = resolve_step_dir(path, iteration)
    flat = read_step_config(step)
    cfg = config_from_flat(flat)  # the saved, already resolved values (padded vocab included)
    tokenizer = _checkpoint_tokenizer(step, flat)
    full = read_full_state_dict(step, glu=cfg.model.activation in ("swiglu", "geglu"))
    # The vocabulary the model was made for: recorded at save/convert time (a converted HF model
    # keeps its own, possibly padded, size), else the tokenizer's.
    vocab = read_meta(step).vocab_size or (tokenizer.vocab_size if tokenizer else cfg.model.padded_vocab_size)
    return cfg.model, full, tokenizer, vocab


def load_weights(path: str, iteration: int | None = None) -> Loaded:
    """(model config, full tp=1 state dict, tokenizer or None, real vocab size) of a checkpoint
    directory (ours, any layout) or a Hugging Face GPTNeoX directory."""
    if is_hf_dir(path):
        return _hf_model(path)
    return _checkpoint_model(path, iteration)


def check_weights_fit(model: nn.Module, full: dict[str, torch.Tensor], source: str) -> None:
    """Every parameter present with the right shape, nothing extra; else a CheckpointError
    naming ``source`` (a missing tensor-parallel shard shows up here as a wrong shape)."""
    own = model.state_dict()
    missing = sorted(set(own) - set(full))
    extra = sorted(set(full) - set(own))
    wrong = [f"{k} {tuple(full[k].shape)} != {tuple(v.shape)}" for k, v in own.items()
             if k in full and full[k].shape != v.shape]
    problems = [f"{label}: {', '.join(items[:4])}" + (" ..." if len(items) > 4 else "")
                for label, items in (("missing", missing), ("unexpected", extra), ("shape", wrong)) if items]
    if problems:
        raise CheckpointError(f"{source}: weights do not fit the model ({'; '.join(problems)})")


def load_model(path: str, device: str | torch.device = "cpu", iteration: int | None = None) -> tuple[CausalLM, Any]:
    """``(model, tokenizer)``: the model in eval mode on ``device``, tokenizer or None.

    ``path``: one of our checkpoint directories (``save``/``load``, or a ``global_step<N>``
    directory; ``iteration`` picks a step, default ``latest``) or a Hugging Face GPTNeoX
    directory (config.json + model.safetensors / pytorch_model.bin).
    """
    if not os.path.isdir(path):
        raise CheckpointError(f"model directory not found: {path}")
    cfg, full, tokenizer, vocab = load_weights(path, iteration)
    gpt = GPTModel(cfg)
    check_weights_fit(gpt, full, path)
    gpt.load_state_dict(full, strict=True)
    logger.info("loaded %s: %d layers, hidden %d, vocab %d", path, cfg.num_layers, cfg.hidden_size, vocab)
    return CausalLM(gpt, vocab).to(device).eval(), tokenizer
