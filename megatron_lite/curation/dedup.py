"""Deduplication: exact (hash of the normalized text) and near (MinHash + LSH, rensa).

Normalization (both): lowercase, every character that is not a letter, digit or whitespace
becomes a space, split on whitespace. The exact key is the 64-bit BLAKE2b of the normalized
words joined by one space; near-duplicates compare the sets of word ``ngram``-grams (a text
shorter than ``ngram`` words is one shingle; a text without words has no signature).

The rule, the same for the in-process index and the distributed grouping (cluster.py):
documents are numbered in input order by their *key* ``(input file index << 40) | line``; a
document is an **exact duplicate** when an earlier document has the same exact key, else a
**near duplicate** when an earlier document shares an LSH band with it (``bands`` bands of
``rows`` MinHash values: ``rensa``'s banding, contiguous slices of the digest); it duplicates
the *earliest* such document. Every document that passed the filters is indexed, removed or
not, so the first document of each group is kept and the result does not depend on how the
corpus is split across workers.

Why rensa (measured on this machine, docs/curation.md): its Rust MinHash and LSH are 25x
(signatures) and 100x (index) faster than datasketch's numpy/Python ones for the same recall,
and datatrove's MinHash needs spaCy for its word tokenizer and has no in-memory index.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from typing import Any

import numpy as np

from megatron_lite.curation.config import DedupConfig
from megatron_lite.curation.hashing import as_uint64, ngram_combine

KEY_LINE_BITS = 40  # a document's key: (file index << 40) | line
_NOT_WORD = re.compile(r"[^\w\s]|_")
_ASCII_NOT_WORD = {c: " " for c in range(128) if _NOT_WORD.match(chr(c))}  # the same rule on ASCII
EXACT, NEAR = "exact_duplicate", "near_duplicate"


def doc_key(file_index: int, line: int) -> int:
    return (file_index << KEY_LINE_BITS) | line


def split_key(key: int) -> tuple[int, int]:
    """(file index, line) of a :func:`doc_key`."""
    return key >> KEY_LINE_BITS, key & ((1 << KEY_LINE_BITS) - 1)


def normalized_words(text: str) -> list[str]:
    """Lowercase words without punctuation (module docstring)."""
    lower = text.lower()
    if lower.isascii():  # O(1) in CPython; then translate's ASCII fast path is 2x the regex
        return lower.translate(_ASCII_NOT_WORD).split()
    return _NOT_WORD.sub(" ", lower).split()


def exact_key(words: list[str]) -> int:
    """64-bit BLAKE2b of the normalized text (stable across processes, unlike ``hash``)."""
    digest = hashlib.blake2b(" ".join(words).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def shingle_tokens(word_hashes: list[int], n: int) -> list[bytes]:
    """The document's word ``n``-gram shingles as 8-byte tokens (``hashing.ngram_combine``; one
    shingle for a text shorter than ``n`` words)."""
    return ngram_combine(as_uint64(word_hashes), n, short_as_one=True).view("V8").tolist()


def signatures(word_lists: list[list[str]], cfg: DedupConfig) -> list[Any]:
    """One ``rensa.RMinHash`` per document (None for a document without words); the seeded
    permutations make them identical in every process and run."""
    import rensa

    hashed = rensa.RMinHash.hash_token_sets(word_lists) if word_lists else []
    present = [i for i, h in enumerate(hashed) if h]
    out: list[Any] = [None] * len(word_lists)
    if present:
        sets = [shingle_tokens(hashed[i], cfg.ngram) for i in present]
        for i, mh in zip(present, rensa.RMinHash.from_token_sets(sets, cfg.num_perm, cfg.seed)):
            out[i] = mh
    return out


def band_hashes(minhash: Any, cfg: DedupConfig) -> np.ndarray:
    """[bands] uint64: a hash of each band's ``rows`` digest values (for the distributed
    grouping; two documents share a band exactly when these agree, barring a 64-bit collision)."""
    digest = np.asarray(minhash.digest(), dtype=np.uint32).reshape(cfg.bands, cfg.rows)  # [b, r]
    mixed = digest.astype(np.uint64)
    out = np.zeros(cfg.bands, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for r in range(cfg.rows):  # polynomial hash over the band's values, 64-bit wrap-around
            out = out * np.uint64(0x100000001B3) + mixed[:, r] + np.uint64(r + 1)
    return out


class DedupIndex:
    """The in-process index: exact keys and a rensa LSH over every document seen so far.

    Memory grows per indexed document by about 100 bytes (the exact-key dict) plus what rensa's
    LSH keeps per band (~86 bytes each: 1.7 KB at 20 bands; measured, docs/curation.md).
    """

    def __init__(self, cfg: DedupConfig) -> None:
        self.cfg = cfg
        self.exact: dict[int, int] = {}  # exact key -> the first document's key
        self.lsh = None
        if cfg.near:
            import rensa

            # rensa's threshold only serves its is_similar(); candidates come from the bands.
            self.lsh = rensa.RMinHashLSH(0.5, cfg.num_perm, cfg.bands)

    def check(self, key: int, exact: int | None, minhash: Any) -> tuple[str, int] | None:
        """``(reason, key of the earliest document it duplicates)`` or None; indexes it."""
        found: tuple[str, int] | None = None
        if self.cfg.exact and exact is not None:
            first = self.exact.setdefault(exact, key)
            if first != key:
                found = (EXACT, first)
        if self.lsh is not None and minhash is not None:
            if found is None:
                candidates = self.lsh.query(minhash)
                if candidates:
                    found = (NEAR, min(candidates))
            self.lsh.insert(key, minhash)
        return found


def first_in_groups(keys: np.ndarray, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For documents ``keys`` with bucket ``hashes``: ``(keys that are not first in their
    bucket, the first key of their bucket)``: the distributed form of :meth:`DedupIndex.check`."""
    order = np.lexsort((keys, hashes))  # by bucket, then input order
    k, h = keys[order], hashes[order]
    if len(k) == 0:
        return k, k
    starts = np.concatenate([[True], h[1:] != h[:-1]])  # [n] first of its bucket
    first = k[np.maximum.accumulate(np.where(starts, np.arange(len(k)), 0))]
    later = ~starts
    return k[later], first[later]


def merge_first(pairs: Iterable[tuple[np.ndarray, np.ndarray]]) -> dict[int, int]:
    """{key: the smallest first-key over every bucket pair list}: a document's earliest duplicate."""
    best: dict[int, int] = {}
    for keys, firsts in pairs:
        for key, first in zip(keys.tolist(), firsts.tolist()):
            if first < best.get(key, first + 1):
                best[key] = first
    return best
