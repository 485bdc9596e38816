"""GPT samples over an indexed dataset, with GPT-NeoX ``GPT2Dataset`` semantics.

The documents of one split are laid end to end (in a shuffled order, repeated for as many epochs
as the requested number of samples needs) into one virtual token stream. Sample ``k`` is the
``seq_length + 1`` tokens ``stream[k * seq_length : (k + 1) * seq_length + 1]``: consecutive
samples overlap by one token, so every token of the stream is an *input* exactly once and a
*label* exactly once. Three index arrays describe this, exactly as GPT-NeoX builds them (same
seed, same arrays):

- ``doc_idx`` [epochs * docs] int32: the shuffled order of documents in the stream;
- ``sample_idx`` [num_samples + 1, 2]: for each sample boundary, (index into ``doc_idx``, token
  offset in that document) of the boundary token;
- ``shuffle_idx`` [num_samples]: the order in which samples are served.

GPT-NeoX builds ``sample_idx`` with a C++ loop over samples; here it is a ``searchsorted`` over
the cumulative document lengths, which gives the same array without compiling anything.

The arrays are cached as ``.npy`` next to the data (or in ``cache_dir``), the file name keyed by
everything they depend on, written atomically, and built by one rank while the others wait.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import torch

from megatron_lite.utils.logging import get_logger

logger = get_logger(__name__)

# Bump when the index-building algorithm changes: it is part of the cache key, so stale caches
# written by an older version are never reused.
INDEX_FORMAT_VERSION = 1


class IndexedTokens(Protocol):
    """What GPT2Dataset needs from an indexed dataset (``MMapIndexedDataset`` has it)."""

    sizes: np.ndarray

    def get(self, idx: int, offset: int = 0, length: int | None = None) -> np.ndarray: ...


# --------------------------------------------------------------------------------------------
# Pure index builders (no I/O).
# --------------------------------------------------------------------------------------------


def num_tokens(documents: np.ndarray, sizes: np.ndarray) -> int:
    """Tokens in one epoch of ``documents``."""
    return int(np.sum(sizes[documents], dtype=np.int64))


def num_epochs_needed(tokens_per_epoch: int, seq_length: int, num_samples: int) -> int:
    """The fewest epochs whose tokens hold ``num_samples`` samples (GPT-NeoX ``_num_epochs``).

    ``E`` epochs hold ``(E * tokens - 1) // seq_length`` samples: each sample takes
    ``seq_length + 1`` tokens but shares its last token with the next sample's first, and the
    very last sample has no successor (hence the ``- 1``). Solved in closed form, not by looping.
    """
    if tokens_per_epoch <= 0:
        raise ValueError("cannot build samples from documents with zero tokens in total")
    if seq_length <= 0:
        raise ValueError(f"seq_length must be positive, got {seq_length}")
    needed = num_samples * seq_length + 1
    return max(1, -(-needed // tokens_per_epoch))


def build_doc_idx(documents: np.ndarray, num_epochs: int, rng: np.random.RandomState) -> np.ndarray:
    """``num_epochs`` copies of ``documents`` shuffled together (GPT-NeoX ``_build_doc_idx``)."""
    doc_idx = np.tile(np.asarray(documents, dtype=np.int32), num_epochs)  # [epochs * docs]
    rng.shuffle(doc_idx)
    return doc_idx


def build_sample_idx(
    sizes: np.ndarray, doc_idx: np.ndarray, seq_length: int, num_epochs: int, tokens_per_epoch: int
) -> np.ndarray:
    """Sample boundaries as (index into doc_idx, offset in document), vectorised.

    Boundary ``k`` is stream position ``k * seq_length``: the last token of sample ``k - 1`` and
    the first of sample ``k``. It lies in the document whose [start, end) span contains it, which
    is what GPT-NeoX's loop computes (a sample ending exactly at a document end points at that
    document's last token, not at the next document's first).
    """
    n_samples = (num_epochs * tokens_per_epoch - 1) // seq_length
    doc_lengths = sizes[doc_idx].astype(np.int64)  # [epochs * docs]
    doc_ends = np.cumsum(doc_lengths)  # [epochs * docs], exclusive end of each document
    positions = np.arange(n_samples + 1, dtype=np.int64) * seq_length  # [n + 1]
    # side="right": the first document whose end is beyond the position; empty documents
    # (end == start) are skipped, as the loop does.
    which = np.searchsorted(doc_ends, positions, side="right")  # [n + 1]
    offsets = positions - (doc_ends[which] - doc_lengths[which])  # [n + 1]
    dtype = np.int32 if len(doc_idx) < np.iinfo(np.int32).max else np.int64
    sample_idx = np.empty((n_samples + 1, 2), dtype=dtype)  # [n + 1, 2]
    sample_idx[:, 0] = which
    sample_idx[:, 1] = offsets
    # GPT-NeoX always starts at (0, 0), even before leading empty documents; same content.
    sample_idx[0] = 0
    return sample_idx


def build_shuffle_idx(size: int, rng: np.random.RandomState) -> np.ndarray:
    """A permutation of ``range(size)`` (uint32 while it fits, as GPT-NeoX)."""
    dtype = np.uint32 if size < np.iinfo(np.uint32).max - 1 else np.int64
    shuffle_idx = np.arange(size, dtype=dtype)  # [size]
    rng.shuffle(shuffle_idx)
    return shuffle_idx


def build_index_arrays(
    documents: np.ndarray, sizes: np.ndarray, num_epochs: int, seq_length: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """doc_idx, sample_idx, shuffle_idx for one split; same values as GPT-NeoX for the seed."""
    # One RandomState drawn in GPT-NeoX's order (doc_idx first, then shuffle_idx) so that the
    # same seed serves the same samples as GPT-NeoX.
    rng = np.random.RandomState(seed=seed)
    tokens_per_epoch = num_tokens(documents, sizes)
    doc_idx = build_doc_idx(documents, num_epochs, rng)
    sample_idx = build_sample_idx(sizes, doc_idx, seq_length, num_epochs, tokens_per_epoch)
    shuffle_idx = build_shuffle_idx(sample_idx.shape[0] - 1, rng)
    return doc_idx, sample_idx, shuffle_idx


# --------------------------------------------------------------------------------------------
# Cache files: naming, atomic writes, one builder per group.
# --------------------------------------------------------------------------------------------


def index_cache_key(
    documents: np.ndarray, sizes: np.ndarray, num_epochs: int, seq_length: int, seed: int
) -> str:
    """A short hash of everything the index arrays depend on.

    The document sizes are hashed too, so re-preprocessing the data under the same prefix never
    picks up a cache built for the old tokens.
    """
    h = hashlib.blake2b(digest_size=8)
    h.update(f"v{INDEX_FORMAT_VERSION}|e{num_epochs}|sl{seq_length}|s{seed}|".encode())
    docs = np.ascontiguousarray(documents, dtype=np.int64)
    first = int(docs[0]) if len(docs) else 0
    if np.array_equal(docs, np.arange(first, first + len(docs))):
        # The usual split case: a document range, whose sizes are a view (no copy to hash).
        h.update(f"range({first},{first + len(docs)})|".encode())
        doc_sizes = sizes[first:first + len(docs)]
    else:
        h.update(memoryview(docs))
        doc_sizes = sizes[docs]
    h.update(memoryview(np.ascontiguousarray(doc_sizes)))
    return h.hexdigest()


def index_cache_paths(
    data_prefix: str,
    name: str,
    documents: np.ndarray,
    sizes: np.ndarray,
    num_samples: int | None,
    num_epochs: int,
    seq_length: int,
    seed: int,
    cache_dir: str | None = None,
) -> dict[str, str]:
    """Paths of the three cached arrays: ``{prefix}_{name}_indexmap_..._{kind}_idx.npy``."""
    base = data_prefix if cache_dir is None else os.path.join(cache_dir, os.path.basename(data_prefix))
    first, stop = (int(documents[0]), int(documents[-1]) + 1) if len(documents) else (0, 0)
    key = index_cache_key(documents, sizes, num_epochs, seq_length, seed)
    stem = (
        f"{base}_{name}_indexmap_{num_samples}ns_{seq_length}sl_{seed}s"
        f"_{first}-{stop}docs_{num_epochs}ep_{key}"
    )
    return {kind: f"{stem}_{kind}_idx.npy" for kind in ("doc", "sample", "shuffle")}


def save_npy_atomic(path: str, array: np.ndarray) -> None:
    """``np.save`` to a temporary file in the same directory, then rename into place.

    A crash or a concurrent reader never sees a half-written file, and two ranks writing the
    same (deterministic) array at once both leave a complete file behind.
    """
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp_" + os.path.basename(path), suffix=".npy", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, array, allow_pickle=False)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _dist_rank(group: Any) -> int | None:
    """This process's rank in ``group``, or None when torch.distributed is not in use."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return None
    return torch.distributed.get_rank(group=group)


IndexBuilder = Callable[[], tuple[np.ndarray, np.ndarray, np.ndarray]]


def _build_and_save(paths: dict[str, str], build: IndexBuilder) -> None:
    start = time.time()
    arrays = dict(zip(("doc", "sample", "shuffle"), build()))
    # shuffle_idx goes last: the existence of all three files is what marks the cache complete.
    for kind in ("doc", "sample", "shuffle"):
        try:
            os.makedirs(os.path.dirname(os.path.abspath(paths[kind])), exist_ok=True)
            save_npy_atomic(paths[kind], arrays[kind])
        except OSError as exc:  # a read-only data directory, a full disk: name the key to set
            directory = os.path.dirname(os.path.abspath(paths[kind]))
            raise ValueError(f"cannot write the sample index cache in {directory} ({exc.strerror}): "
                             "set data_cache_dir to a writable directory") from None
    logger.info("built index mappings in %.2f s: %s", time.time() - start, paths["shuffle"])


def load_or_build_index(
    paths: dict[str, str], build: IndexBuilder, group: Any = None
) -> tuple[dict[str, np.ndarray], bool]:
    """Load the cached arrays, building them first if needed; returns (arrays, built_here).

    Under torch.distributed, rank 0 of ``group`` builds while the others wait at a barrier; every
    rank of ``group`` must call this. A rank that still finds no files after the barrier (data on
    a node-local disk) builds its own copy: the arrays are deterministic, so every copy is equal.
    """
    def complete() -> bool:
        return all(os.path.isfile(p) for p in paths.values())

    built = False
    error: BaseException | None = None
    rank = _dist_rank(group)
    if rank is None or rank == 0:
        if not complete():
            logger.info("index mappings not cached, building: %s", paths["shuffle"])
            try:
                _build_and_save(paths, build)
                built = True
            except Exception as exc:  # still reach the barrier so the other ranks do not hang
                if rank is None:
                    raise
                error = exc
    if rank is not None:
        torch.distributed.barrier(group=group)
        if error is not None:
            raise error
        if not complete():
            logger.warning("index mappings not visible after rank 0 built them (no shared file "
                           "system?); building a local copy: %s", paths["shuffle"])
            _build_and_save(paths, build)
            built = True
    # mmap: many ranks and DataLoader workers share the pages instead of copying the arrays.
    arrays = {kind: np.load(p, mmap_mode="r", allow_pickle=False) for kind, p in paths.items()}
    return arrays, built


# --------------------------------------------------------------------------------------------
# The dataset.
# --------------------------------------------------------------------------------------------


class GPT2Dataset(torch.utils.data.Dataset):
    """Samples of ``seq_length + 1`` tokens packed across the documents of one split.

    ``dataset[i]`` is ``{"text": int64 [seq_length + 1]}``, plus ``"label"`` (same shape; -100
    marks tokens without loss) when a ``label_dataset`` parallel to ``indexed_dataset`` is given.
    ``num_samples=None`` with ``num_epochs`` set serves exactly that many epochs (``train_epochs``).
    """

    def __init__(
        self,
        name: str,
        data_prefix: str,
        documents: np.ndarray,
        indexed_dataset: IndexedTokens,
        num_samples: int | None,
        seq_length: int,
        seed: int,
        *,
        num_epochs: int | None = None,
        label_dataset: IndexedTokens | None = None,
        cache_dir: str | None = None,
        group: Any = None,
    ) -> None:
        documents = np.asarray(documents, dtype=np.int64)
        sizes = indexed_dataset.sizes
        if len(documents) == 0:
            raise ValueError(f"{name} split of {data_prefix} has no documents")
        if documents.min() < 0 or documents.max() >= len(sizes):
            raise ValueError(f"{name}: document ids outside [0, {len(sizes)}) for {data_prefix}")
        if label_dataset is not None and not np.array_equal(label_dataset.sizes, sizes):
            raise ValueError(f"{name}: the label dataset's document sizes differ from {data_prefix}'s")
        label_dtype = getattr(label_dataset, "dtype", None)
        if label_dtype is not None and np.dtype(label_dtype).kind == "u":
            logger.warning("%s: the label dataset is stored as %s, which cannot hold -100: no "
                           "token will be masked (write label files with a signed dtype)",
                           name, np.dtype(label_dtype))
        if num_samples is None and num_epochs is None:
            raise ValueError(f"{name}: give num_samples or num_epochs")
        self.name = name
        self.indexed_dataset = indexed_dataset
        self.label_dataset = label_dataset
        self.seq_length = seq_length
        self.tokens_per_epoch = num_tokens(documents, sizes)
        if num_epochs is None:
            num_epochs = num_epochs_needed(self.tokens_per_epoch, seq_length, num_samples)
        self.num_epochs = num_epochs
        self.cache_paths = index_cache_paths(data_prefix, name, documents, sizes, num_samples,
                                             num_epochs, seq_length, seed, cache_dir)

        def build() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            return build_index_arrays(documents, sizes, num_epochs, seq_length, seed)

        arrays, self.built_index = load_or_build_index(self.cache_paths, build, group)
        self.doc_idx = arrays["doc"]  # [epochs * docs]
        self.sample_idx = arrays["sample"]  # [n + 1, 2]
        self.shuffle_idx = arrays["shuffle"]  # [n]
        logger.info("%s: %d documents, %d tokens/epoch, %d epochs, %d samples of %d tokens",
                    name, len(documents), self.tokens_per_epoch, num_epochs, len(self), seq_length + 1)

    def __len__(self) -> int:
        return self.sample_idx.shape[0] - 1

    def _read(self, dataset: IndexedTokens, k: int) -> np.ndarray:
        """Tokens of (unshuffled) sample ``k`` from ``dataset``: [seq_length + 1]."""
        doc_f, off_f = (int(v) for v in self.sample_idx[k])
        doc_l, off_l = (int(v) for v in self.sample_idx[k + 1])
        if doc_f == doc_l:
            return dataset.get(int(self.doc_idx[doc_f]), offset=off_f, length=off_l - off_f + 1)
        parts = [dataset.get(int(self.doc_idx[doc_f]), offset=off_f)]
        parts.extend(dataset.get(int(self.doc_idx[j])) for j in range(doc_f + 1, doc_l))
        parts.append(dataset.get(int(self.doc_idx[doc_l]), length=off_l + 1))
        return np.concatenate(parts)

    def __getitem__(self, idx: int) -> dict[str, np.ndarray]:
        if not 0 <= idx < len(self):
            raise IndexError(f"{self.name}: sample {idx} out of range [0, {len(self)})")
        k = int(self.shuffle_idx[idx])
        sample = {"text": np.asarray(self._read(self.indexed_dataset, k), dtype=np.int64)}
        if self.label_dataset is not None:
            sample["label"] = np.asarray(self._read(self.label_dataset, k), dtype=np.int64)
        return sample


def train_iters_from_epochs(num_train_samples: int, train_epochs: int, global_batch_size: int) -> int:
    """Optimizer steps that make ``train_epochs`` passes over a one-epoch training dataset.

    Rounded down so that no sample is seen more than ``train_epochs`` times (GPT-NeoX's rule);
    ``num_train_samples`` is ``len(train_dataset)`` built with ``num_epochs=1``.
    """
    if train_epochs <= 0 or global_batch_size <= 0:
        raise ValueError(f"train_epochs ({train_epochs}) and global batch ({global_batch_size}) must be positive")
    iters = (num_train_samples * train_epochs) // global_batch_size
    if iters == 0:
        raise ValueError(
            f"{train_epochs} epoch(s) of {num_train_samples} samples is less than one global batch "
            f"of {global_batch_size}: use more data or a smaller batch"
        )
    return iters
