"""GPT-NeoX / Megatron-LM ``MMapIndexedDataset`` (v1): reader and writer, byte for byte.

``PREFIX.bin`` holds the tokens of every sequence back to back; ``PREFIX.idx`` is

    magic       9 bytes  b"MMIDIDX\\x00\\x00"
    version     u64 LE   1
    dtype code  u8       1 uint8, 2 int8, 3 int16, 4 int32, 5 int64, 6 float32, 7 float64, 8 uint16
    N           u64 LE   number of sequences
    D           u64 LE   length of doc_idx (documents + 1)
    sizes       int32[N]     tokens per sequence
    pointers    int64[N]     byte offset of each sequence in .bin
    doc_idx     int64[D]     first sequence of each document; starts at 0, ends at N

The reader checks every header field and both file sizes and names the file and the problem.
The writer streams tokens to a temporary ``.bin``, keeps the per-sequence sizes in compact
arrays that spill to temporary files past a million entries (memory stays flat whatever the
corpus size), and renames the finished files into place only in ``finalize``: a crash never
leaves a ``.bin/.idx`` pair that looks valid.
"""

from __future__ import annotations

import os
import struct
from array import array
from collections.abc import Iterator
from typing import Any

import numpy as np

from megatron_lite.utils.files import unique_tmp_path
from megatron_lite.utils.logging import get_logger

logger = get_logger(__name__)

MAGIC = b"MMIDIDX\x00\x00"
VERSION = 1
DTYPES: dict[int, type] = {
    1: np.uint8, 2: np.int8, 3: np.int16, 4: np.int32, 5: np.int64,
    6: np.float32, 7: np.float64, 8: np.uint16,
}
_HEADER = len(MAGIC) + 8 + 1 + 8 + 8  # 34 bytes: magic, version, dtype code, N, D
_HEADER_FORMAT = "<QBQQ"  # version, dtype code, N, D (little-endian, no padding)


def code_of(dtype: Any) -> int:
    """The MMIDIDX dtype code of a numpy dtype (``ValueError`` when the format has none)."""
    for code, candidate in DTYPES.items():
        if np.dtype(candidate) == np.dtype(dtype):
            return code
    raise ValueError(f"dtype {np.dtype(dtype).name} has no MMIDIDX code (use one of "
                     f"{', '.join(np.dtype(t).name for t in DTYPES.values())})")


def best_dtype(vocab_size: int | None) -> type:
    """uint16 when every id fits (vocab under 65500, GPT-NeoX's threshold), else int32."""
    return np.uint16 if vocab_size is not None and vocab_size < 65500 else np.int32


def data_file_path(prefix: str) -> str:
    """``PREFIX.bin``: the tokens."""
    return prefix + ".bin"


def index_file_path(prefix: str) -> str:
    """``PREFIX.idx``: the index."""
    return prefix + ".idx"


def dataset_exists(prefix: str) -> bool:
    """Both files of the dataset exist (their contents are checked when opened)."""
    return os.path.isfile(index_file_path(prefix)) and os.path.isfile(data_file_path(prefix))


_CHECK_CHUNK = 1 << 22  # sequences per vectorised step: bounded memory for any index size


def _first_inconsistency(sizes: np.ndarray, pointers: np.ndarray, itemsize: int) -> int | None:
    """The first sequence whose size is negative or whose pointer does not follow from the one
    before (pointer[i] = pointer[i-1] + size[i-1] * itemsize); None when all agree."""
    for start in range(0, len(sizes), _CHECK_CHUNK):
        stop = min(start + _CHECK_CHUNK + 1, len(sizes))
        sz, ptr = sizes[start:stop].astype(np.int64), pointers[start:stop]
        wrong = np.flatnonzero(sz < 0)
        steps = np.flatnonzero(ptr[1:] != ptr[:-1] + sz[:-1] * itemsize) + 1
        found = [int(x[0]) for x in (wrong, steps) if len(x)]
        if found:
            return start + min(found)
    return None


class MMapIndexedDataset:
    """A ``.bin/.idx`` pair, memory-mapped: ``ds[i]`` and ``ds.get(i, offset, length)`` are
    zero-copy views into the ``.bin`` file.

    Attributes: ``sizes`` (int32 [N], tokens per sequence), ``pointers`` (int64 [N], byte
    offsets), ``doc_idx`` (int64 [D]), ``dtype`` (numpy scalar type of the tokens),
    ``num_tokens``. Raises ``FileNotFoundError`` for a missing file and ``ValueError`` naming the
    file and the problem for a corrupt or truncated one.
    """

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        idx_path, bin_path = index_file_path(prefix), data_file_path(prefix)
        for path in (idx_path, bin_path):
            if not os.path.isfile(path):
                raise FileNotFoundError(f"dataset file not found: {path}")
        self.dtype, count, doc_count = _read_header(idx_path)
        expected = _HEADER + count * (4 + 8) + doc_count * 8
        actual = os.path.getsize(idx_path)
        if actual != expected:
            raise ValueError(
                f"{idx_path}: corrupt or truncated index: {actual} bytes, but its header "
                f"({count} sequences, {doc_count} doc_idx entries) needs {expected}")
        # One read-only map of the whole index; the three arrays are views into it.
        index = np.memmap(idx_path, mode="r", dtype=np.uint8)
        self.sizes = np.frombuffer(index, dtype=np.int32, count=count, offset=_HEADER)
        self.pointers = np.frombuffer(index, dtype=np.int64, count=count, offset=_HEADER + 4 * count)
        self.doc_idx = np.frombuffer(index, dtype=np.int64, count=doc_count, offset=_HEADER + 12 * count)
        self._itemsize = np.dtype(self.dtype).itemsize
        self.num_tokens = int(self.sizes.sum(dtype=np.int64))
        self._check_consistency(idx_path, bin_path, count)
        self._bin = (np.memmap(bin_path, mode="r", dtype=self.dtype) if self.num_tokens
                     else np.empty(0, self.dtype))  # numpy cannot map an empty file
        logger.debug("opened %s: %d sequences, %d documents, %d tokens (%s)", prefix, count,
                     self.num_documents, self.num_tokens, np.dtype(self.dtype).name)

    def _check_consistency(self, idx_path: str, bin_path: str, count: int) -> None:
        bin_size = os.path.getsize(bin_path)
        if bin_size != self.num_tokens * self._itemsize:
            raise ValueError(
                f"{bin_path}: corrupt or truncated data: {bin_size} bytes, but {idx_path} "
                f"describes {self.num_tokens} tokens of {np.dtype(self.dtype).name} "
                f"({self.num_tokens * self._itemsize} bytes)")
        if len(self.doc_idx) == 0 or self.doc_idx[0] != 0 or self.doc_idx[-1] > count:
            raise ValueError(f"{idx_path}: corrupt doc_idx (must start at 0 and end at most at {count})")
        if self.doc_idx[-1] != count:
            # GPT-NeoX's own merge_datasets.py appends sizes but not doc_idx; training only
            # reads sizes (one sample source per sequence), so such files stay usable.
            logger.warning("%s: doc_idx ends at %d, not at %d sequences (written by GPT-NeoX's "
                           "merge tool?); document counts are incomplete", idx_path,
                           int(self.doc_idx[-1]), count)
        # The pointers must start at 0, follow the sizes exactly, and the last sequence must end
        # exactly at the end of .bin, or reads would silently return the wrong tokens.
        if count and (self.pointers[0] != 0 or
                      int(self.pointers[-1]) + int(self.sizes[-1]) * self._itemsize != bin_size):
            raise ValueError(f"{idx_path}: corrupt pointers (they do not match the sizes and {bin_path})")
        bad = _first_inconsistency(self.sizes, self.pointers, self._itemsize)
        if bad is not None:
            raise ValueError(f"{idx_path}: corrupt index at sequence {bad}: size "
                             f"{int(self.sizes[bad])}, pointer {int(self.pointers[bad])} (pointers "
                             "must advance by size * item size, sizes must be >= 0)")

    @staticmethod
    def exists(prefix: str) -> bool:
        """GPT-NeoX's name for :func:`dataset_exists`."""
        return dataset_exists(prefix)

    def __len__(self) -> int:
        return len(self.sizes)

    def first_token_at_least(self, limit: int) -> tuple[int, int] | None:
        """(sequence, token id) of the first token >= ``limit``, or None. One vectorised pass
        over .bin in chunks (bounded memory), about a second per GB."""
        chunk = 1 << 26
        for start in range(0, self.num_tokens, chunk):
            block = self._bin[start : start + chunk]
            hits = np.flatnonzero(block >= limit)
            if len(hits):
                position = start + int(hits[0])
                sequence = int(np.searchsorted(self.pointers, position * self._itemsize, side="right")) - 1
                return sequence, int(block[hits[0]])
        return None

    def __getitem__(self, idx: int | slice) -> np.ndarray | list[np.ndarray]:
        """Sequence ``idx`` (a view), or for a contiguous slice a list of views (as GPT-NeoX)."""
        if isinstance(idx, slice):
            start, stop, step = idx.indices(len(self))
            if step != 1:
                raise ValueError("slices of an indexed dataset must be contiguous (step 1)")
            if start >= stop:
                return []
            first = int(self.pointers[start]) // self._itemsize
            sizes = self.sizes[start:stop]
            flat = self._bin[first : first + int(sizes.sum(dtype=np.int64))]
            return np.split(flat, np.cumsum(sizes[:-1], dtype=np.int64))
        return self.get(idx)

    def get(self, idx: int, offset: int = 0, length: int | None = None) -> np.ndarray:
        """Tokens ``[offset, offset + length)`` of sequence ``idx`` (to its end by default)."""
        size = int(self.sizes[idx])
        if length is None:
            length = size - offset
        start = int(self.pointers[idx]) // self._itemsize + offset
        return self._bin[start : start + length]

    @property
    def num_documents(self) -> int:
        return len(self.doc_idx) - 1

    @property
    def supports_prefetch(self) -> bool:
        return False


def _read_header(idx_path: str) -> tuple[type, int, int]:
    """(dtype, N, D) from the 34-byte header, each field checked."""
    with open(idx_path, "rb") as handle:
        header = handle.read(_HEADER)
    if header[: len(MAGIC)] != MAGIC:
        raise ValueError(f"{idx_path}: not an MMIDIDX index (bad magic {header[:len(MAGIC)]!r}, "
                         f"expected {MAGIC!r})")
    if len(header) < _HEADER:
        raise ValueError(f"{idx_path}: corrupt or truncated index: {len(header)} bytes, "
                         f"shorter than the {_HEADER}-byte header")
    version, code, count, doc_count = struct.unpack(_HEADER_FORMAT, header[len(MAGIC):])
    if version != VERSION:
        raise ValueError(f"{idx_path}: index version {version}, only version {VERSION} is supported")
    if code not in DTYPES:
        raise ValueError(f"{idx_path}: unknown dtype code {code} (valid: 1-8)")
    return DTYPES[code], count, doc_count


class _SpillArray:
    """An append-only integer array: in memory up to ``limit`` entries, then in a temp file.

    The builder needs one int32 per sequence and one int64 per document until ``finalize``;
    for billions of documents even compact arrays would grow without bound, so full chunks go
    to disk and are streamed back when the index is written.
    """

    def __init__(self, dtype: Any, path: str, limit: int = 1 << 20) -> None:
        self.dtype, self.path, self.limit = np.dtype(dtype), path, limit
        self._buf = array("i" if self.dtype == np.int32 else "q")
        assert self._buf.itemsize == self.dtype.itemsize
        self._file = None
        self._spilled = 0
        self.last = 0

    def __len__(self) -> int:
        return self._spilled + len(self._buf)

    def append(self, value: int) -> None:
        self._buf.append(value)
        self.last = value
        if len(self._buf) >= self.limit:
            self._spill()

    def extend(self, values: np.ndarray) -> None:
        for start in range(0, len(values), self.limit):  # bounded temporaries
            chunk = np.ascontiguousarray(values[start : start + self.limit], dtype=self.dtype)
            self._buf.frombytes(chunk.tobytes())
            if len(self._buf) >= self.limit:
                self._spill()
        if len(values):
            self.last = int(values[-1])

    def _spill(self) -> None:
        if self._file is None:
            self._file = open(self.path, "wb")
        self._file.write(self._buf.tobytes())
        self._spilled += len(self._buf)
        self._buf = array(self._buf.typecode)

    def chunks(self) -> Iterator[np.ndarray]:
        """Everything appended, in order, at most ``limit`` entries at a time."""
        if self._file is not None:
            self._file.flush()
            with open(self.path, "rb") as handle:
                while block := handle.read(self.limit * self.dtype.itemsize):
                    yield np.frombuffer(block, dtype=self.dtype)
        yield np.frombuffer(self._buf, dtype=self.dtype)

    def remove(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if os.path.exists(self.path):
            os.remove(self.path)


class MMapIndexedDatasetBuilder:
    """Writes a dataset: ``add_item`` per sequence, ``end_document`` after each document,
    ``finalize(idx_path)`` at the end (renames both files into place).

    Until ``finalize`` everything lives under temporary names (``<bin_path>.<host>.<pid>.<random>.tmp``, ...);
    ``abort()``, or leaving a ``with`` block without finalizing, removes them.
    """

    def __init__(self, bin_path: str, dtype: Any = np.int32, spill_limit: int = 1 << 20) -> None:
        self.bin_path, self.dtype = bin_path, np.dtype(dtype)
        code_of(self.dtype)  # fail now, not at finalize, for a dtype the format cannot hold
        self._tmp_bin = unique_tmp_path(bin_path)  # unique: two runs may write one prefix
        self._file = open(self._tmp_bin, "wb")
        self.sizes = _SpillArray(np.int32, unique_tmp_path(bin_path + ".sizes"), spill_limit)
        self.doc_idx = _SpillArray(np.int64, unique_tmp_path(bin_path + ".docs"), spill_limit)
        self.doc_idx.append(0)
        self._finalized = False
        self._idx_path = self._tmp_idx = ""

    def add_item(self, tokens: Any) -> None:
        """Append one sequence (a 1-D numpy array, torch tensor or list of ids)."""
        if hasattr(tokens, "detach"):  # torch tensor: no torch import needed here
            tokens = tokens.detach().cpu().numpy()
        array_ = np.asarray(tokens)
        if array_.ndim != 1:
            raise ValueError(f"add_item expects a 1-D sequence of ids, got shape {array_.shape}")
        if array_.dtype != self.dtype:
            self._check_range(array_)
            array_ = array_.astype(self.dtype)
        self._file.write(array_.tobytes(order="C"))
        self.sizes.append(array_.size)

    def add_documents(self, tokens: np.ndarray, lengths: np.ndarray) -> None:
        """Append many one-sequence documents at once: ``tokens`` is their ids back to back,
        ``lengths[i]`` the size of document i (the fast path of preprocess_data.py)."""
        tokens, lengths = np.asarray(tokens), np.asarray(lengths, dtype=np.int64)
        if int(lengths.sum()) != tokens.size:
            raise ValueError(f"add_documents: lengths sum to {int(lengths.sum())}, not {tokens.size} tokens")
        if tokens.dtype != self.dtype:
            self._check_range(tokens)
            tokens = tokens.astype(self.dtype)
        self._file.write(tokens.tobytes(order="C"))
        first = len(self.sizes)
        self.sizes.extend(lengths.astype(np.int32))
        self.doc_idx.extend(first + np.arange(1, len(lengths) + 1, dtype=np.int64))  # [docs]

    def _check_range(self, values: np.ndarray) -> None:
        # A cast would wrap silently (70000 -> 4464 in uint16): corrupt data, no error anywhere.
        if values.size and np.issubdtype(self.dtype, np.integer):
            info = np.iinfo(self.dtype)
            low, high = values.min(), values.max()
            if low < info.min or high > info.max:
                raise ValueError(f"token ids {low}..{high} do not fit in {self.dtype.name} "
                                 f"({self.bin_path}); use a wider dtype")

    def end_document(self) -> None:
        """Close the current document (the sequences added since the last call)."""
        self.doc_idx.append(len(self.sizes))

    def merge_file_(self, prefix: str) -> None:
        """Append every sequence and document of another dataset (same dtype)."""
        other = MMapIndexedDataset(prefix)
        if np.dtype(other.dtype) != self.dtype:
            raise ValueError(f"{prefix}: dtype {np.dtype(other.dtype).name} differs from {self.dtype.name}")
        offset = len(self.sizes)
        self.sizes.extend(other.sizes)
        for start in range(1, len(other.doc_idx), self.doc_idx.limit):  # bounded temporaries
            self.doc_idx.extend(offset + other.doc_idx[start : start + self.doc_idx.limit])
        with open(data_file_path(prefix), "rb") as src:
            while chunk := src.read(1 << 24):
                self._file.write(chunk)

    def finalize(self, idx_path: str) -> None:
        """Write the index, then rename both files into place (``.bin`` first, ``.idx`` last)."""
        self.prepare(idx_path)
        self.commit()

    def prepare(self, idx_path: str) -> None:
        """First half of ``finalize``: everything written, still under temporary names.

        Several outputs that must appear together (one per ``--jsonl-keys`` key) are all
        prepared before any is committed, so an error (disk full) leaves none of them.
        """
        self._file.close()
        self._idx_path, self._tmp_idx = idx_path, unique_tmp_path(idx_path)
        try:
            if self.doc_idx.last != len(self.sizes):
                logger.warning("%s: sequences after the last end_document(); closing that document",
                               self.bin_path)
                self.end_document()
            with open(self._tmp_idx, "wb") as handle:
                self._write_index(handle)
        except BaseException:
            self.abort()
            raise

    def commit(self) -> None:
        """Second half of ``finalize``: rename the prepared files into place."""
        try:
            os.replace(self._tmp_bin, self.bin_path)
            os.replace(self._tmp_idx, self._idx_path)
        except BaseException:
            self.abort()
            raise
        self._finalized = True
        self._remove_spills()
        logger.info("wrote %s (%d sequences, %d documents, %s)", self._idx_path, len(self.sizes),
                    len(self.doc_idx) - 1, self.dtype.name)

    def _write_index(self, handle) -> None:
        handle.write(MAGIC)
        handle.write(struct.pack(_HEADER_FORMAT, VERSION, code_of(self.dtype),
                                 len(self.sizes), len(self.doc_idx)))
        for chunk in self.sizes.chunks():
            handle.write(chunk.tobytes())
        # pointers[i] = byte offset of sequence i = itemsize * (sizes[0] + ... + sizes[i-1]),
        # computed chunk by chunk with a running offset so no N-sized temporary is needed.
        offset = 0
        for chunk in self.sizes.chunks():
            ends = np.cumsum(chunk, dtype=np.int64) * self.dtype.itemsize + offset  # [chunk]
            starts = np.empty_like(ends)
            starts[:1] = offset
            starts[1:] = ends[:-1]
            handle.write(starts.tobytes())
            if len(ends):
                offset = int(ends[-1])
        for chunk in self.doc_idx.chunks():
            handle.write(chunk.tobytes())

    def _remove_spills(self) -> None:
        self.sizes.remove()
        self.doc_idx.remove()

    def abort(self) -> None:
        """Remove the temporary files (after an error): nothing half-written stays behind."""
        self._file.close()
        for path in (self._tmp_bin, self._tmp_idx):
            if path and os.path.exists(path):
                os.remove(path)
        self._remove_spills()

    def __enter__(self) -> MMapIndexedDatasetBuilder:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self._finalized:
            if exc_type is None:
                logger.warning("%s: builder closed without finalize(); nothing written", self.bin_path)
            self.abort()
