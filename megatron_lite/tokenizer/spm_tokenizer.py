"""``SPMTokenizer``: a SentencePiece ``tokenizer.model`` (LLaMA's, Mistral's, or one trained with
``sentencepiece.SentencePieceTrainer``), as GPT-NeoX's ``SentencePieceTokenizer``.

The ``sentencepiece`` package is the reference implementation of the format (GPT-NeoX, LLaMA and
``transformers``' slow tokenizers all call it): using it, not a re-implementation, is what makes
the ids identical to GPT-NeoX's for any model file.

Matched (GPT-NeoX ``megatron/tokenizer/tokenizer.py``, ``SentencePieceTokenizer``):

- ``SentencePieceProcessor(model_file=vocab_file)``, so no BOS and no EOS are added;
- ``tokenize(text)`` = ``encode(text)`` (the model's normalizer applies: decoding gives the
  normalized text, e.g. runs of spaces collapsed); ``detokenize(ids)`` = ``decode(ids)``;
- ``vocab_size`` = ``get_piece_size()``; eod = the id of the piece ``<|endoftext|>``.

Where we differ, on purpose:

- a model without a ``<|endoftext|>`` piece (LLaMA's): GPT-NeoX's ``piece_to_id`` then returns
  the *unknown* id (0) as eod; here eod is the model's own end-of-sentence id (``</s>``), and a
  model with neither is a ``ValueError``;
- pad: GPT-NeoX has none; here the model's pad id when it defines one, else eod;
- ``detokenize`` drops ids that are not pieces (padding rows of the embedding) where the library
  raises ``IndexError``.
"""

from __future__ import annotations

import os
from typing import Any

from megatron_lite.tokenizer.tokenizer_types import EOD_TOKEN, TokenizerBase, _require


def library_threads() -> int:
    """Threads a batch encode may use: 1 in a preprocess_data.py worker (it sets
    ``TOKENIZERS_PARALLELISM=false`` because the worker processes already use every core)."""
    if os.environ.get("TOKENIZERS_PARALLELISM", "").lower() in ("false", "0", "off", "no"):
        return 1
    return os.cpu_count() or 1


class SPMTokenizer(TokenizerBase):
    """A SentencePiece model file (``vocab_file``); see the module docstring for what matches
    GPT-NeoX."""

    name = "SPMTokenizer"

    def __init__(self, vocab_file: str | None) -> None:
        import sentencepiece

        path = _require(vocab_file, "vocab_file", self.name, "a SentencePiece tokenizer.model")
        try:
            self._sp = sentencepiece.SentencePieceProcessor(model_file=path)
        except (RuntimeError, OSError) as exc:  # "could not parse ModelProto from ..."
            raise ValueError(f"vocab_file: {path} is not a SentencePiece model ({exc})") from None
        self.vocab_size: int = self._sp.get_piece_size()
        eod = self._sp.piece_to_id(EOD_TOKEN)
        # piece_to_id answers the unknown id for a missing piece: check that the piece is there.
        if self._sp.id_to_piece(eod) != EOD_TOKEN:
            eod = self._sp.eos_id()  # -1 when the model has no </s>
        if eod < 0:
            raise ValueError(f"vocab_file: {path} has neither a {EOD_TOKEN} piece nor an end-of-"
                             f"sentence id; SPMTokenizer uses one as end of document")
        self.eod: int = eod
        pad = self._sp.pad_id()
        self.pad: int = pad if pad >= 0 else eod

    @property
    def vocab(self) -> dict[str, int]:
        return {self._sp.id_to_piece(i): i for i in range(self.vocab_size)}

    @property
    def inv_vocab(self) -> dict[int, str]:
        return {i: self._sp.id_to_piece(i) for i in range(self.vocab_size)}

    @property
    def processor(self) -> Any:
        """The underlying ``sentencepiece.SentencePieceProcessor``."""
        return self._sp

    def token_id(self, token: str) -> int | None:
        i = self._sp.piece_to_id(token)
        return i if self._sp.id_to_piece(i) == token else None

    def tokenize(self, text: str) -> list[int]:
        return self._sp.encode(text)

    def tokenize_batch(self, texts: list[str] | str,
                       add_special_tokens: bool | None = None) -> list[list[int]]:
        """Ids of every text in one call into the C++ encoder (same ids as ``tokenize``);
        ``add_special_tokens``: accepted, nothing is added (no BOS/EOS, as GPT-NeoX)."""
        if isinstance(texts, str):
            texts = [texts]
        if not texts:
            return []
        return self._sp.encode(list(texts), num_threads=library_threads())

    def detokenize(self, ids: Any) -> str:
        return self._sp.decode([int(i) for i in ids if 0 <= int(i) < self.vocab_size])
