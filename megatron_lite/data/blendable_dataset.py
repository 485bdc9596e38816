"""Blending several datasets by weight (GPT-NeoX ``BlendableDataset`` and ``weights_by_num_docs``).

The blend is a deterministic interleaving, no random draws: sample ``k`` of dataset ``d`` is
given the virtual time ``(k + 0.5) / w_d`` and the blend serves samples in order of that time
(ties to the lower dataset index). Over every prefix of ``n`` samples, dataset ``d`` has then
contributed ``n * w_d`` samples to within about one, whatever ``n`` is. GPT-NeoX gets the same
property from a greedy C++ loop over samples ("pick the dataset furthest behind its share"); the
virtual-time order is computed with numpy sorts over windows instead, so no compiled helper is
needed and memory stays bounded for hundreds of millions of samples. The two orders can differ
in which of two nearly-tied datasets goes first.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from megatron_lite.utils.logging import get_logger

logger = get_logger(__name__)

# Virtual-time span sorted at once: about this many blended samples per numpy sort.
_WINDOW = 1 << 20


def normalize_weights(weights: Sequence[float]) -> np.ndarray:
    """Weights as float64 summing to 1; errors on negative, non-finite or all-zero weights."""
    w = np.asarray(list(weights), dtype=np.float64)
    if w.ndim != 1 or len(w) == 0:
        raise ValueError(f"blend weights must be a non-empty list, got {list(weights)}")
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError(f"blend weights must be finite and non-negative, got {list(weights)}")
    total = w.sum()
    if total <= 0:
        raise ValueError(f"blend weights must not all be zero, got {list(weights)}")
    return w / total


def _window_picks(weights: np.ndarray, t0: float, t1: float) -> tuple[np.ndarray, np.ndarray]:
    """(dataset, per-dataset sample number) of the samples whose virtual time is in [t0, t1)."""
    ds, ks, ts = [], [], []
    for d, w in enumerate(weights):
        if w == 0:
            continue
        # k has time (k + 0.5) / w in [t0, t1)  <=>  ceil(t0 * w - 0.5) <= k < ceil(t1 * w - 0.5);
        # the bounds use the same expression at both ends of adjacent windows, so no k is lost
        # or counted twice.
        k = np.arange(math.ceil(t0 * w - 0.5), math.ceil(t1 * w - 0.5), dtype=np.int64)
        ds.append(np.full(len(k), d, dtype=np.int64))
        ks.append(k)
        ts.append((k + 0.5) / w)
    d_all, k_all, t_all = np.concatenate(ds), np.concatenate(ks), np.concatenate(ts)
    order = np.lexsort((d_all, t_all))  # by time, then dataset index
    return d_all[order], k_all[order]


def build_blending_indices(weights: Sequence[float], size: int) -> tuple[np.ndarray, np.ndarray]:
    """For each of ``size`` blended samples: (dataset index, sample number within that dataset).

    Returns ``dataset_index`` [size] (uint8 under 255 datasets, else int16) and
    ``dataset_sample_index`` [size] int64 (sample numbers count up from 0 per dataset).
    """
    w = normalize_weights(weights)
    index_dtype = np.uint8 if len(w) < 255 else np.int16
    dataset_index = np.empty(size, dtype=index_dtype)  # [size]
    dataset_sample_index = np.empty(size, dtype=np.int64)  # [size]
    filled, t0 = 0, 0.0
    while filled < size:
        # Weights sum to 1, so a window of virtual time T holds about T samples.
        t1 = t0 + float(min(_WINDOW, size - filled + 16))
        d, k = _window_picks(w, t0, t1)
        take = min(len(d), size - filled)
        dataset_index[filled:filled + take] = d[:take]
        dataset_sample_index[filled:filled + take] = k[:take]
        filled += take
        t0 = t1
    return dataset_index, dataset_sample_index


def weights_by_num_documents(num_docs: Sequence[int], alpha: float = 0.3) -> list[float]:
    """GPT-NeoX ``weights_by_num_docs``: document-count weights smoothed by ``alpha``.

    With ``p_i = n_i / sum(n)``, the weight is proportional to ``p_i**alpha`` (normalised) times
    ``1 - p_i``; ``alpha < 1`` boosts small datasets (https://arxiv.org/abs/1911.02116). Kept
    exactly as GPT-NeoX computes it, ``1 - p_i`` factor included, so configs blend the same.
    """
    if len(num_docs) == 0:
        raise ValueError("weights_by_num_documents needs at least one dataset")
    if len(num_docs) == 1:
        return [1.0]
    total = float(sum(num_docs))
    if total <= 0 or any(n < 0 for n in num_docs):
        raise ValueError(f"document counts must be non-negative and not all zero, got {list(num_docs)}")
    p = [n / total for n in num_docs]
    probs = [x**alpha for x in p]
    probs = [x / sum(probs) for x in probs]
    weights = [a * (1.0 - b) for a, b in zip(probs, p)]
    return [x / sum(weights) for x in weights]


class BlendableDataset(torch.utils.data.Dataset):
    """Datasets interleaved so that each one's share of any long prefix follows its weight.

    ``size`` defaults to the sum of the datasets' lengths (GPT-NeoX). A dataset asked for more
    samples than it has wraps around (sample ``k`` is its ``k % len`` -th), as GPT-NeoX does.
    """

    def __init__(self, datasets: Sequence[Any], weights: Sequence[float], size: int | None = None) -> None:
        if len(datasets) != len(weights):
            raise ValueError(f"{len(datasets)} datasets but {len(weights)} weights")
        if any(len(ds) == 0 for ds in datasets):
            raise ValueError("cannot blend an empty dataset")
        self.datasets = list(datasets)
        self.weights = normalize_weights(weights)
        self.size = int(sum(len(ds) for ds in datasets)) if size is None else int(size)
        start = time.time()
        self.dataset_index, self.dataset_sample_index = build_blending_indices(self.weights, self.size)
        logger.info("blended %d datasets (weights %s) into %d samples in %.2f s",
                    len(self.datasets), np.round(self.weights, 4).tolist(), self.size,
                    time.time() - start)

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, idx: int) -> dict[str, np.ndarray]:
        if not 0 <= idx < self.size:
            raise IndexError(f"blended sample {idx} out of range [0, {self.size})")
        dataset = self.datasets[int(self.dataset_index[idx])]
        return dataset[int(self.dataset_sample_index[idx]) % len(dataset)]
