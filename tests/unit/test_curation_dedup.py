"""Deduplication (exact and MinHash LSH) and the curation config."""

from __future__ import annotations

import random

import numpy as np
import pytest

from megatron_lite.curation.config import (
    DedupConfig,
    candidate_probability,
    implied_threshold,
    load_config,
)
from megatron_lite.curation.dedup import (
    EXACT,
    NEAR,
    DedupIndex,
    band_hashes,
    doc_key,
    exact_key,
    first_in_groups,
    merge_first,
    normalized_words,
    signatures,
    split_key,
)
from tests.unit.test_curation_filters import bench_module


@pytest.fixture(scope="module")
def bench():
    return bench_module()


def test_exact_key_normalizes_case_spacing_punctuation():
    a = exact_key(normalized_words("Hello,  World!\nThis is it."))
    assert a == exact_key(normalized_words("hello world this is it"))
    assert a != exact_key(normalized_words("hello world this is not it"))


def test_near_duplicate_found_distinct_kept(bench):
    rng = random.Random(3)
    base, other = bench.english(rng, 4), bench.english(rng, 4)
    near, j = bench.near_copy(rng, base, 0.9)
    assert 0.85 <= j <= 0.9
    cfg = DedupConfig()
    index = DedupIndex(cfg)
    texts = [base, other, near, base]
    words = [normalized_words(t) for t in texts]
    sigs = signatures(words, cfg)
    found = [index.check(doc_key(0, i + 1), exact_key(w), s) for i, (w, s) in enumerate(zip(words, sigs))]
    assert found == [None, None, (NEAR, doc_key(0, 1)), (EXACT, doc_key(0, 1))]
    assert split_key(doc_key(3, 17)) == (3, 17)
    assert signatures([[]], cfg) == [None]  # a text without words has no signature


def test_signatures_are_seeded():
    cfg = DedupConfig()
    a, b = signatures([["a", "b", "c", "d", "e", "f"]] * 2, cfg)
    assert a.digest() == b.digest()
    other = signatures([["a", "b", "c", "d", "e", "f"]], DedupConfig(seed=2))[0]
    assert a.digest() != other.digest()


def test_bucket_grouping_equals_the_index(bench):
    """The distributed rule (first in each bucket, smallest over bands) decides like the index."""
    cfg = DedupConfig(bands=8, rows=2, num_perm=16)  # loose: many collisions to compare
    rng = random.Random(5)
    base = [bench.english(rng, 1) for _ in range(30)]
    texts = [bench.near_copy(rng, rng.choice(base), 0.6)[0] if rng.random() < 0.5 else rng.choice(base)
             for _ in range(120)]
    words = [normalized_words(t) for t in texts]
    sigs, exacts = signatures(words, cfg), [exact_key(w) for w in words]
    keys = [doc_key(i // 40, 1000 + i) for i in range(len(texts))]  # input order: files, then lines
    index = DedupIndex(cfg)
    expected = {k: index.check(k, e, s) for k, e, s in zip(keys, exacts, sigs)}
    k = np.array(keys, dtype=np.uint64)
    exact = merge_first([first_in_groups(k, np.array(exacts, dtype=np.uint64))])
    bands = np.stack([band_hashes(s, cfg) for s in sigs])  # [docs, bands]
    near = merge_first(first_in_groups(k, bands[:, b]) for b in range(cfg.bands))
    got = {key: (EXACT, exact[key]) if key in exact else (NEAR, near[key]) if key in near else None for key in keys}
    assert got == expected
    assert sum(v is not None and v[0] == NEAR for v in got.values()) > 5


def test_threshold_helpers():
    assert implied_threshold(20, 8) == pytest.approx(0.688, abs=1e-3)
    assert candidate_probability(0.8, 20, 8) > 0.97 > candidate_probability(0.5, 20, 8) + 0.8


def test_config_unknown_key_names_closest(tmp_path):
    path = tmp_path / "c.yml"
    path.write_text("gopher_quality:\n  min_word: 10\n")
    with pytest.raises(ValueError, match=r"unknown key 'min_word' \(closest: min_words"):
        load_config(str(path))
    path.write_text("dedupe:\n  near: false\n")
    with pytest.raises(ValueError, match=r"unknown key 'dedupe' \(closest: dedup"):
        load_config(str(path))
    path.write_text("dedup:\n  num_perm: 100\n")
    with pytest.raises(ValueError, match="num_perm .100. must equal"):
        load_config(str(path))
    path.write_text("dedup:\n  bands: 10\n  rows: 4\n  num_perm: 40\nc4:\n  min_sentences: null\n")
    cfg = load_config(str(path), "web")
    assert (cfg.dedup.bands, cfg.c4.min_sentences, cfg.decontamination.enabled) == (10, None, False)
    with pytest.raises(ValueError, match="unknown preset"):
        load_config(None, "webb")
    none = load_config(None, "none")
    assert not (none.dedup.exact or none.dedup.near or none.c4.enabled or none.pii.enabled)


def test_ngram_combine_by_doubling_equals_the_polynomial():
    """hashing.ngram_combine builds n-gram hashes by doubling: the same values as the plain
    polynomial sum(h[i + j] * M**(n - 1 - j)) mod 2**64, for every n and length."""
    from megatron_lite.curation.hashing import _MUL, ngram_combine

    rng = np.random.default_rng(0)
    mul = int(_MUL)
    for length in range(0, 30):
        h = rng.integers(0, 2**64 - 1, length, dtype=np.uint64, endpoint=True)
        for n in range(1, 15):
            for short in (False, True):
                width = min(n, length)
                grams = max(length - n + 1, 1) if (length >= n or (short and length)) else 0
                want = [sum(int(h[i + j]) * pow(mul, width - 1 - j, 1 << 64) for j in range(width)) % (1 << 64)
                        for i in range(grams)]
                assert ngram_combine(h, n, short_as_one=short).tolist() == want, (length, n, short)
