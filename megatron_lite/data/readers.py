"""Streaming document readers: .jsonl, .jsonl.zst, .jsonl.gz and plain .txt.

Documents come one at a time with the file and line they started on, so memory stays flat
whatever the corpus size.

- ``.jsonl`` (also ``.json``, each optionally ``.zst`` / ``.gz``): one JSON object per line; the
  document is the string under each requested key. Blank lines are ignored.
- ``.txt`` (optionally ``.zst`` / ``.gz``): the whole file is one document, or with
  ``txt_blocks`` each block of lines separated by blank lines is one.

A line that is not valid UTF-8, not valid JSON, or lacks a key (or holds a non-string there) is
skipped, counted by reason and reported as ``file:line``; with ``strict`` the first one raises
:class:`InputError`. Empty (whitespace-only) documents are skipped and counted. A
:data:`RecordParser` can replace the "a string under each key" rule for records of another shape
(prompt/completion pairs, chat messages: see :mod:`megatron_lite.data.sft`); it rejects a record
by raising :class:`BadRecord`, which is counted and reported the same way. A missing file,
an unknown extension, or a truncated / corrupt ``.zst`` or ``.gz`` raises :class:`InputError`:
python-zstandard returns whatever it could decode of a cut file without complaint, so frame
ends are checked here.
"""

from __future__ import annotations

import glob
import gzip
import json
import os
import re
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from megatron_lite.utils.logging import get_logger

logger = get_logger(__name__)

_MAX_WARNINGS = 20  # per run; the summary carries the totals
JSONL_SUFFIXES = (".jsonl", ".json")
TXT_SUFFIXES = (".txt",)
COMPRESSION_SUFFIXES = ("", ".zst", ".gz")

# Reasons a line or document is skipped (the keys of ReadStats.skipped).
NOT_UTF8 = "not valid UTF-8"
NOT_JSON = "not valid JSON"
MISSING_KEY = "missing key"
EMPTY = "empty document"
WRONG_TYPE = "wrong type"
NOTHING_TO_TRAIN = "nothing to train on"
# Valid records that carry nothing useful: counted, but not fatal under ``strict``.
_HARMLESS = (EMPTY, NOTHING_TO_TRAIN)


class InputError(ValueError):
    """Unusable input (missing, truncated or corrupt file, a bad line under ``strict``)."""


class BadRecord(ValueError):
    """Raised by a :data:`RecordParser` to skip a record: ``reason`` is the count's key (e.g.
    :data:`MISSING_KEY`), ``detail`` completes the message (``" 'prompt' (a list, not a string)"``)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason + detail)
        self.reason, self.detail = reason, detail


class Document(NamedTuple):
    """One document: its text per key, the file it came from and the line it starts on.

    With a :data:`RecordParser` ``texts`` is whatever the parser returned (not necessarily text).
    """

    texts: dict[str, Any]
    path: str
    line: int


# A JSON object -> the document's fields; raises BadRecord to skip the line.
RecordParser = Callable[[dict], dict[str, Any]]


def string_fields(keys: list[str]) -> RecordParser:
    """The default parser: a string under every key (``{key: text}``)."""
    def parse(record: dict) -> dict[str, Any]:
        bad = next((k for k in keys if not isinstance(record.get(k), str)), None)
        if bad is not None:
            detail = "" if bad not in record else f" (a {type(record[bad]).__name__}, not a string)"
            raise BadRecord(MISSING_KEY, f" {bad!r}{detail}")
        return {k: record[k] for k in keys}

    return parse


@dataclass
class ReadStats:
    """What the readers saw: documents, input bytes (decompressed), skipped lines by reason."""

    documents: int = 0
    bytes: int = 0
    skipped: Counter = field(default_factory=Counter)
    warned: int = 0

    def skip(self, reason: str, where: str, strict: bool, detail: str = "") -> None:
        """Count a skipped line (``where`` = ``file:line``), warn for the first few; fatal if strict."""
        message = f"{where}: {reason}{detail}"
        if strict and reason not in _HARMLESS:
            raise InputError(f"{message} (--strict makes a bad line fatal)")
        self.skipped[reason] += 1
        if self.warned < _MAX_WARNINGS:
            logger.warning("%s; skipped", message)
            self.warned += 1
            if self.warned == _MAX_WARNINGS:
                logger.warning("further skipped lines are counted in the summary only")


def input_kind(path: str) -> str:
    """``"jsonl"`` or ``"txt"`` from the file name, else an ``InputError`` naming the file."""
    for comp in COMPRESSION_SUFFIXES:
        if path.endswith(tuple(s + comp for s in JSONL_SUFFIXES)):
            return "jsonl"
        if path.endswith(tuple(s + comp for s in TXT_SUFFIXES)):
            return "txt"
    raise InputError(f"{path}: unknown input type (use .jsonl, .jsonl.zst, .jsonl.gz or .txt)")


def expand_inputs(spec: str | list[str]) -> list[str]:
    """Comma-separated files or globs (or a list of them), in the given order, globs sorted.

    Each must match an existing file of a known type: checked here, before any work is done.
    """
    parts = spec.split(",") if isinstance(spec, str) else list(spec)
    paths: list[str] = []
    for part in (os.path.expanduser(p.strip()) for p in parts if p.strip()):
        matches = sorted(m for m in glob.glob(part) if os.path.isfile(m)) if glob.has_magic(part) else [part]
        if not matches or not all(os.path.isfile(m) for m in matches):
            raise InputError(f"input file not found: {part}")
        for match in matches:
            input_kind(match)
        paths += matches
    if not paths:
        raise InputError("no input files given")
    return paths


def _zst_chunks(path: str, chunk: int = 1 << 20) -> Iterator[bytes]:
    """Decompressed bytes of every frame; an unfinished last frame is an error."""
    import zstandard

    with open(path, "rb") as handle:
        dobj = zstandard.ZstdDecompressor().decompressobj()
        fed = False  # the current frame has received input
        while data := handle.read(chunk):
            while data:
                if dobj.eof:  # the previous frame ended: the rest starts a new one
                    dobj = zstandard.ZstdDecompressor().decompressobj()
                    fed = False
                fed = True
                try:
                    out = dobj.decompress(data)
                except zstandard.ZstdError as exc:
                    raise InputError(f"{path}: corrupt zstd data ({exc})") from None
                if out:
                    yield out
                data = dobj.unused_data if dobj.eof else b""
        if fed and not dobj.eof:
            raise InputError(f"{path}: truncated zstd file (the last frame does not end)")


def _split_lines(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Lines (newline stripped) of a stream of byte chunks; a long line costs linear time."""
    parts: list[bytes] = []
    for chunk in chunks:
        start = 0
        while (end := chunk.find(b"\n", start)) >= 0:
            parts.append(chunk[start:end])
            yield b"".join(parts)
            parts, start = [], end + 1
        if start < len(chunk):
            parts.append(chunk[start:])
    if parts:
        yield b"".join(parts)


def binary_chunks(path: str, chunk: int = 1 << 20) -> Iterator[bytes]:
    """Decompressed bytes of a plain, .gz or .zst file, a chunk at a time."""
    if path.endswith(".zst"):
        yield from _zst_chunks(path, chunk)
        return
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as handle:
            while data := handle.read(chunk):
                yield data
    except FileNotFoundError:
        raise InputError(f"input file not found: {path}") from None
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise InputError(f"{path}: truncated or corrupt file ({exc})") from None


def binary_lines(path: str) -> Iterator[bytes]:
    """Lines (bytes, ``\\n`` stripped) of a plain, .gz or .zst file."""
    return _split_lines(binary_chunks(path))


def _decode(raw: bytes, where: str, stats: ReadStats, strict: bool) -> str | None:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        stats.skip(NOT_UTF8, where, strict, f" (byte {exc.start})")
        return None


# Valid UTF-8 bytes never decode to a surrogate; only a JSON \\uD800-\\uDFFF escape makes one. A
# lone one cannot be encoded (the tokenizer would fail on it): the line is bad like the others.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89abcdefABCDEF]")


def _has_lone_surrogate(value: Any) -> bool:
    """Whether a string anywhere in ``value`` holds one: a parser's fields nest strings in lists,
    tuples and dicts (SFT segments, chat messages, preference documents)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(value, dict):
        value = list(value.values())
    return isinstance(value, (list, tuple)) and any(_has_lone_surrogate(v) for v in value)


def read_jsonl(path: str, keys: list[str], stats: ReadStats, strict: bool,
               parse: RecordParser | None = None) -> Iterator[Document]:
    """One :class:`Document` per valid line (bad lines counted in ``stats``); ``parse`` turns a
    record into the document's fields (default: :func:`string_fields` of ``keys``)."""
    parse = parse or string_fields(keys)
    for lineno, raw in enumerate(binary_lines(path), start=1):
        stats.bytes += len(raw) + 1
        if not raw.strip():
            continue
        where = f"{path}:{lineno}"
        text = _decode(raw, where, stats, strict)
        if text is None:
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            stats.skip(NOT_JSON, where, strict, f" ({exc.msg})")
            continue
        if not isinstance(record, dict):
            stats.skip(NOT_JSON, where, strict, f" object (a JSON {type(record).__name__})")
            continue
        try:
            fields = parse(record)
        except BadRecord as exc:
            stats.skip(exc.reason, where, strict, exc.detail)
            continue
        if _SURROGATE_ESCAPE.search(raw) and _has_lone_surrogate(fields):
            stats.skip(NOT_UTF8, where, strict, " (a \\u escape of a lone surrogate, which no UTF-8 text holds)")
            continue
        yield Document(fields, path, lineno)


def read_txt(path: str, keys: list[str], stats: ReadStats, strict: bool, blocks: bool) -> Iterator[Document]:
    """The whole file as one document (exactly its text), or (``blocks``) one document per
    block of lines separated by blank (or whitespace-only) lines, streamed."""
    if not blocks:
        raw = b"".join(binary_chunks(path))
        stats.bytes += len(raw)
        yield from _txt_document(raw, path, 1, keys, stats, strict)
        return
    block: list[bytes] = []
    start = 1
    for lineno, line in enumerate(binary_lines(path), start=1):
        stats.bytes += len(line) + 1
        if line.strip():
            if not block:
                start = lineno
            block.append(line)
        elif block:
            yield from _txt_document(b"\n".join(block), path, start, keys, stats, strict)
            block = []
    if block:
        yield from _txt_document(b"\n".join(block), path, start, keys, stats, strict)


def _txt_document(raw: bytes, path: str, line: int, keys: list[str], stats: ReadStats,
                  strict: bool) -> Iterator[Document]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        # Name the line holding the first bad byte, not just the block's first line.
        bad_line = line + raw.count(b"\n", 0, exc.start)
        stats.skip(NOT_UTF8, f"{path}:{bad_line}", strict, f" (byte {exc.start} of the document)")
        return
    yield Document({k: text for k in keys}, path, line)


def iter_documents(paths: list[str], keys: list[str], stats: ReadStats, strict: bool = False,
                   txt_blocks: bool = False, parse: RecordParser | None = None) -> Iterator[Document]:
    """Documents from every input in order; empty ones are counted in ``stats``, not yielded.

    ``parse`` (records of another shape than a string per key) needs .jsonl inputs.
    """
    for path in paths:
        if not os.path.isfile(path):
            raise InputError(f"input file not found: {path}")
        if input_kind(path) == "jsonl":
            docs = read_jsonl(path, keys, stats, strict, parse)
        elif parse is not None:
            raise InputError(f"{path}: this mode reads JSON records (.jsonl, .jsonl.zst, .jsonl.gz), not .txt")
        else:
            docs = read_txt(path, keys, stats, strict, txt_blocks)
        for doc in docs:
            # Non-text fields (a parser's) are never "empty" here: the parser judges those.
            if all(isinstance(text, str) and not text.strip() for text in doc.texts.values()):
                stats.skip(EMPTY, f"{doc.path}:{doc.line}", strict)
                continue
            stats.documents += 1
            yield doc


def iter_texts(paths: list[str], keys: list[str] | str = "text", stats: ReadStats | None = None,
               txt_blocks: bool = False) -> Iterator[str]:
    """Just the texts (every key of every document in turn), for tokenizer training."""
    keys = [keys] if isinstance(keys, str) else list(keys)
    for doc in iter_documents(paths, keys, stats if stats is not None else ReadStats(), txt_blocks=txt_blocks):
        yield from doc.texts.values()
