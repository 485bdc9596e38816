"""MMIDIDX reader/writer: round trip, merge, and clear errors for corrupt or truncated files."""

from __future__ import annotations

import os
import struct

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


def test_idx_bytes_field_by_field(tmp_path):
    """A hand-made dataset: every field of the .idx checked with struct, and the .bin bytes."""
    prefix = str(tmp_path / "hand")
    build(prefix, np.uint16)  # sequences [1,2,3] | [4,5] [6] | [7,8,9,10]
    idx = open(index_file_path(prefix), "rb").read()
    assert idx[0:9] == b"MMIDIDX\x00\x00"
    assert struct.unpack("<Q", idx[9:17]) == (1,)  # version
    assert struct.unpack("<B", idx[17:18]) == (8,)  # dtype code: uint16
    assert struct.unpack("<Q", idx[18:26]) == (4,)  # N sequences
    assert struct.unpack("<Q", idx[26:34]) == (4,)  # D = documents + 1
    assert struct.unpack("<4i", idx[34:50]) == (3, 2, 1, 4)  # sizes
    assert struct.unpack("<4q", idx[50:82]) == (0, 6, 10, 12)  # byte pointers (2 bytes/token)
    assert struct.unpack("<4q", idx[82:114]) == (0, 1, 3, 4)  # doc_idx
    assert len(idx) == 114
    assert open(data_file_path(prefix), "rb").read() == struct.pack("<10H", *range(1, 11))


@pytest.mark.parametrize("dtype, code", [(np.uint8, 1), (np.int8, 2), (np.int16, 3), (np.int32, 4),
                                         (np.int64, 5), (np.float32, 6), (np.float64, 7), (np.uint16, 8)])
def test_dtype_codes(tmp_path, dtype, code):
    prefix = str(tmp_path / "d")
    build(prefix, dtype)
    assert open(index_file_path(prefix), "rb").read()[17] == code
    assert MMapIndexedDataset(prefix).dtype == dtype


def test_spilled_builder_writes_the_same_bytes(tmp_path):
    """Sizes/doc_idx spilled to temp files every 3 entries give the same files as in memory."""
    rng = np.random.default_rng(0)
    docs = [[rng.integers(0, 500, rng.integers(1, 9)).tolist() for _ in range(rng.integers(1, 4))]
            for _ in range(40)]
    outputs = []
    for limit in (1 << 20, 3):
        prefix = str(tmp_path / f"s{limit}")
        builder = MMapIndexedDatasetBuilder(data_file_path(prefix), np.uint16, spill_limit=limit)
        for doc in docs:
            for seq in doc:
                builder.add_item(np.asarray(seq))
            builder.end_document()
        if limit == 3:  # and merge the in-memory one into the spilled one
            builder.merge_file_(str(tmp_path / f"s{1 << 20}"))
        builder.finalize(index_file_path(prefix))
        outputs.append(prefix)
    big, small = MMapIndexedDataset(outputs[0]), MMapIndexedDataset(outputs[1])
    n = len(big)
    assert small.sizes.tolist() == big.sizes.tolist() * 2
    assert small.doc_idx.tolist() == big.doc_idx.tolist() + (n + big.doc_idx[1:]).tolist()
    assert all(small[i].tolist() == small[i + n].tolist() == big[i].tolist() for i in range(n))
    assert sorted(os.listdir(tmp_path)) == ["s1048576.bin", "s1048576.idx", "s3.bin", "s3.idx"]


def test_slices_views_and_torch_input(tmp_path):
    import torch

    prefix = str(tmp_path / "d")
    builder = MMapIndexedDatasetBuilder(data_file_path(prefix), np.int32)
    builder.add_item(torch.tensor([5, 6, 7]))
    builder.add_item([8])
    builder.end_document()
    builder.finalize(index_file_path(prefix))
    ds = MMapIndexedDataset(prefix)
    assert [a.tolist() for a in ds[0:2]] == [[5, 6, 7], [8]] and ds[1:1] == []
    assert isinstance(ds.get(0), np.memmap)  # a view of the mapped file, no copy
    with pytest.raises(ValueError, match="contiguous"):
        ds[0:2:2]


def test_ids_that_do_not_fit_the_dtype_are_an_error(tmp_path):
    prefix = str(tmp_path / "d")
    with MMapIndexedDatasetBuilder(data_file_path(prefix), np.uint16) as builder:
        with pytest.raises(ValueError, match="do not fit in uint16"):
            builder.add_item([1, 70000])
    assert os.listdir(tmp_path) == []  # left without finalize(): temporaries removed


def test_neox_merged_file_without_doc_idx_is_readable(tmp_path):
    """GPT-NeoX's merge tool leaves doc_idx == [0]: readable (training uses sizes only)."""
    prefix = str(tmp_path / "d")
    build(prefix)
    raw = bytearray(open(index_file_path(prefix), "rb").read())
    raw[26:34] = struct.pack("<Q", 1)
    open(index_file_path(prefix), "wb").write(bytes(raw[: 34 + 12 * 4 + 8]))
    ds = MMapIndexedDataset(prefix)
    assert len(ds) == 4 and ds.num_documents == 0 and ds[3].tolist() == [7, 8, 9, 10]


@pytest.mark.parametrize("damage, message", [
    ("short_header", "shorter than the 34-byte header"),
    ("bad_pointer", "corrupt pointers"),
    ("bad_doc_idx", "corrupt doc_idx"),
    ("missing_idx", "dataset file not found"),
])
def test_more_damage_is_named(tmp_path, damage, message):
    prefix = str(tmp_path / "d")
    build(prefix)
    idx = index_file_path(prefix)
    raw = bytearray(open(idx, "rb").read())
    if damage == "short_header":
        raw = raw[:20]
    elif damage == "bad_pointer":
        raw[50 + 8 * 3 : 50 + 8 * 4] = struct.pack("<q", 14)
    elif damage == "bad_doc_idx":
        raw[82 + 8 * 3 :] = struct.pack("<q", 9)
    if damage == "missing_idx":
        os.remove(idx)
    else:
        open(idx, "wb").write(bytes(raw))
    with pytest.raises((ValueError, FileNotFoundError), match=message) as err:
        MMapIndexedDataset(prefix)
    assert prefix in str(err.value)


def _write_three(prefix: str) -> None:
    with MMapIndexedDatasetBuilder(data_file_path(prefix), np.uint16) as builder:
        for tokens in ([1, 2, 3], [4, 5], [6, 7, 8, 9]):
            builder.add_item(np.array(tokens, dtype=np.uint16))
            builder.end_document()
        builder.finalize(index_file_path(prefix))


@pytest.mark.parametrize("field, index, value, sequence", [
    ("pointers", 1, 4, 1),      # the middle pointer moved: the ends still agree
    ("sizes", 0, -1, 0),        # a negative size (the total kept by the next one)
])
def test_idx_whose_pointers_disagree_with_its_sizes_is_refused_at_open(tmp_path, field, index, value, sequence):
    prefix = str(tmp_path / "c")
    _write_three(prefix)
    idx = bytearray(open(index_file_path(prefix), "rb").read())
    header, count = 34, 3
    if field == "pointers":
        struct.pack_into("<q", idx, header + 4 * count + 8 * index, value)
    else:
        struct.pack_into("<i", idx, header + 4 * index, value)
        struct.pack_into("<i", idx, header + 4 * (index + 1), 2 + 3 + 1)  # sum of sizes unchanged
    open(index_file_path(prefix), "wb").write(bytes(idx))
    with pytest.raises(ValueError, match=f"c.idx: corrupt index at sequence {sequence}"):
        MMapIndexedDataset(prefix)
