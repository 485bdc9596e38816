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

The reader checks every field and both file sizes and names the problem; the writer writes
under temporary names and renames into place only in ``finalize``.
"""

from __future__ import annotations

import os
import struct
from typing import Any

import numpy as np

MAGIC = b"MMIDIDX\x00\x00"
VERSION = 1
DTYPES: dict[int, type] = {
    1: np.uint8, 2: np.int8, 3: np.int16, 4: np.int32, 5: np.int64,
    6: np.float32, 7: np.float64, 8: np.uint16,
}
_HEADER = len(MAGIC) + 8 + 1 + 8 + 8  # 34 bytes


def code_of(dtype: Any) -> int:
    for code, candidate in DTYPES.items():
        if np.dtype(candidate) == np.dtype(dtype):
            return code
    raise ValueError(f"dtype {dtype} has no MMIDIDX code")


def best_dtype(vocab_size: int | None) -> type:
    """uint16 when every id fits (vocab under 65500, GPT-NeoX's threshold), else int32."""
    return np.uint16 if vocab_size is not None and vocab_size < 65500 else np.int32


def data_file_path(prefix: str) -> str:
    return prefix + ".bin"


def index_file_path(prefix: str) -> str:
    return prefix + ".idx"


def dataset_exists(prefix: str) -> bool:
    return os.path.isfile(index_file_path(prefix)) and os.path.isfile(data_file_path(prefix))


class MMapIndexedDataset:
    """Memory-mapped tokens: ``ds[i]`` and ``ds.get(i, offset, length)`` return zero-copy views."""

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
        index = np.memmap(idx_path, mode="r", dtype=np.uint8)
        self.sizes = np.frombuffer(index, dtype=np.int32, count=count, offset=_HEADER)
        self.pointers = np.frombuffer(index, dtype=np.int64, count=count, offset=_HEADER + 4 * count)
        self.doc_idx = np.frombuffer(index, dtype=np.int64, count=doc_count, offset=_HEADER + 12 * count)
        itemsize = np.dtype(self.dtype).itemsize
        self.num_tokens = int(self.sizes.sum(dtype=np.int64))
        bin_size = os.path.getsize(bin_path)
        if bin_size != self.num_tokens * itemsize:
            raise ValueError(
                f"{bin_path}: corrupt or truncated data: {bin_size} bytes, but {idx_path} "
                f"describes {self.num_tokens} tokens of {np.dtype(self.dtype).name} "
                f"({self.num_tokens * itemsize} bytes)")
        if doc_count and (self.doc_idx[0] != 0 or self.doc_idx[-1] != count):
            raise ValueError(f"{idx_path}: corrupt doc_idx (must run from 0 to {count})")
        self._bin = np.memmap(bin_path, mode="r", dtype=self.dtype) if self.num_tokens else np.empty(0, self.dtype)

    def __len__(self) -> int:
        return len(self.sizes)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.get(i)

    def get(self, idx: int, offset: int = 0, length: int | None = None) -> np.ndarray:
        """Tokens ``[offset, offset + length)`` of sequence ``idx`` (to its end by default)."""
        size = int(self.sizes[idx])
        if length is None:
            length = size - offset
        start = int(self.pointers[idx]) // np.dtype(self.dtype).itemsize + offset
        return self._bin[start : start + length]

    @property
    def num_documents(self) -> int:
        return len(self.doc_idx) - 1


def _read_header(idx_path: str) -> tuple[type, int, int]:
    with open(idx_path, "rb") as handle:
        header = handle.read(_HEADER)
    if len(header) < _HEADER or header[: len(MAGIC)] != MAGIC:
        raise ValueError(f"{idx_path}: not an MMIDIDX index (bad magic or shorter than the header)")
    version, code, count, doc_count = struct.unpack("<QBQQ", header[len(MAGIC):])
    if version != VERSION:
        raise ValueError(f"{idx_path}: index version {version}, only version {VERSION} is supported")
    if code not in DTYPES:
        raise ValueError(f"{idx_path}: unknown dtype code {code}")
    return DTYPES[code], count, doc_count


class MMapIndexedDatasetBuilder:
    """Streams sequences to ``bin_path`` (a temporary name until ``finalize``)."""

    def __init__(self, bin_path: str, dtype: Any = np.int32) -> None:
        self.bin_path, self.dtype = bin_path, np.dtype(dtype)
        self._tmp_bin = bin_path + ".tmp"
        self._file = open(self._tmp_bin, "wb")
        self.sizes: list[int] = []
        self.doc_idx: list[int] = [0]

    def add_item(self, tokens: Any) -> None:
        array = np.asarray(tokens.numpy() if hasattr(tokens, "numpy") else tokens, dtype=self.dtype)
        self._file.write(array.tobytes(order="C"))
        self.sizes.append(array.size)

    def end_document(self) -> None:
        self.doc_idx.append(len(self.sizes))

    def merge_file_(self, prefix: str) -> None:
        """Append every sequence and document of another dataset (same dtype)."""
        other = MMapIndexedDataset(prefix)
        if np.dtype(other.dtype) != self.dtype:
            raise ValueError(f"{prefix}: dtype {np.dtype(other.dtype)} differs from {self.dtype}")
        offset = len(self.sizes)
        self.sizes.extend(other.sizes.tolist())
        self.doc_idx.extend((offset + other.doc_idx[1:]).tolist())
        with open(data_file_path(prefix), "rb") as src:
            while chunk := src.read(1 << 24):
                self._file.write(chunk)

    def finalize(self, idx_path: str) -> None:
        """Write the index, then rename both files into place (index last)."""
        self._file.close()
        sizes = np.asarray(self.sizes, dtype=np.int32)
        pointers = np.zeros(len(sizes), dtype=np.int64)
        if len(sizes) > 1:
            np.cumsum(sizes[:-1].astype(np.int64) * self.dtype.itemsize, out=pointers[1:])
        tmp_idx = idx_path + ".tmp"
        try:
            with open(tmp_idx, "wb") as handle:
                handle.write(MAGIC)
                handle.write(struct.pack("<QBQQ", VERSION, code_of(self.dtype), len(sizes), len(self.doc_idx)))
                handle.write(sizes.tobytes(order="C"))
                handle.write(pointers.tobytes(order="C"))
                handle.write(np.asarray(self.doc_idx, dtype=np.int64).tobytes(order="C"))
        except BaseException:
            for path in (tmp_idx, self._tmp_bin):
                if os.path.exists(path):
                    os.remove(path)
            raise
        os.replace(self._tmp_bin, self.bin_path)
        os.replace(tmp_idx, idx_path)

    def abort(self) -> None:
        """Remove the temporary files (after an error): nothing half-written stays behind."""
        self._file.close()
        if os.path.exists(self._tmp_bin):
            os.remove(self._tmp_bin)

    def __enter__(self) -> MMapIndexedDatasetBuilder:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
