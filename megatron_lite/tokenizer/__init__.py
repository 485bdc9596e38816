"""Tokenizers: ``build_tokenizer(cfg.tokenizer)`` for every GPT-NeoX type we support.

Type names match GPT-NeoX's ``tokenizer_type`` values, case-insensitively (as GPT-NeoX).
"""

from __future__ import annotations

import json
from typing import Any

from megatron_lite.tokenizer.spm_tokenizer import SPMTokenizer
from megatron_lite.tokenizer.tiktoken_tokenizer import TiktokenTokenizer
from megatron_lite.tokenizer.tokenizer_types import (
    EOD_TOKEN,
    PAD_TOKEN,
    CharLevelTokenizer,
    GPT2BPETokenizer,
    HFGPT2Tokenizer,
    HFTokenizer,
    _require,
    gpt2_files,
)

# Every GPT-NeoX tokenizer_type. SPMTokenizer and TiktokenTokenizer import their libraries
# (sentencepiece, tiktoken) only when built.
TOKENIZER_TYPES = ("HFTokenizer", "HFGPT2Tokenizer", "GPT2BPETokenizer", "CharLevelTokenizer",
                   "SPMTokenizer", "TiktokenTokenizer")

__all__ = ["TOKENIZER_TYPES", "build_tokenizer", "build_tokenizer_from", "canonical_type", "tokenizer_type_arg",
           "vocab_size_of", "CharLevelTokenizer", "GPT2BPETokenizer", "HFGPT2Tokenizer",
           "HFTokenizer", "SPMTokenizer", "TiktokenTokenizer", "EOD_TOKEN", "PAD_TOKEN"]


def canonical_type(tokenizer_type: str | None) -> str:
    """GPT-NeoX's spelling of ``tokenizer_type`` (any case), or a ``ValueError`` naming it."""
    for known in TOKENIZER_TYPES:
        if tokenizer_type and tokenizer_type.lower() == known.lower():
            return known
    raise ValueError(f"tokenizer_type: {tokenizer_type!r} is not one of {', '.join(TOKENIZER_TYPES)}")


def build_tokenizer_from(tokenizer_type: str, vocab_file: str | None = None,
                         merge_file: str | None = None) -> Any:
    """A tokenizer of ``tokenizer_type`` from local files (never downloaded).

    Raises ``ValueError`` for an unknown type, a missing setting or a file that does not parse,
    ``FileNotFoundError`` for a file that does not exist; both name the type or the file.
    """
    kind = canonical_type(tokenizer_type)
    if kind == "CharLevelTokenizer":
        return CharLevelTokenizer()
    if kind == "SPMTokenizer":
        return SPMTokenizer(vocab_file)
    if kind == "TiktokenTokenizer":
        return TiktokenTokenizer(vocab_file)
    if kind == "HFTokenizer":
        return HFTokenizer(vocab_file)
    if kind == "GPT2BPETokenizer":
        return GPT2BPETokenizer(vocab_file, merge_file)
    return HFGPT2Tokenizer(vocab_file, merge_file)


def build_tokenizer(cfg: Any) -> Any:
    """From any object with ``tokenizer_type``, ``vocab_file`` and ``merge_file`` (TokenizerConfig)."""
    return build_tokenizer_from(cfg.tokenizer_type, getattr(cfg, "vocab_file", None),
                                getattr(cfg, "merge_file", None))


def vocab_size_of(tokenizer_type: str, vocab_file: str | None, merge_file: str | None = None) -> int:
    """The tokenizer's ``vocab_size`` (special tokens included), which ``padded_vocab_size`` is
    derived from, read from the JSON files without building the tokenizer (SPMTokenizer and
    TiktokenTokenizer: built, as only their libraries read those files).

    Equal to ``build_tokenizer_from(...).vocab_size``: the number of distinct tokens in the
    model's vocabulary and the added tokens (``tokenizers``' ``get_vocab_size()``).
    """
    kind = canonical_type(tokenizer_type)
    if kind == "CharLevelTokenizer":
        return CharLevelTokenizer.vocab_size
    if kind in ("SPMTokenizer", "TiktokenTokenizer"):  # binary/rank files: the library reads them
        return build_tokenizer_from(kind, vocab_file).vocab_size
    if kind == "HFTokenizer":
        vocab_file = _require(vocab_file, "vocab_file", kind, "a tokenizers JSON file")
        with open(vocab_file, encoding="utf-8") as handle:
            data = json.load(handle)
        vocab = (data.get("model") or {}).get("vocab")
        if vocab is None:  # a model kind without an explicit vocabulary: ask the library
            return build_tokenizer_from(kind, vocab_file).vocab_size
        # BPE / WordPiece / WordLevel store {token: id}; Unigram a list of [token, score].
        tokens = set(vocab) if isinstance(vocab, dict) else {entry[0] for entry in vocab}
        tokens.update(added["content"] for added in data.get("added_tokens") or [])
        return len(tokens)
    vocab_path, _ = gpt2_files(kind, vocab_file, merge_file)
    with open(vocab_path, encoding="utf-8") as handle:
        tokens = set(json.load(handle))
    tokens.add(EOD_TOKEN)  # added as a special token unless already there
    if kind == "HFGPT2Tokenizer":
        tokens.add(PAD_TOKEN)
    return len(tokens)


def tokenizer_type_arg(value: str) -> str:
    """An argparse ``type=`` for ``--tokenizer-type``: GPT-NeoX's spelling, or argparse's one-line
    error naming the types (shared by the data tools)."""
    import argparse

    try:
        return canonical_type(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
