"""Blending by weights: shares over prefixes, determinism, GPT-NeoX's document-count weights."""

import numpy as np
import pytest

from megatron_lite.data import blendable_dataset as bd
from megatron_lite.data.blendable_dataset import (
    BlendableDataset,
    build_blending_indices,
    weights_by_num_documents,
)


class _Numbered:
    """A dataset whose sample k says which dataset and which k it is."""

    def __init__(self, tag: int, n: int) -> None:
        self.tag, self.n = tag, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, k: int) -> dict:
        assert 0 <= k < self.n
        return {"text": np.array([self.tag, k], dtype=np.int64)}


@pytest.mark.parametrize("weights", [[0.5, 0.3, 0.2], [0.7, 0.3], [1, 1, 1, 1], [0.05, 0.95], [3, 0, 1]])
def test_blend_follows_weights_over_10k_samples(weights):
    size = 10_000
    dataset_index, sample_index = build_blending_indices(weights, size)
    w = np.asarray(weights, dtype=float) / sum(weights)
    counts = np.bincount(dataset_index, minlength=len(w))
    assert np.all(np.abs(counts / size - w) < 0.01), counts
    # Every prefix, not only the whole: the running share stays within ~1 sample of the target.
    onehot = np.eye(len(w))[dataset_index]  # [size, datasets]
    running = np.cumsum(onehot, axis=0)
    expected = np.arange(1, size + 1)[:, None] * w[None, :]
    assert np.max(np.abs(running - expected)) <= 1.0
    # Each dataset's samples are taken in order 0, 1, 2, ... with none skipped.
    for d in range(len(w)):
        assert np.array_equal(sample_index[dataset_index == d], np.arange(counts[d]))
    assert counts[w == 0].sum() == 0


def test_blend_is_deterministic_and_window_independent(monkeypatch):
    a = build_blending_indices([0.37, 0.21, 0.42], 5000)
    monkeypatch.setattr(bd, "_WINDOW", 97)  # many small sorting windows
    b = build_blending_indices([0.37, 0.21, 0.42], 5000)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_blendable_dataset_serves_from_each_dataset_and_wraps():
    datasets = [_Numbered(0, 60), _Numbered(1, 30), _Numbered(2, 10)]
    blend = BlendableDataset(datasets, [6, 3, 1])
    assert len(blend) == 100
    items = np.stack([blend[i]["text"] for i in range(len(blend))])
    counts = np.bincount(items[:, 0], minlength=3)
    assert counts.tolist() == [60, 30, 10]
    # A blend longer than a dataset's share wraps that dataset around.
    long_blend = BlendableDataset([_Numbered(0, 5), _Numbered(1, 5)], [0.5, 0.5], size=30)
    seen = [tuple(long_blend[i]["text"]) for i in range(30)]
    assert seen.count((0, 0)) == 3
    with pytest.raises(IndexError):
        blend[100]


def test_bad_weights_are_rejected():
    with pytest.raises(ValueError, match="3 datasets but 2 weights"):
        BlendableDataset([_Numbered(0, 5)] * 3, [1, 2])
    with pytest.raises(ValueError, match="non-negative"):
        build_blending_indices([1, -1], 10)
    with pytest.raises(ValueError, match="all be zero"):
        build_blending_indices([0, 0], 10)


def test_weights_by_num_documents_matches_gpt_neox_formula():
    docs, alpha = [1000, 100, 10], 0.3
    p = np.array(docs) / sum(docs)
    q = p**alpha / np.sum(p**alpha)
    expected = q * (1 - p) / np.sum(q * (1 - p))
    got = weights_by_num_documents(docs, alpha)
    assert np.allclose(got, expected)
    assert abs(sum(got) - 1) < 1e-12
    # alpha < 1 boosts the small datasets above their document share.
    assert got[2] > p[2] and got[0] < p[0]
    assert weights_by_num_documents([42], alpha) == [1.0]
    # alpha = 1 without the (1 - p) factor would be the document share; with it, equal sizes
    # still give equal weights.
    assert np.allclose(weights_by_num_documents([7, 7, 7], 1.0), [1 / 3] * 3)
