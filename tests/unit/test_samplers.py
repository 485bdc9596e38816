"""Data-parallel sampling: resume equals uninterrupted, and world sizes agree on the global batch."""

import numpy as np
import pytest
import torch

from megatron_lite.data.loaders import build_data_loader, get_batch
from megatron_lite.data.samplers import DataParallelBatchSampler

SEQ = 8


class _Samples:
    """Sample i is ``seq+1`` tokens all equal to i (easy to trace through a loader)."""

    def __init__(self, n: int, labels: bool = False) -> None:
        self.n, self.labels = n, labels

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        out = {"text": np.full(SEQ + 1, i, dtype=np.int64)}
        if self.labels:
            label = out["text"].copy()
            label[: SEQ // 2] = -100
            out["label"] = label
        return out


def _ids(batch: dict) -> list[int]:
    return batch["text"][:, 0].tolist()


def test_sampler_is_megatron_order():
    batches = list(DataParallelBatchSampler(20, 0, micro_batch_size=2, dp_rank=1, dp_size=3))
    # Steps of 6 samples, rank 1 takes the 2nd pair; the partial step [18, 20) is dropped.
    assert batches == [[2, 3], [8, 9], [14, 15]]
    assert len(DataParallelBatchSampler(20, 0, 2, 1, 3)) == 3


@pytest.mark.parametrize("loop", [False, True])
def test_resumed_loader_equals_uninterrupted(loop):
    dataset = _Samples(37)
    micro, dp, ga = 2, 2, 3
    global_batch = micro * dp * ga
    steps = 5 if loop else 3  # loop=True runs past the end of the dataset (37 samples)

    def run(consumed: int, n_micro: int) -> dict[int, list[list[int]]]:
        out = {}
        for rank in range(dp):
            loader = iter(build_data_loader(dataset, micro, rank, dp, consumed, loop=loop))
            out[rank] = [_ids(next(loader)) for _ in range(n_micro)]
        return out

    full = run(0, steps * ga)
    for resume_step in range(1, steps):
        resumed = run(resume_step * global_batch, (steps - resume_step) * ga)
        for rank in range(dp):
            assert resumed[rank] == full[rank][resume_step * ga:]


@pytest.mark.parametrize("dp", [2, 4])
def test_union_of_ranks_equals_single_rank_global_batch(dp):
    dataset = _Samples(100)
    global_batch = 8
    reference = [_ids(b) for b in build_data_loader(dataset, global_batch, 0, 1)]
    per_rank = [[_ids(b) for b in build_data_loader(dataset, global_batch // dp, r, dp)] for r in range(dp)]
    assert all(len(batches) == len(reference) for batches in per_rank)
    for step, ref in enumerate(reference):
        union = [i for r in range(dp) for i in per_rank[r][step]]
        assert union == ref  # same samples, in the same order when ranks are concatenated


def test_loader_yields_long_tensors_and_workers_match():
    dataset = _Samples(24, labels=True)
    plain = list(build_data_loader(dataset, 4, 0, 1, consumed_samples=8))
    assert plain[0]["text"].dtype == torch.int64 and plain[0]["text"].shape == (4, SEQ + 1)
    assert plain[0]["label"].shape == (4, SEQ + 1)
    assert [_ids(b) for b in plain] == [[8, 9, 10, 11], [12, 13, 14, 15], [16, 17, 18, 19], [20, 21, 22, 23]]
    with_workers = list(build_data_loader(dataset, 4, 0, 1, consumed_samples=8, num_workers=1))
    assert [_ids(b) for b in with_workers] == [_ids(b) for b in plain]


def test_sampler_rejects_bad_arguments():
    with pytest.raises(ValueError, match="past the end"):
        DataParallelBatchSampler(10, 11, 1, 0, 1)
    with pytest.raises(ValueError, match="dp_rank"):
        DataParallelBatchSampler(10, 0, 1, 2, 2)
    with pytest.raises(TypeError):
        len(DataParallelBatchSampler(10, 0, 1, 0, 1, loop=True))


def test_get_batch_shifts_and_masks():
    text = torch.tensor([[5, 6, 0, 7, 8], [1, 2, 3, -100, -100]])  # [2, 5]; 0 = eod, -100 = pad
    tokens, labels, loss_mask, position_ids = get_batch({"text": text}, eod_id=0)
    assert tokens.tolist() == [[5, 6, 0, 7], [1, 2, 3, 0]]
    assert labels.tolist() == [[6, 0, 7, 8], [2, 3, 0, 0]]
    assert loss_mask.tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    assert position_ids.tolist() == [[0, 1, 2, 3]] * 2
    # eod_mask_loss drops the loss where the input is the eod token.
    _, _, masked, _ = get_batch({"text": text}, eod_id=0, eod_mask_loss=True)
    assert masked.tolist() == [[1, 1, 0, 1], [1, 1, 0, 0]]
    # A label dataset: -100 means no loss; the labels come from it, shifted like the text.
    label = torch.tensor([[-100, -100, 9, 9, 9], [-100, 4, 4, -100, 4]])
    _, labels, loss_mask, _ = get_batch({"text": text, "label": label}, eod_id=0)
    assert labels.tolist() == [[0, 9, 9, 9], [4, 4, 0, 4]]
    assert loss_mask.tolist() == [[0, 1, 1, 1], [1, 1, 0, 1]]


def test_real_dataset_through_loader_and_get_batch(tmp_path):
    from megatron_lite.data.gpt_dataset import GPT2Dataset
    from megatron_lite.data.indexed_dataset import MMapIndexedDataset, MMapIndexedDatasetBuilder

    prefix = str(tmp_path / "c_text_document")
    builder = MMapIndexedDatasetBuilder(prefix + ".bin", dtype=np.uint16)
    rng = np.random.RandomState(0)
    for _ in range(50):
        builder.add_item(rng.randint(1, 500, size=rng.randint(3, 40)))
        builder.end_document()
    builder.finalize(prefix + ".idx")
    data = MMapIndexedDataset(prefix)
    ds = GPT2Dataset("train", prefix, np.arange(len(data.sizes)), data, 64, SEQ, 3)
    full = [b["text"] for b in build_data_loader(ds, 4, 1, 2)]
    resumed = [b["text"] for b in build_data_loader(ds, 4, 1, 2, consumed_samples=24)]
    assert len(resumed) == len(full) - 3
    assert all(torch.equal(a, b) for a, b in zip(full[3:], resumed))
    tokens, labels, loss_mask, position_ids = get_batch(next(iter(build_data_loader(ds, 4, 0, 1))))
    assert tokens.shape == labels.shape == loss_mask.shape == position_ids.shape == (4, SEQ)
    assert torch.equal(tokens[:, 1:], labels[:, :-1]) and bool(loss_mask.all())
