"""``TiktokenTokenizer``: OpenAI's byte-level BPE from a local ``.tiktoken`` rank file, as
GPT-NeoX's ``TiktokenTokenizer``, with nothing ever downloaded.

The ``tiktoken`` package is the reference implementation of these encodings (GPT-NeoX calls it
too): building ``tiktoken.Encoding`` from the same ranks, pattern and special tokens gives the
same ids as GPT-NeoX.

``vocab_file`` is, in this order:

1. an existing file: a ``.tiktoken`` BPE rank file (``base64(token) rank`` per line, the format
   ``tiktoken.load.load_tiktoken_bpe`` reads; every single byte must have a rank). Its pattern and
   special tokens:

   - a file named after a tiktoken encoding (``cl100k_base.tiktoken``, ``o200k_base.tiktoken``,
     ``r50k_base.tiktoken``, ``p50k_base.tiktoken``: the names of OpenAI's own files) gets that
     encoding's pattern and special tokens, from tiktoken's own definition: the same encoding as
     ``tiktoken.get_encoding(name)``;
   - any other file gets the cl100k_base pattern and one special token, ``<|endoftext|>``, with
     the id after the highest rank.

2. the name of a tiktoken encoding (``cl100k_base``: GPT-NeoX passes ``vocab_file`` to
   ``tiktoken.get_encoding``), accepted only when tiktoken's cache (``TIKTOKEN_CACHE_DIR``)
   already holds its file; otherwise a ``ValueError`` asks for a local ``.tiktoken`` file.

Matched (GPT-NeoX ``megatron/tokenizer/tokenizer.py``, ``TiktokenTokenizer``): ``vocab_size`` =
``n_vocab``; eod = ``eot_token`` (``<|endoftext|>``); no BOS/EOS added; ``tokenize_batch`` =
``encode_batch(texts, allowed_special="all")`` (special-token text such as ``<|endoftext|>``
becomes its special id). Differences, on purpose: ``tokenize`` uses ``allowed_special="all"`` too
(GPT-NeoX's single-text ``encode`` raises on such text; one behaviour for both paths keeps
``tokenize_batch == tokenize``); ``detokenize`` decodes with ``errors="replace"`` and drops ids
that are no token (GPT-NeoX: ``errors="strict"``, and a ``KeyError``), so that generation can
decode a partial character or a padding id; pad = eod (GPT-NeoX has none).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

from megatron_lite.tokenizer.spm_tokenizer import library_threads
from megatron_lite.tokenizer.tokenizer_types import EOD_TOKEN, TokenizerBase, _require

# tiktoken_ext.openai_public's cl100k_base pattern: the default for a rank file of another name.
CL100K_PATTERN = (r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+|"""
                  r""" ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s""")
_WHAT = "a .tiktoken BPE rank file, or the name of an encoding in tiktoken's cache"
_SWAP_LOCK = threading.Lock()


class _NotCached(Exception):
    """tiktoken asked to download a file (the encoding is not in its cache)."""


@contextlib.contextmanager
def _tiktoken_io(read_file_cached: Callable[..., bytes] | None = None) -> Iterator[None]:
    """While tiktoken builds an encoding: every file it reads comes from ``read_file_cached`` (a
    local rank file), or, when None, only from its cache: a download raises ``_NotCached``.

    tiktoken has no offline switch, and ``load_tiktoken_bpe`` on a local path keeps a copy in
    /tmp keyed by the path (a changed file would then be read stale): so its two readers are
    swapped for the duration, under a lock.
    """
    import tiktoken.load

    def refuse(blobpath: str) -> bytes:
        raise _NotCached(blobpath)

    name, value = (("read_file", refuse) if read_file_cached is None
                   else ("read_file_cached", read_file_cached))
    with _SWAP_LOCK:
        saved = getattr(tiktoken.load, name)
        setattr(tiktoken.load, name, value)
        try:
            yield
        finally:
            setattr(tiktoken.load, name, saved)


def _from_file(path: str) -> Any:
    """The ``tiktoken.Encoding`` of a local rank file (rules in the module docstring)."""
    import tiktoken
    import tiktoken.load
    import tiktoken.registry

    with open(path, "rb") as handle:
        data = handle.read()
    stem = os.path.basename(path).split(".")[0]
    with _tiktoken_io(lambda blobpath, expected_hash=None: data):
        # "gpt2" reads GPT-2's vocab.bpe + encoder.json, not a rank file: the generic rule.
        if stem != "gpt2" and stem in tiktoken.registry.list_encoding_names():
            spec = tiktoken.registry.ENCODING_CONSTRUCTORS[stem]()  # its ranks are read from `data`
        else:
            ranks = tiktoken.load.load_tiktoken_bpe(path)
            spec = {"name": stem, "pat_str": CL100K_PATTERN, "mergeable_ranks": ranks,
                    "special_tokens": {EOD_TOKEN: max(ranks.values(), default=-1) + 1}}
    _check(spec)
    return tiktoken.Encoding(**spec)


def _check(spec: dict[str, Any]) -> None:
    """What tiktoken's Rust side would panic on (a panic is no Exception and prints a backtrace)
    or assert, as a ValueError."""
    ranks, special = spec["mergeable_ranks"], spec["special_tokens"]
    missing = [b for b in range(256) if bytes([b]) not in ranks]
    if missing:  # the encoder has no fallback for a byte without a rank
        raise ValueError(f"{len(missing)} single bytes have no rank, byte {missing[0]} first")
    ids = set(ranks.values())
    if len(ids) != len(ranks):
        raise ValueError(f"{len(ranks) - len(ids)} ranks are given to more than one token")
    clash = ids & set(special.values())
    if clash:
        raise ValueError(f"rank {min(clash)} is also the id of a special token of {spec['name']}")
    expected = spec.get("explicit_n_vocab")
    if expected is not None and len(ranks) + len(special) != expected:
        raise ValueError(f"{len(ranks)} ranks, {spec['name']} has {expected - len(special)}")


def _from_cache(name: str) -> Any:
    """``tiktoken.get_encoding(name)`` if tiktoken's cache holds its files, else a ValueError."""
    import tiktoken

    try:
        with _tiktoken_io():
            return tiktoken.get_encoding(name)
    except _NotCached:
        raise ValueError(f"vocab_file: {name!r} is a tiktoken encoding that is not in tiktoken's "
                         f"cache and nothing is downloaded: pass a local .tiktoken file "
                         f"(e.g. {name}.tiktoken) as vocab_file") from None


def load_encoding(vocab_file: str | None) -> Any:
    """The ``tiktoken.Encoding`` that ``vocab_file`` names (a file, or a cached encoding name)."""
    import tiktoken.registry

    kind = TiktokenTokenizer.name
    if vocab_file and not os.path.exists(vocab_file) and vocab_file in tiktoken.registry.list_encoding_names():
        return _from_cache(vocab_file)
    path = _require(vocab_file, "vocab_file", kind, _WHAT)
    try:
        return _from_file(path)
    except (ValueError, KeyError, AssertionError) as exc:  # a line that does not parse, say
        # tiktoken's message quotes the whole line (a binary file's can be megabytes): its cause.
        reason = (str(exc.__cause__ or exc).splitlines() or [type(exc).__name__])[0][:120]
        raise ValueError(f"vocab_file: {path} is not a tiktoken BPE rank file ({reason})") from None


class TiktokenTokenizer(TokenizerBase):
    """A tiktoken encoding from a local file; see the module docstring for the rules and what
    matches GPT-NeoX."""

    name = "TiktokenTokenizer"

    def __init__(self, vocab_file: str | None) -> None:
        self._enc = load_encoding(vocab_file)
        self.vocab_size: int = self._enc.n_vocab
        eod = self.token_id(EOD_TOKEN)
        if eod is None:
            raise ValueError(f"vocab_file: {vocab_file}: the encoding has no {EOD_TOKEN}; "
                             f"TiktokenTokenizer uses it as end of document")
        self.eod: int = eod
        self.pad: int = eod

    @property
    def encoding(self) -> Any:
        """The underlying ``tiktoken.Encoding``."""
        return self._enc

    def token_id(self, token: str) -> int | None:
        try:
            return self._enc.encode_single_token(token)  # a special or a mergeable token
        except KeyError:
            return None

    def tokenize(self, text: str) -> list[int]:
        return self._enc.encode(text, allowed_special="all")

    def tokenize_batch(self, texts: list[str] | str,
                       add_special_tokens: bool | None = None) -> list[list[int]]:
        """Ids of every text (same as ``tokenize`` one by one); ``add_special_tokens``: accepted,
        nothing is added (no BOS/EOS, as GPT-NeoX)."""
        if isinstance(texts, str):
            texts = [texts]
        return self._enc.encode_batch(list(texts), num_threads=library_threads(), allowed_special="all")

    def detokenize(self, ids: Any) -> str:
        ids = [int(i) for i in ids]
        try:
            return self._enc.decode(ids, errors="replace")
        except (KeyError, OverflowError, ValueError):  # an id that is no token: dropped
            return self._enc.decode([i for i in ids if self._is_token(i)], errors="replace")

    def _is_token(self, token: int) -> bool:
        try:
            self._enc.decode_single_token_bytes(token)
        except (KeyError, OverflowError, ValueError):
            return False
        return True
