"""One document per sample (data/unpacked.py): GPT-NeoX's order, padding, cutting, parallel
files, and the errors that name a file and a record."""

from __future__ import annotations

import numpy as np
import pytest

from megatron_lite.config.schema import DataConfig
from megatron_lite.data.data_utils import build_train_valid_test_datasets
from megatron_lite.data.indexed_dataset import (
    MMapIndexedDataset,
    MMapIndexedDatasetBuilder,
    data_file_path,
    index_file_path,
)
from megatron_lite.data.unpacked import Source, UnpackedDataset


def write(prefix: str, docs: list[list], dtype=np.int32) -> MMapIndexedDataset:
    with MMapIndexedDatasetBuilder(data_file_path(prefix), dtype) as builder:
        for doc in docs:
            builder.add_item(np.asarray(doc, dtype=dtype))
            builder.end_document()
        builder.finalize(index_file_path(prefix))
    return MMapIndexedDataset(prefix)


DOCS = [[5, 6, 7, 8], [9, 10], [11, 12, 13, 14, 15, 16, 17], [18, 19, 20]]
LABELS = [[-100, -100, 7, 8], [-100, 10], [-100, -100, -100, 14, 15, 16, 17], [-100, 19, 20]]


@pytest.fixture
def sources(tmp_path) -> list[Source]:
    return [Source("text", "train_data_paths", str(tmp_path / "t"), write(str(tmp_path / "t"), DOCS)),
            Source("label", "train_label_data_paths", str(tmp_path / "l"), write(str(tmp_path / "l"), LABELS)),
            Source("reward", "train_reward_data_paths", str(tmp_path / "r"),
                   write(str(tmp_path / "r"), [[1.0], [-1.0], [0.5], [-2.0]], np.float32))]


def test_order_is_gpt_neox_unpacked_and_samples_are_padded(sources):
    ds = UnpackedDataset("train", sources, np.arange(4), 10, seq_length=5, seed=3)
    # GPT-NeoX (pairwise_dataset.py, unpacked): shuffle [i % n for i in range(num_samples)].
    expected = np.array([i % 4 for i in range(10)])
    np.random.RandomState(seed=3).shuffle(expected)
    assert [int(d) for d in ds.order] == list(expected)
    for idx in range(10):
        doc = int(expected[idx])
        sample = ds[idx]
        want = (DOCS[doc] + [-100] * 6)[:6]
        assert sample["text"].tolist() == want, "cut or padded to seq_length + 1 with -100"
        assert sample["label"].tolist() == (LABELS[doc] + [-100] * 6)[:6]
        assert float(sample["reward"]) == [1.0, -1.0, 0.5, -2.0][doc]
    assert sorted(np.bincount(ds.order).tolist()) == [2, 2, 3, 3]  # every document 10/4 times, to one


def test_a_long_document_is_an_error_without_allow_chopped(sources):
    with pytest.raises(ValueError) as err:
        UnpackedDataset("train", sources, np.arange(4), 4, seq_length=5, seed=3, allow_chopped=False)
    assert str(err.value).startswith("train_data_paths: ") and "t.bin, record 2 has 7 tokens" in str(err.value)


def test_no_target_in_the_window_is_an_error(sources):
    # seq_length 2: document 2's first label token is at position 3, beyond the window of 3.
    with pytest.raises(ValueError, match=r"train_label_data_paths: .*l.bin, record 2 has no label token"):
        UnpackedDataset("train", sources, np.arange(4), 4, seq_length=2, seed=3)


def test_parallel_files_must_agree(tmp_path, sources):
    short = write(str(tmp_path / "short"), LABELS[:3])
    bad = [sources[0], Source("label", "train_label_data_paths", str(tmp_path / "short"), short)]
    with pytest.raises(ValueError, match="has 3 records but train_data_paths"):
        UnpackedDataset("train", bad, np.arange(4), 4, seq_length=8, seed=1)
    shifted = write(str(tmp_path / "shifted"), [LABELS[0], LABELS[1], LABELS[2][:-1], LABELS[3]])
    bad = [sources[0], Source("label", "train_label_data_paths", str(tmp_path / "shifted"), shifted)]
    with pytest.raises(ValueError, match=r"shifted.bin, record 2 has 6 items but its document has 7"):
        UnpackedDataset("train", bad, np.arange(4), 4, seq_length=8, seed=1)


def test_pack_impl_unpacked_serves_plain_training_too(tmp_path):
    """GPT-NeoX's SFT config (pack_impl: unpacked) with data_path and split: one document per sample."""
    write(str(tmp_path / "corpus"), DOCS * 5)
    cfg = DataConfig(data_path=str(tmp_path / "corpus"), split="80,20,0", pack_impl="unpacked")
    train, valid, test = build_train_valid_test_datasets(cfg, 8, 1, (6, 2, 0))
    assert len(train) == 6 and len(valid) == 2 and test is None
    assert set(int(d) for d in valid.documents) == {16, 17, 18, 19}
    assert list(train[0]) == ["text"] and train[0]["text"].shape == (9,)
