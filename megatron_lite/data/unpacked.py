"""One document per sample (GPT-NeoX ``pack_impl: unpacked``): the data of DPO, KTO and reward
models, and of unpacked fine-tuning.

A sample is one document, cut to ``seq_length + 1`` tokens or padded to it (tokens with -100,
which the batch step replaces by a valid id and masks; labels with -100), read from several
indexed datasets that run parallel to each other, document for document:

    pairwise (dataset_impl: pairwise)  {"pos", "pos_label", "neg", "neg_label"}   pair i = record i
    KTO                                {"text", "label", "reward"}                reward: one number
    unpacked fine-tuning               {"text", "label"}
    precomputed reference log-probs    + "pos_ref"/"neg_ref" or "ref" (float per token)

The order is GPT-NeoX's: ``num_samples`` slots shuffled with ``RandomState(seed)``, slot ``k``
serving document ``k % documents``, so each document is served ``num_samples / documents``
times (to within one) over the run, in an order shuffled across epochs. GPT-NeoX also
appends the next document's first token to each sample; that token is never a target the
prompt mask lets through, and it is left out here.

Bad records are errors naming the config key, the file and the record, checked when the
dataset is built: a document longer than ``seq_length + 1`` without ``allow_chopped`` (GPT-NeoX
silently skips it), a document whose label tokens all lie beyond ``seq_length`` (a prompt longer
than the context: nothing to train on; GPT-NeoX skips it too), parallel files that disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from megatron_lite.config.schema import DataConfig
from megatron_lite.data.blendable_dataset import BlendableDataset, weights_by_num_documents
from megatron_lite.data.gpt_dataset import IndexedTokens
from megatron_lite.data.splits import (
    normalized_weights_and_num_samples,
    open_indexed_dataset,
    split_boundaries,
)
from megatron_lite.utils.logging import get_logger

logger = get_logger(__name__)

TOKEN_FIELDS = ("text", "pos", "neg")
LABEL_FIELDS = ("label", "pos_label", "neg_label")
REF_FIELDS = ("ref", "pos_ref", "neg_ref")
# The token field whose document sizes a per-token field must repeat.
_DOCUMENT_OF = {"label": "text", "ref": "text", "pos_label": "pos", "pos_ref": "pos",
                "neg_label": "neg", "neg_ref": "neg"}
IGNORE = -100


@dataclass
class Source:
    """One indexed dataset feeding one sample field; ``key`` is the config key that named it."""

    field: str
    key: str
    prefix: str
    data: IndexedTokens


def _where(source: Source, record: int) -> str:
    return f"{source.key}: {source.prefix}.bin, record {record}"


def _first(bad: np.ndarray) -> tuple[int, int]:
    """(first index where ``bad``, how many more)."""
    where = np.flatnonzero(bad)
    return int(where[0]), len(where) - 1


def _check_parallel(sources: list[Source]) -> None:
    """Same number of records everywhere; same sizes where a field follows a token field."""
    base = sources[0]
    sizes = {s.field: s.data.sizes for s in sources}
    for s in sources[1:]:
        if len(s.data.sizes) != len(base.data.sizes):
            raise ValueError(f"{s.key}: {s.prefix} has {len(s.data.sizes)} records but {base.key}: "
                             f"{base.prefix} has {len(base.data.sizes)}; they must run parallel")
        partner = _DOCUMENT_OF.get(s.field)
        bad = sizes[partner] != s.data.sizes if partner in sizes else s.data.sizes < 1
        if bad.any():
            record, _ = _first(bad)
            what = f"its document has {sizes[partner][record]}" if partner in sizes else "a reward needs 1"
            raise ValueError(f"{_where(s, record)} has {s.data.sizes[record]} items but {what}")


def _check_records(sources: list[Source], documents: np.ndarray, seq_length: int, allow_chopped: bool) -> None:
    """No document too long (without allow_chopped); every document has a target in the window."""
    window = seq_length + 1
    for s in sources:
        if s.field not in TOKEN_FIELDS:
            continue
        long = s.data.sizes[documents] > window
        if long.any() and not allow_chopped:
            i, more = _first(long)
            record = int(documents[i])
            raise ValueError(f"{_where(s, record)} has {s.data.sizes[record]} tokens, more than "
                             f"seq_length + 1 = {window}{f' (and {more} more)' if more else ''}: set "
                             "allow_chopped: true to cut such documents, or leave them out of the data")
    for s in sources:
        if s.field in LABEL_FIELDS:
            for record in documents:
                label = s.data.get(int(record), length=min(int(s.data.sizes[record]), window))
                if not np.any(label[1:] >= 0):  # the targets are label[1:]
                    raise ValueError(f"{_where(s, int(record))} has no label token within the first "
                                     f"{window} tokens (a prompt longer than seq_length {seq_length}?): "
                                     "nothing to train on; shorten it or raise seq_length")


class UnpackedDataset(torch.utils.data.Dataset):
    """Samples of one document each, over the parallel ``sources`` (module docstring).

    ``dataset[i]`` maps each source's field to int64 [seq_length + 1] (tokens, labels), float32
    [seq_length + 1] (reference log-probabilities) or a float32 scalar (``reward``).
    ``num_samples=None`` serves ``num_epochs`` passes over ``documents``.
    """

    def __init__(self, name: str, sources: list[Source], documents: np.ndarray, num_samples: int | None,
                 seq_length: int, seed: int, *, num_epochs: int | None = None, allow_chopped: bool = True) -> None:
        documents = np.asarray(documents, dtype=np.int64)
        if len(documents) == 0:
            raise ValueError(f"{name}: {sources[0].key}: {sources[0].prefix} has no documents")
        _check_parallel(sources)
        _check_records(sources, documents, seq_length, allow_chopped)
        if num_samples is None:
            if num_epochs is None:
                raise ValueError(f"{name}: give num_samples or num_epochs")
            num_samples = num_epochs * len(documents)
        self.name, self.sources, self.seq_length = name, sources, seq_length
        self.documents = documents
        # GPT-NeoX's draw: a shuffled arange(num_samples), slot k serving document k % n.
        order = np.arange(num_samples, dtype=np.int64)  # [num_samples]
        np.random.RandomState(seed=seed).shuffle(order)
        self.order = order % len(documents)
        logger.info("%s: %d documents, %d samples of up to %d tokens (one document each)",
                    name, len(documents), num_samples, seq_length + 1)

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, idx: int) -> dict[str, np.ndarray]:
        if not 0 <= idx < len(self):
            raise IndexError(f"{self.name}: sample {idx} out of range [0, {len(self)})")
        record = int(self.documents[self.order[idx]])
        return {s.field: self._read(s, record) for s in self.sources}

    def _read(self, source: Source, record: int) -> np.ndarray:
        window = self.seq_length + 1
        if source.field == "reward":
            return np.asarray(source.data.get(record, length=1)[0], dtype=np.float32)  # one per document
        values = source.data.get(record, length=min(int(source.data.sizes[record]), window))
        if source.field in REF_FIELDS:
            out: np.ndarray = np.zeros(window, dtype=np.float32)
        else:
            out = np.full(window, IGNORE, dtype=np.int64)
        out[: len(values)] = values
        return out


# --------------------------------------------------------------------------------------------
# Building the splits from the data config.
# --------------------------------------------------------------------------------------------

SPLITS = ("train", "valid", "test")
_REF_OF = {"text": "ref", "pos": "pos_ref", "neg": "neg_ref"}


def _paths(cfg: DataConfig, key: str) -> list[str]:
    value = getattr(cfg, key)
    return [] if value is None else [value] if isinstance(value, str) else list(value)


def _split_keys(cfg: DataConfig, split: str) -> dict[str, str]:
    """Sample field -> config key naming its datasets, for one split."""
    if cfg.dataset_impl == "pairwise":
        return {"pos": f"pos_{split}_data_paths", "pos_label": f"pos_{split}_label_data_paths",
                "neg": f"neg_{split}_data_paths", "neg_label": f"neg_{split}_label_data_paths"}
    return {"text": f"{split}_data_paths", "label": f"{split}_label_data_paths",
            "reward": f"{split}_reward_data_paths"}


def split_sources(cfg: DataConfig, split: str, vocab_size: int | None = None) -> list[list[Source]]:
    """The parallel sources of every dataset path of ``split`` (empty: no data for it)."""
    keys = _split_keys(cfg, split)
    lists = {field: _paths(cfg, key) for field, key in keys.items()}
    main_field = next(iter(keys))
    count = len(lists[main_field])
    for field, paths in lists.items():
        if paths and len(paths) != count:
            raise ValueError(f"{keys[field]} has {len(paths)} entries but {keys[main_field]} has "
                             f"{count}: give one per data path")
    result = []
    for i in range(count):
        sources = [Source(field, keys[field], paths[i],
                          open_indexed_dataset(paths[i], keys[field], vocab_size if field in TOKEN_FIELDS else None))
                   for field, paths in lists.items() if paths]
        if cfg.precompute_model_name:  # GPT-NeoX's names: <data prefix>_<model name>
            for s in [s for s in sources if s.field in _REF_OF]:
                prefix = f"{s.prefix}_{cfg.precompute_model_name}"
                sources.append(Source(_REF_OF[s.field], "precompute_model_name", prefix,
                                      open_indexed_dataset(prefix, "precompute_model_name")))
        result.append(sources)
    return result


def _weights(cfg: DataConfig, split: str, per_path: list[list[Source]]) -> list[float]:
    if cfg.weight_by_num_documents:
        return weights_by_num_documents([len(s[0].data.sizes) for s in per_path], float(cfg.weighted_sampler_alpha))
    given = _paths(cfg, f"{split}_data_weights")
    return [float(w) for w in given] if len(given) == len(per_path) else [1.0] * len(per_path)


def build_unpacked_datasets(cfg: DataConfig, seq_length: int, seed: int,
                            num_samples: tuple[int | None, int | None, int | None],
                            vocab_size: int | None = None) -> tuple[Any, Any, Any]:
    """(train, valid, test) of one-document samples for ``pack_impl: unpacked`` (pairwise, KTO,
    fine-tuning); ``data_path`` is cut by ``split`` as for packed data."""
    if cfg.dataset_impl != "pairwise" and not cfg.train_data_paths and cfg.data_path:
        return _build_from_data_path(cfg, seq_length, seed, num_samples, vocab_size)
    result: list[Any] = []
    for i, split in enumerate(SPLITS):
        per_path = split_sources(cfg, split, vocab_size)
        if not per_path:
            result.append(None)
            continue
        weights, budgets = normalized_weights_and_num_samples(_weights(cfg, split, per_path), num_samples[i])
        datasets = [UnpackedDataset(f"{split}_{j}", sources, np.arange(len(sources[0].data.sizes)), budgets[j],
                                    seq_length, seed, num_epochs=None if num_samples[i] is not None else 1,
                                    allow_chopped=cfg.allow_chopped)
                    for j, sources in enumerate(per_path)]
        result.append(datasets[0] if len(datasets) == 1 else BlendableDataset(datasets, weights))
    return tuple(result)


def _build_from_data_path(cfg: DataConfig, seq_length: int, seed: int,
                          num_samples: tuple[int | None, int | None, int | None],
                          vocab_size: int | None) -> tuple[Any, Any, Any]:
    source = Source("text", "data_path", cfg.data_path, open_indexed_dataset(cfg.data_path, "data_path", vocab_size))
    bounds = split_boundaries(cfg.split, len(source.data.sizes))
    result: list[Any] = []
    for i, split in enumerate(SPLITS):
        if bounds[i + 1] <= bounds[i]:
            result.append(None)
            continue
        n = num_samples[i]
        result.append(UnpackedDataset(split, [source], np.arange(bounds[i], bounds[i + 1]), n, seq_length, seed,
                                      num_epochs=None if n is not None else 1, allow_chopped=cfg.allow_chopped))
    return tuple(result)
