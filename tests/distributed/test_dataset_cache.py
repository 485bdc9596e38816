"""Two gloo ranks build the same GPT dataset at once: one build, identical indices everywhere."""

from __future__ import annotations

import os

import numpy as np

from .spawn import run_distributed

WORLD = 2


def _build(rank: int, world_size: int, prefix: str) -> dict:
    import torch.distributed as dist

    from megatron_lite.data.gpt_dataset import GPT2Dataset
    from megatron_lite.data.indexed_dataset import MMapIndexedDataset

    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        data = MMapIndexedDataset(prefix)
        ds = GPT2Dataset("train", prefix, np.arange(len(data.sizes)), data, 500, 32, 1234)
        return {
            "built": ds.built_index,
            "doc_idx": np.array(ds.doc_idx),
            "sample_idx": np.array(ds.sample_idx),
            "shuffle_idx": np.array(ds.shuffle_idx),
            "first": ds[0]["text"],
        }
    finally:
        dist.destroy_process_group()


def test_two_ranks_build_once_and_agree(tmp_path):
    from megatron_lite.data.indexed_dataset import MMapIndexedDatasetBuilder

    prefix = str(tmp_path / "corpus_text_document")
    rng = np.random.RandomState(0)
    builder = MMapIndexedDatasetBuilder(prefix + ".bin", dtype=np.uint16)
    for _ in range(300):
        builder.add_item(rng.randint(0, 1000, size=rng.randint(5, 200)).astype(np.uint16))
        builder.end_document()
    builder.finalize(prefix + ".idx")

    results = run_distributed(_build, WORLD, prefix, timeout_s=120)

    assert [r["built"] for r in results] == [True, False]  # rank 0 built, rank 1 waited and loaded
    for key in ("doc_idx", "sample_idx", "shuffle_idx", "first"):
        assert np.array_equal(results[0][key], results[1][key]), key
    files = os.listdir(tmp_path)
    assert len([f for f in files if f.endswith("_idx.npy")]) == 3
    assert not [f for f in files if f.startswith(".tmp_")]
