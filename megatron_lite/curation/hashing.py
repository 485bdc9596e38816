"""64-bit hashes of word n-grams, shared by near-duplicate shingles and decontamination.

An n-gram's hash is a polynomial in its words' 64-bit hashes, computed for every n-gram of a
document at once in numpy (n - 1 vectorised multiply-adds, uint64 wrapping), instead of joining
each n-gram's words into a string and hashing that in a Python loop: three to five times faster,
with the same n-gram sets up to 64-bit collisions.
"""

from __future__ import annotations

import numpy as np

_MUL = np.uint64(0x9E3779B97F4A7C15)  # odd, from the golden ratio: spreads the word hashes


def word_hashes(words: list[str]) -> np.ndarray:
    """[words] uint64: each word's 64-bit hash, by rensa (the MinHash library deduplication uses;
    its hashing runs in Rust, five times faster than BLAKE2b word by word in Python). The same in
    every process and run (Python's ``hash`` of a str is salted per process, so it is never
    used); both sides of a comparison are hashed in the same run, so only that stability counts."""
    import rensa

    return np.array(rensa.RMinHash.hash_token_sets([words])[0], dtype=np.uint64)


def ngram_combine(word_hashes: np.ndarray, n: int, short_as_one: bool = False) -> np.ndarray:
    """[words] uint64 -> [words - n + 1] uint64, one hash per n-gram. A text shorter than ``n``
    words has no n-gram, or with ``short_as_one`` one hash of all its words."""
    h = np.asarray(word_hashes, dtype=np.uint64)  # [words]
    if len(h) < n and not (short_as_one and len(h)):
        return np.zeros(0, dtype=np.uint64)
    grams, width = max(len(h) - n + 1, 1), min(n, len(h))
    g = h[:grams].copy()  # [grams]
    with np.errstate(over="ignore"):
        for j in range(1, width):
            g = g * _MUL + h[j:grams + j]
    return g
