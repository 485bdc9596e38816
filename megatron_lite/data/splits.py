"""What a split reads, shared by the packed (``data_utils.py``) and unpacked (``unpacked.py``)
dataset builders: opened ``.bin/.idx`` prefixes (with the checks that name the config key), the
document boundaries of ``split``, and normalized blend weights with their sample budgets."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

from megatron_lite.config.validators import parse_split
from megatron_lite.data.indexed_dataset import MMapIndexedDataset


def split_boundaries(split: str, num_documents: int) -> list[int]:
    """Document boundaries [0, a, b, num_documents] of train/valid/test (GPT-NeoX rounding)."""
    bounds = [0]
    for fraction in parse_split(split):
        bounds.append(bounds[-1] + int(round(fraction * float(num_documents))))
    # Rounding can overshoot or undershoot by a document: GPT-NeoX shifts every boundary after
    # the first by the difference, so the test split absorbs it.
    diff = bounds[-1] - num_documents
    bounds = [bounds[0]] + [b - diff for b in bounds[1:]]
    return bounds


def open_indexed_dataset(prefix: str, what: str = "data_path", vocab_size: int | None = None) -> MMapIndexedDataset:
    """Open ``prefix``.bin/.idx, or fail naming the config key and the missing file; with
    ``vocab_size``, a token id the model has no row for is an error naming the dataset (on a GPU
    it would be a device-side assert in the embedding, far from its cause)."""
    missing = [p for p in (prefix + ".bin", prefix + ".idx") if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError(
            f"{what}: dataset prefix {prefix!r} not found (missing {', '.join(missing)}); give the "
            "prefix without .bin/.idx, as written by tools/preprocess_data.py "
            "(e.g. data/corpus_text_document)"
        )
    data = MMapIndexedDataset(prefix)
    found = data.first_token_at_least(vocab_size) if vocab_size else None
    if found is not None:
        raise ValueError(f"{what}: {prefix}.bin holds token id {found[1]} (sequence {found[0]}), but the "
                         f"model's vocabulary has {vocab_size} rows (padded_vocab_size): was it "
                         "tokenized with another tokenizer?")
    return data


def normalized_weights_and_num_samples(
    weights: Sequence[float], num_samples: int | None
) -> tuple[list[float], list[int | None]]:
    """Weights summing to 1 and each dataset's sample budget (GPT-NeoX: 0.5% headroom)."""
    total = float(sum(weights))
    if total <= 0 or any(w < 0 for w in weights):
        raise ValueError(f"data weights must be non-negative and not all zero, got {list(weights)}")
    norm = [w / total for w in weights]
    if num_samples is None:
        return norm, [None] * len(norm)
    # The 1.005 leaves room for the blend's rounding so no dataset runs short.
    return norm, [int(math.ceil(num_samples * w * 1.005)) for w in norm]
