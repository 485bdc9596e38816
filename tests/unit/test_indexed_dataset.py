"""MMIDIDX reader/writer: round trip, merge, and clear errors for corrupt or truncated files."""

from __future__ import annotations

import os

import numpy as np
import pytest

from megatron_lite.data.indexed_dataset import (
    MMapIndexedDataset,
    MMapIndexedDatasetBuilder,
    best_dtype,
    data_file_path,
    dataset_exists,
    index_file_path,
)

DOCS = [[[1, 2, 3]], [[4, 5], [6]], [[7, 8, 9, 10]]]  # documents of sequences


def build(prefix: str, dtype=np.uint16, docs=DOCS) -> None:
    builder = MMapIndexedDatasetBuilder(data_file_path(prefix), dtype)
    for doc in docs:
        for seq in doc:
            builder.add_item(seq)
        builder.end_document()
    builder.finalize(index_file_path(prefix))


@pytest.mark.parametrize("dtype", [np.uint16, np.int32, np.int64, np.uint8])
def test_round_trip(tmp_path, dtype):
    prefix = str(tmp_path / "d")
    build(prefix, dtype)
    ds = MMapIndexedDataset(prefix)
    assert len(ds) == 4 and ds.num_documents == 3 and ds.num_tokens == 10
    assert ds.sizes.tolist() == [3, 2, 1, 4] and ds.doc_idx.tolist() == [0, 1, 3, 4]
    assert ds[1].tolist() == [4, 5] and ds.get(3, offset=1, length=2).tolist() == [8, 9]
    assert ds.dtype == dtype


def test_best_dtype_threshold():
    assert best_dtype(50257) == np.uint16 and best_dtype(65499) == np.uint16
    assert best_dtype(65500) == np.int32 and best_dtype(None) == np.int32


def test_merge(tmp_path):
    a, b, ab = (str(tmp_path / n) for n in "a b ab".split())
    build(a)
    build(b, docs=[[[11, 12]]])
    builder = MMapIndexedDatasetBuilder(data_file_path(ab), np.uint16)
    builder.merge_file_(a)
    builder.merge_file_(b)
    builder.finalize(index_file_path(ab))
    merged = MMapIndexedDataset(ab)
    assert merged.doc_idx.tolist() == [0, 1, 3, 4, 5] and merged[4].tolist() == [11, 12]


def test_aborted_builder_leaves_nothing(tmp_path):
    prefix = str(tmp_path / "d")
    with pytest.raises(RuntimeError):
        with MMapIndexedDatasetBuilder(data_file_path(prefix), np.uint16) as builder:
            builder.add_item([1, 2])
            raise RuntimeError("crash while writing")
    assert os.listdir(tmp_path) == [] and not dataset_exists(prefix)


@pytest.mark.parametrize("damage, message", [
    ("truncate_idx", "corrupt or truncated index"),
    ("truncate_bin", "corrupt or truncated data"),
    ("bad_magic", "not an MMIDIDX index"),
    ("bad_version", "version 2"),
    ("bad_dtype", "unknown dtype code 9"),
    ("missing_bin", "dataset file not found"),
])
def test_damaged_files_name_the_problem(tmp_path, damage, message):
    prefix = str(tmp_path / "d")
    build(prefix)
    idx, bin_ = index_file_path(prefix), data_file_path(prefix)
    raw = bytearray(open(idx, "rb").read())
    if damage == "truncate_idx":
        raw = raw[:-8]
    elif damage == "bad_magic":
        raw[0:3] = b"XXX"
    elif damage == "bad_version":
        raw[9] = 2
    elif damage == "bad_dtype":
        raw[17] = 9
    if damage == "truncate_bin":
        open(bin_, "r+b").truncate(6)
    elif damage == "missing_bin":
        os.remove(bin_)
    else:
        open(idx, "wb").write(bytes(raw))
    with pytest.raises((ValueError, FileNotFoundError), match=message) as err:
        MMapIndexedDataset(prefix)
    assert prefix in str(err.value)
