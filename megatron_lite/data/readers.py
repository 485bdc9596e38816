"""Streaming document readers: .jsonl, .jsonl.zst, .jsonl.gz and plain .txt.

Documents are read one line (or one file / blank-line block) at a time, so memory stays flat
whatever the corpus size. A bad line (not JSON, missing key, not UTF-8) is counted and reported
with its file and line number; with ``strict`` the first one is fatal. A truncated .zst or .gz
is always an error: python-zstandard returns what it could decode of a cut file without
complaint, so frame ends are checked here.
"""

from __future__ import annotations

import glob
import gzip
import json
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

from megatron_lite.utils.logging import get_logger

logger = get_logger(__name__)

_MAX_WARNINGS = 20  # per run; the summary carries the totals


class InputError(ValueError):
    """Unusable input (missing or truncated file, a bad line under --strict)."""


@dataclass
class ReadStats:
    """What the readers saw: documents, bytes, and skipped lines by reason."""

    documents: int = 0
    bytes: int = 0
    skipped: Counter = field(default_factory=Counter)
    warned: int = 0

    def skip(self, reason: str, where: str, strict: bool) -> None:
        if strict:
            raise InputError(f"{where}: {reason} (--strict makes this fatal)")
        self.skipped[reason] += 1
        if self.warned < _MAX_WARNINGS:
            logger.warning("%s: %s; skipped", where, reason)
            self.warned += 1
            if self.warned == _MAX_WARNINGS:
                logger.warning("further skipped lines are counted in the summary only")


def expand_inputs(spec: str | list[str]) -> list[str]:
    """Comma-separated files or globs, in the given order; each must match something."""
    parts = spec.split(",") if isinstance(spec, str) else list(spec)
    paths: list[str] = []
    for part in (p.strip() for p in parts if p.strip()):
        matches = sorted(glob.glob(part)) if any(c in part for c in "*?[") else [part]
        if not matches or not all(os.path.isfile(m) for m in matches):
            raise InputError(f"input file not found: {part}")
        paths += matches
    if not paths:
        raise InputError("no input files given")
    return paths


def _zst_chunks(path: str, chunk: int = 1 << 20) -> Iterator[bytes]:
    """Decompressed bytes of every frame; an unfinished last frame is an error."""
    import zstandard

    with open(path, "rb") as handle:
        dobj = zstandard.ZstdDecompressor().decompressobj()
        fed = False
        while True:
            data = handle.read(chunk)
            if not data:
                break
            while data:
                if dobj.eof:  # the previous frame ended: the rest starts a new one
                    dobj = zstandard.ZstdDecompressor().decompressobj()
                    fed = False
                fed = True
                out = dobj.decompress(data)
                if out:
                    yield out
                data = dobj.unused_data if dobj.eof else b""
        if fed and not dobj.eof:
            raise InputError(f"{path}: truncated zstd file (the last frame does not end)")


def _binary_lines(path: str) -> Iterator[bytes]:
    """Lines (bytes, newline stripped) of a plain, .gz or .zst file."""
    if path.endswith(".zst"):
        pending = b""
        for chunk in _zst_chunks(path):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            yield from lines
        if pending:
            yield pending
        return
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as handle:
            for line in handle:
                yield line.rstrip(b"\n")
    except (EOFError, gzip.BadGzipFile, OSError) as exc:
        raise InputError(f"{path}: truncated or corrupt file ({exc})") from None


def _decode(raw: bytes, where: str, stats: ReadStats, strict: bool) -> str | None:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        stats.skip("not valid UTF-8", where, strict)
        return None


def read_jsonl(path: str, keys: list[str], stats: ReadStats, strict: bool) -> Iterator[dict[str, str]]:
    """One dict ``key -> text`` per valid line."""
    for lineno, raw in enumerate(_binary_lines(path), start=1):
        if not raw.strip():
            continue
        where = f"{path}:{lineno}"
        text = _decode(raw, where, stats, strict)
        if text is None:
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError:
            stats.skip("not valid JSON", where, strict)
            continue
        if not isinstance(record, dict) or any(not isinstance(record.get(k), str) for k in keys):
            missing = [k for k in keys if not isinstance(record, dict) or not isinstance(record.get(k), str)]
            stats.skip(f"missing key {missing[0]!r} (or not a string)", where, strict)
            continue
        stats.bytes += len(raw)
        yield {k: record[k] for k in keys}


def read_txt(path: str, keys: list[str], stats: ReadStats, strict: bool, blocks: bool) -> Iterator[dict[str, str]]:
    """A .txt file is one document, or (``blocks``) one per blank-line-separated block."""
    raw = b"\n".join(_binary_lines(path))
    text = _decode(raw, path, stats, strict)
    if text is None:
        return
    stats.bytes += len(raw)
    parts = text.split("\n\n") if blocks else [text]
    for part in parts:
        yield {k: part for k in keys}


def iter_documents(paths: list[str], keys: list[str], stats: ReadStats, strict: bool = False,
                   txt_blocks: bool = False) -> Iterator[dict[str, str]]:
    """Documents from every input in order, as ``{key: text}``; empty ones are counted, not yielded."""
    for path in paths:
        if path.endswith((".jsonl", ".jsonl.zst", ".jsonl.gz", ".json", ".json.zst", ".json.gz")):
            docs = read_jsonl(path, keys, stats, strict)
        elif path.endswith((".txt", ".txt.gz", ".txt.zst")):
            docs = read_txt(path, keys, stats, strict, txt_blocks)
        else:
            raise InputError(f"{path}: unknown input type (use .jsonl, .jsonl.zst, .jsonl.gz or .txt)")
        for doc in docs:
            if all(not text.strip() for text in doc.values()):
                stats.skipped["empty document"] += 1
                continue
            stats.documents += 1
            yield doc


def iter_texts(paths: list[str], key: str = "text", txt_blocks: bool = False) -> Iterator[str]:
    """Just the texts of one key (tokenizer training); bad lines are skipped and counted."""
    stats = ReadStats()
    for doc in iter_documents(paths, [key], stats, txt_blocks=txt_blocks):
        yield doc[key]

