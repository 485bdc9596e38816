"""64-bit hashes of words and word n-grams, shared by the repetition filter, near-duplicate
shingles and decontamination.

An n-gram's hash is a polynomial in its words' 64-bit hashes, computed for every n-gram of a
document at once in numpy (uint64 wrapping), instead of joining each n-gram's words into a string
and hashing that in a Python loop: three to five times faster, with the same n-gram sets up to
64-bit collisions. The polynomial is built by doubling (2-grams from 1-grams, 4-grams from
2-grams, ...): about log2(n) vectorised multiply-adds instead of n - 1, the same values exactly.
"""

from __future__ import annotations

from array import array

import numpy as np

_MUL = np.uint64(0x9E3779B97F4A7C15)  # odd, from the golden ratio: spreads the word hashes


def word_hashes(words: list[str]) -> np.ndarray:
    """[words] uint64: each word's 64-bit hash, by rensa (the MinHash library deduplication uses;
    its hashing runs in Rust, five times faster than BLAKE2b word by word in Python). The same in
    every process and run (Python's ``hash`` of a str is salted per process, so it is never
    used); both sides of a comparison are hashed in the same run, so only that stability counts."""
    import rensa

    return as_uint64(rensa.RMinHash.hash_token_sets([words])[0])


def as_uint64(values: list[int]) -> np.ndarray:
    """[len(values)] uint64 from Python ints: through ``array('Q')``, which converts in one C
    loop (measured 1.4x faster than ``np.array(values, dtype=np.uint64)`` on 64-bit hashes)."""
    return np.frombuffer(array("Q", values), dtype=np.uint64)


def _power(k: int) -> np.uint64:
    """``_MUL ** k`` modulo 2**64."""
    return np.uint64(pow(int(_MUL), k, 1 << 64))


def ngram_combine(word_hashes: np.ndarray, n: int, short_as_one: bool = False) -> np.ndarray:
    """[words] uint64 -> [words - n + 1] uint64, one hash per n-gram: ``sum(h[i + j] * M**(n-1-j))``.
    A text shorter than ``n`` words has no n-gram, or with ``short_as_one`` one hash of all its words."""
    h = np.asarray(word_hashes, dtype=np.uint64)  # [words]
    if len(h) < n and not (short_as_one and len(h)):
        return np.zeros(0, dtype=np.uint64)
    width = min(n, len(h))
    # uint64 array arithmetic wraps silently (numpy checks overflow of scalars only).
    # g: the hashes of the size-grams; p: those of the 2**k-grams, doubled each step. A
    # size-gram followed by a p-gram is a (size + len_p)-gram: g * M**len_p + p shifted.
    g, size, p, len_p = None, 0, h, 1
    while True:
        if width & len_p:
            g = p.copy() if g is None else g[:len(g) - len_p] * _power(len_p) + p[size:]
            size += len_p
        if 2 * len_p > width:
            return g
        p = p[:len(p) - len_p] * _power(len_p) + p[len_p:]
        len_p *= 2
