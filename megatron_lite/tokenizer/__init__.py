"""Tokenizers: ``build_tokenizer(cfg.tokenizer)`` for every GPT-NeoX type we support."""

from __future__ import annotations

from typing import Any

from megatron_lite.tokenizer.tokenizer_types import (
    CharLevelTokenizer,
    GPT2BPETokenizer,
    HFGPT2Tokenizer,
    HFTokenizer,
)

TOKENIZER_TYPES = ("HFTokenizer", "HFGPT2Tokenizer", "GPT2BPETokenizer", "CharLevelTokenizer")

__all__ = ["TOKENIZER_TYPES", "build_tokenizer", "build_tokenizer_from", "vocab_size_of",
           "CharLevelTokenizer", "GPT2BPETokenizer", "HFGPT2Tokenizer", "HFTokenizer"]


def build_tokenizer_from(tokenizer_type: str, vocab_file: str | None = None,
                         merge_file: str | None = None) -> Any:
    """A tokenizer of ``tokenizer_type`` from local files (never downloaded)."""
    if tokenizer_type == "CharLevelTokenizer":
        return CharLevelTokenizer()
    if tokenizer_type == "HFTokenizer":
        return HFTokenizer(vocab_file)
    if tokenizer_type == "GPT2BPETokenizer":
        return GPT2BPETokenizer(vocab_file, merge_file)
    if tokenizer_type == "HFGPT2Tokenizer":
        return HFGPT2Tokenizer(vocab_file, merge_file)
    raise ValueError(f"tokenizer_type: {tokenizer_type!r} is not one of {', '.join(TOKENIZER_TYPES)}")


def build_tokenizer(cfg: Any) -> Any:
    """From any object with ``tokenizer_type``, ``vocab_file`` and ``merge_file`` (TokenizerConfig)."""
    return build_tokenizer_from(cfg.tokenizer_type, cfg.vocab_file, cfg.merge_file)


def vocab_size_of(tokenizer_type: str, vocab_file: str | None, merge_file: str | None = None) -> int:
    """The vocabulary size including special tokens (what padded_vocab_size is derived from).

    Building the tokenizer is the one way to count exactly what it will produce (added special
    tokens included); it takes well under a second even for a 50k-entry GPT-2 vocabulary.
    """
    if tokenizer_type == "CharLevelTokenizer":
        return CharLevelTokenizer.vocab_size
    return build_tokenizer_from(tokenizer_type, vocab_file, merge_file).vocab_size
