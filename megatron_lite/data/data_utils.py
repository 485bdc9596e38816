"""Train/valid/test datasets from the data config, with GPT-NeoX's rules.

Two ways to name the data (GPT-NeoX's): ``data_path`` (one dataset prefix whose documents are cut
into train/valid/test by ``split``), or ``train_data_paths`` / ``valid_data_paths`` /
``test_data_paths`` (lists of prefixes, each list blended by its ``*_data_weights``, equal weights
when unset, or by document counts with ``weight_by_num_documents``). Separate paths win when both
are given. ``train_label_data_paths`` (and valid/test) name label datasets parallel to the data
paths, -100 marking tokens without loss.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from megatron_lite.config.schema import DataConfig
from megatron_lite.config.validators import split_paths
from megatron_lite.data.blendable_dataset import BlendableDataset, weights_by_num_documents
from megatron_lite.data.gpt_dataset import GPT2Dataset
from megatron_lite.data.splits import (
    normalized_weights_and_num_samples,
    open_indexed_dataset,
    split_boundaries,
)
from megatron_lite.data.unpacked import build_unpacked_datasets
from megatron_lite.utils.logging import get_logger

logger = get_logger(__name__)

SPLIT_NAMES = ("train", "valid", "test")


def train_valid_test_num_samples(
    train_iters: int, eval_interval: int, eval_iters: int, global_batch_size: int
) -> tuple[int, int, int]:
    """Samples each split must provide, as GPT-NeoX computes them.

    Validation runs ``eval_iters`` batches every ``eval_interval`` steps and once more at the end;
    the test split is evaluated once.
    """
    eval_total = (train_iters // eval_interval + 1) * eval_iters
    return (
        train_iters * global_batch_size,
        eval_total * global_batch_size,
        eval_iters * global_batch_size,
    )


def _build_blend(
    cfg: DataConfig, split: str, num_samples: int | None, seq_length: int, seed: int,
    vocab_size: int | None, **kwargs: Any
) -> Any:
    """One split of separate paths: a GPT2Dataset per path, blended when there are several."""
    paths, label_paths, weights = split_paths(cfg, split)
    if not paths:
        return None
    data = [open_indexed_dataset(p, f"{split}_data_paths", vocab_size) for p in paths]
    labels = [open_indexed_dataset(p, f"{split}_label_data_paths") for p in label_paths] if label_paths else None
    if cfg.weight_by_num_documents:
        alpha = float(cfg.weighted_sampler_alpha)
        # GPT-NeoX counts the items of the .idx (one per document as preprocess_data writes them).
        weights = weights_by_num_documents([len(ds.sizes) for ds in data], alpha)
        logger.info("%s weights by number of documents (alpha %s): %s", split, alpha, weights)
    weights, budgets = normalized_weights_and_num_samples(weights, num_samples)
    if label_paths:
        logger.info("%s labels (-100 = no loss) from %s", split, ", ".join(label_paths))
    datasets = []
    for i, (prefix, ds) in enumerate(zip(paths, data)):
        datasets.append(GPT2Dataset(
            f"{split}_{i}", prefix, np.arange(len(ds.sizes)), ds, budgets[i], seq_length, seed,
            num_epochs=None if num_samples is not None else 1,
            label_dataset=labels[i] if labels else None, **kwargs,
        ))
    if len(datasets) == 1:
        return datasets[0]
    return BlendableDataset(datasets, weights)


def _build_split_datasets(
    cfg: DataConfig, seq_length: int, seed: int, num_samples: Sequence[int | None],
    vocab_size: int | None, **kwargs: Any
) -> tuple[Any, Any, Any]:
    """``data_path`` cut by ``split`` into contiguous document ranges."""
    prefix = cfg.data_path
    data = open_indexed_dataset(prefix, "data_path", vocab_size)
    split = cfg.split
    bounds = split_boundaries(split, len(data.sizes))
    result = []
    for i, name in enumerate(SPLIT_NAMES):
        start, stop = bounds[i], bounds[i + 1]
        logger.info("%s split of %s: documents [%d, %d), %d documents", name, prefix, start, stop, stop - start)
        if stop <= start:
            if num_samples[i]:
                logger.warning("split %r leaves the %s split of %s empty (%d documents in all)",
                               split, name, prefix, len(data.sizes))
            result.append(None)
            continue
        n = num_samples[i]
        result.append(GPT2Dataset(name, prefix, np.arange(start, stop), data, n, seq_length, seed,
                                  num_epochs=None if n is not None else 1, **kwargs))
    return tuple(result)


def build_train_valid_test_datasets(
    data_cfg: DataConfig,
    seq_length: int,
    seed: int,
    num_samples: tuple[int | None, int | None, int | None],
    *,
    cache_dir: str | None = None,
    group: Any = None,
    vocab_size: int | None = None,
) -> tuple[Any, Any, Any]:
    """(train, valid, test) datasets; a split without data is None.

    ``num_samples`` is what :func:`train_valid_test_num_samples` returns; an entry of None builds
    exactly one epoch of that split instead (``train_epochs``). Under torch.distributed every rank
    of ``group`` (default: the world) must call this: rank 0 builds the index caches, the others
    wait. ``vocab_size``: token ids must be below it (checked as each dataset opens).
    ``cache_dir`` (default: ``data_cache_dir``) puts the cached index files there instead of
    next to the data.
    """
    if data_cfg.pack_impl == "unpacked" or data_cfg.dataset_impl == "pairwise":
        # One document per sample (DPO, KTO, reward models, unpacked fine-tuning): data/unpacked.py.

        return build_unpacked_datasets(data_cfg, seq_length, seed, num_samples, vocab_size)
    kwargs = {"cache_dir": cache_dir or data_cfg.data_cache_dir, "group": group}
    if split_paths(data_cfg, "train")[0]:
        return tuple(
            _build_blend(data_cfg, split, num_samples[i], seq_length, seed, vocab_size, **kwargs)
            for i, split in enumerate(SPLIT_NAMES)
        )
    if data_cfg.data_path:
        return _build_split_datasets(data_cfg, seq_length, seed, num_samples, vocab_size, **kwargs)
    raise ValueError("no training data: set data_path (split by `split`) or train_data_paths")
