"""Durable, collision-free writes (issue #17, 7-9): checkpoint files are fsynced before `latest`
moves; every temporary name is unique, so two processes writing one target never share one."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from megatron_lite.checkpoint import engine as checkpoint_engine
from megatron_lite.config import config_from_flat
from megatron_lite.data.indexed_dataset import (
    MMapIndexedDataset,
    MMapIndexedDatasetBuilder,
    data_file_path,
    index_file_path,
)
from megatron_lite.utils.files import atomic_write_text, reserve_new_path, unique_tmp_path


class _FakeEngine:
    """Writes what DeepSpeed's engine writes for one rank at tp = 1 (the model file)."""

    def save_checkpoint(self, save_dir, tag, save_latest, client_state):
        os.makedirs(os.path.join(save_dir, tag), exist_ok=True)
        torch.save({"module": {"w": torch.ones(2)}}, os.path.join(save_dir, tag, "mp_rank_00_model_states.pt"))


class _OneRank:
    """torch.distributed as one rank sees it, without a process group."""

    @staticmethod
    def get_rank():
        return 0

    @staticmethod
    def get_world_size():
        return 1

    @staticmethod
    def barrier():
        pass


def test_checkpoint_files_are_fsynced_before_latest_moves(tmp_path, monkeypatch):
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def replace(src, dst):
        events.append(("rename", str(dst)))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(checkpoint_engine, "dist", _OneRank)
    cfg = config_from_flat({"save": str(tmp_path), "num_layers": 1})
    checkpoint_engine.save_checkpoint(_FakeEngine(), cfg, 5, 40, [], own_steps=[])
    step = str(tmp_path / "global_step5")
    latest_moved = events.index(("rename", str(tmp_path / "latest")))
    synced_before = {path for kind, path in events[:latest_moved] if kind == "fsync"}
    for name in ("mp_rank_00_model_states.pt", "rng_state_rank0.pt", "config.yml", ""):
        assert os.path.join(step, name).rstrip("/") in synced_before, name
    # megatron_lite.json: synced under its temporary name, renamed, then its directory synced
    meta_synced = [i for i, (kind, p) in enumerate(events)
                   if kind == "fsync" and p.startswith(os.path.join(step, "megatron_lite.json."))]
    meta_renamed = events.index(("rename", os.path.join(step, "megatron_lite.json")))
    assert meta_synced and meta_synced[0] < meta_renamed < latest_moved
    assert ("fsync", step) in events[meta_renamed:latest_moved]
    assert ("fsync", str(tmp_path)) in events[latest_moved:]  # the rename itself made durable


def test_saving_into_a_complete_step_is_refused(tmp_path, monkeypatch):
    from megatron_lite.checkpoint.layout import CheckpointError

    monkeypatch.setattr(checkpoint_engine, "dist", _OneRank)
    cfg = config_from_flat({"save": str(tmp_path), "num_layers": 1})
    checkpoint_engine.save_checkpoint(_FakeEngine(), cfg, 5, 40, [])
    with pytest.raises(CheckpointError, match="global_step5 is a complete checkpoint: refusing"):
        checkpoint_engine.save_checkpoint(_FakeEngine(), cfg, 5, 40, [])


def test_temporary_names_are_unique_and_reserved_names_never_collide(tmp_path):
    target = str(tmp_path / "out.json")
    assert unique_tmp_path(target) != unique_tmp_path(target)
    first, second = reserve_new_path(str(tmp_path / "eval_results_x"), ".json"), \
        reserve_new_path(str(tmp_path / "eval_results_x"), ".json")
    assert first != second and os.path.exists(first) and os.path.exists(second)
    atomic_write_text(target, "a")
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]


def test_two_builders_on_one_prefix_do_not_share_temporary_files(tmp_path):
    """Two preprocess runs to one prefix: each writes its own temporary files; the one that
    finishes last wins whole, and neither is corrupted by the other."""
    prefix = str(tmp_path / "corpus")
    a = MMapIndexedDatasetBuilder(data_file_path(prefix), np.uint16)
    b = MMapIndexedDatasetBuilder(data_file_path(prefix), np.uint16)
    for i in range(50):  # interleaved, as two processes would be
        a.add_item(np.full(7, 1, dtype=np.uint16))
        a.end_document()
        b.add_item(np.arange(i % 5 + 1, dtype=np.uint16))
        b.end_document()
    a.finalize(index_file_path(prefix))
    b.finalize(index_file_path(prefix))
    ds = MMapIndexedDataset(prefix)
    assert len(ds) == 50
    assert [ds[i].tolist() for i in range(3)] == [[0], [0, 1], [0, 1, 2]]
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]
