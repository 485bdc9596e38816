"""The tokenizer types of GPT-NeoX, on the ``tokenizers`` library (nothing is ever downloaded).

Every tokenizer has ``name``, ``vocab_size``, ``eod``/``eod_id`` (end of document),
``pad``/``pad_id``, ``tokenize(text)``, ``tokenize_batch(texts)`` (one call into the Rust batch
encoder) and ``detokenize(ids)``. Ids, eod and pad follow GPT-NeoX's
``megatron/tokenizer/tokenizer.py`` so that data preprocessed by either is the same:

- ``HFTokenizer``: ``encode(text).ids`` (the file's post-processor applies, as in GPT-NeoX),
  decode skips special tokens; eod = ``<|endoftext|>`` (else ``<|end_of_text|>``, ``</s>`` or
  ``<eos>``, the first the file has), pad = ``<|padding|>`` (eod when absent).
- ``GPT2BPETokenizer``: GPT-2 byte-level BPE from ``vocab.json`` + ``merges.txt``; eod =
  ``<|endoftext|>`` (50256 for GPT-2's files); no pad token (pad = eod).
- ``HFGPT2Tokenizer``: the same files plus an added ``<|padding|>`` token (GPT-NeoX adds it).
- ``CharLevelTokenizer``: UTF-8 bytes, vocabulary 512, eod 0, pad 1.
"""

from __future__ import annotations

import os
from typing import Any

EOD_TOKEN = "<|endoftext|>"
EOD_TOKENS = (EOD_TOKEN, "<|end_of_text|>", "</s>", "<eos>")  # GPT-NeoX/Pythia, Llama 3, Llama 2/Mistral, Gemma
PAD_TOKEN = "<|padding|>"


def _require(path: str | None, key: str, kind: str, what: str) -> str:
    """``path`` if it is an existing file, else an error naming the key, the file and the type."""
    if not path:
        raise ValueError(f"{kind} needs {key} ({what}); no tokenizer is ever downloaded")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{key}: {path} not found ({kind} needs {what})")
    return path


def gpt2_files(kind: str, vocab_file: str | None, merge_file: str | None) -> tuple[str, str]:
    """``(vocab.json, merges.txt)``; ``vocab_file`` may also be a directory holding both (the
    form GPT-NeoX's HFGPT2Tokenizer takes)."""
    if vocab_file and os.path.isdir(vocab_file):
        merge_file = merge_file or os.path.join(vocab_file, "merges.txt")
        vocab_file = os.path.join(vocab_file, "vocab.json")
    return (_require(vocab_file, "vocab_file", kind, "a GPT-2 vocab.json"),
            _require(merge_file, "merge_file", kind, "a GPT-2 merges.txt"))


class TokenizerBase:
    """What every tokenizer type exposes besides tokenize/detokenize: ``eod`` and ``pad`` ids,
    under GPT-NeoX's names too (``eod_id``, ``pad_id``)."""

    eod: int
    pad: int

    @property
    def eod_id(self) -> int:
        return self.eod

    @property
    def pad_id(self) -> int:
        return self.pad


class _RustTokenizer(TokenizerBase):
    """Shared behaviour of the ``tokenizers``-backed types."""

    name = "abstract"
    # GPT-NeoX calls encode()/decode() with the library defaults for HFTokenizer (post-processor
    # on, special tokens skipped when decoding) and GPT-2 semantics for the GPT-2 types.
    _add_special_tokens = False
    _skip_special_tokens = False

    def __init__(self, tokenizer: Any) -> None:  # a tokenizers.Tokenizer
        self._tok = tokenizer
        self.eod: int = 0
        self.pad: int = 0

    @property
    def vocab_size(self) -> int:
        """Distinct tokens, added ones included (GPT-NeoX's ``get_vocab_size()``)."""
        return self._tok.get_vocab_size(with_added_tokens=True)

    @property
    def vocab(self) -> dict[str, int]:
        return self._tok.get_vocab(with_added_tokens=True)

    @property
    def inv_vocab(self) -> dict[int, str]:
        return {i: t for t, i in self.vocab.items()}

    @property
    def backend(self) -> Any:
        """The underlying ``tokenizers.Tokenizer``."""
        return self._tok

    def token_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    def tokenize(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=self._add_special_tokens).ids

    def tokenize_batch(self, texts: list[str] | str,
                       add_special_tokens: bool | None = None) -> list[list[int]]:
        """Ids of every text, in one call into the Rust encoder (its thread pool unless
        ``TOKENIZERS_PARALLELISM=false``); same ids as ``tokenize`` one by one.

        ``add_special_tokens=False`` skips the file's post-processor (a BOS it would add, say):
        supervised data tokenizes a document in pieces and wants such tokens once, not per piece.
        """
        if isinstance(texts, str):
            texts = [texts]
        special = self._add_special_tokens if add_special_tokens is None else add_special_tokens
        # encode_batch_fast skips the character offsets (1.5x faster here); same ids.
        encode = getattr(self._tok, "encode_batch_fast", self._tok.encode_batch)
        return [enc.ids for enc in encode(list(texts), add_special_tokens=special)]

    def detokenize(self, ids: Any) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=self._skip_special_tokens)


class HFTokenizer(_RustTokenizer):
    """A ``tokenizers`` JSON file (GPT-NeoX-20B's, Pythia's, or one from train_tokenizer.py)."""

    name = "HFTokenizer"
    _add_special_tokens = True
    _skip_special_tokens = True

    def __init__(self, vocab_file: str | None) -> None:
        from tokenizers import Tokenizer

        path = _require(vocab_file, "vocab_file", self.name, "a tokenizers JSON file")
        try:
            tok = Tokenizer.from_file(path)
        except Exception as exc:  # the Rust side raises a bare Exception
            raise ValueError(f"vocab_file: {path} is not a tokenizers JSON file ({exc})") from None
        super().__init__(tok)
        # GPT-NeoX takes <|endoftext|> (and has no eod without it). Llama 3's, Llama 2's and
        # Mistral's tokenizer.json files end documents with their own token: the first of these
        # the file has is the eod, so those models' files preprocess and generate as they end text.
        eod = next((i for i in map(self.token_id, EOD_TOKENS) if i is not None), None)
        if eod is None:
            raise ValueError(f"vocab_file: {path} has none of the end-of-document tokens "
                             f"{', '.join(EOD_TOKENS)}; HFTokenizer uses the first it has "
                             f"(tools/train_tokenizer.py adds {EOD_TOKEN})")
        self.eod = eod
        pad = self.token_id(PAD_TOKEN)
        self.pad = pad if pad is not None else eod


class GPT2BPETokenizer(_RustTokenizer):
    """GPT-2 ``vocab.json`` + ``merges.txt``: byte-level BPE with GPT-2's pre-tokenizer regex."""

    name = "GPT2BPETokenizer"

    def __init__(self, vocab_file: str | None, merge_file: str | None, add_padding: bool = False) -> None:
        from tokenizers import Tokenizer, decoders, pre_tokenizers
        from tokenizers.models import BPE

        vocab_file, merge_file = gpt2_files(self.name, vocab_file, merge_file)
        try:
            tok = Tokenizer(BPE.from_file(vocab_file, merge_file))
        except Exception as exc:
            raise ValueError(f"{vocab_file} / {merge_file}: not GPT-2 BPE files ({exc})") from None
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        # Already in GPT-2's vocab.json (id 50256): then this only marks it special.
        tok.add_special_tokens([EOD_TOKEN])
        if add_padding:
            tok.add_special_tokens([PAD_TOKEN])
        super().__init__(tok)
        self.eod = self.token_id(EOD_TOKEN)
        self.pad = self.token_id(PAD_TOKEN) if add_padding else self.eod


class HFGPT2Tokenizer(GPT2BPETokenizer):
    """GPT-2 files with a ``<|padding|>`` token added, as GPT-NeoX's HFGPT2Tokenizer
    (``vocab_file`` may be the directory holding vocab.json and merges.txt)."""

    name = "HFGPT2Tokenizer"

    def __init__(self, vocab_file: str | None, merge_file: str | None = None) -> None:
        super().__init__(vocab_file, merge_file, add_padding=True)


class CharLevelTokenizer:
    """GPT-NeoX's byte-level tokenizer: token = UTF-8 byte, vocabulary 512, eod 0, pad 1.

    ``tokenize`` gives GPT-NeoX's ids (``np.fromstring(text, np.uint8)``: the UTF-8 bytes).
    ``detokenize`` differs on purpose: GPT-NeoX maps each id to ``chr(max(32, id))``, which turns
    newlines into spaces and non-ASCII text into mojibake; here the bytes are decoded as UTF-8,
    so any text round-trips. Ids 0 (eod) and >= 256 (never produced by ``tokenize``) are dropped.
    """

    name = "CharLevelTokenizer"
    vocab_size = 512
    eod = eod_id = 0
    pad = pad_id = 1

    def tokenize(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def tokenize_batch(self, texts: list[str] | str,
                       add_special_tokens: bool | None = None) -> list[list[int]]:
        """UTF-8 bytes of every text (``add_special_tokens``: accepted, nothing to add)."""
        if isinstance(texts, str):
            texts = [texts]
        return [list(t.encode("utf-8")) for t in texts]

    def detokenize(self, ids: Any) -> str:
        return bytes(int(i) for i in ids if 0 < int(i) < 256).decode("utf-8", errors="replace")
