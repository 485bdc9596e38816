"""Checkpoints are never lost (issue #17, 1-3): a finished run writes nothing, a roll-back moves
the later steps aside, a lost `latest` resumes the newest complete step, and one `save`
directory belongs to one run at a time. Faults are made from outside: files removed or
replaced, a second process started, a run killed."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.distributed.spawn import free_port
from tests.integration.test_train import REPO, base_config, run_train, start_faulty_train


def _snapshot(save: Path) -> dict[str, tuple[int, int]]:
    """path -> (size, mtime_ns) of every file below ``save`` except the lock."""
    return {str(p.relative_to(save)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in save.rglob("*") if p.is_file() and p.name != ".megatron_lite.lock"}


def test_finished_run_writes_nothing_and_exits_0(tmp_path, data_prefix):
    save = tmp_path / "ckpt"
    cfg = base_config(tmp_path, data_prefix, train_micro_batch_size_per_gpu=4, save=str(save),
                      load=str(save), checkpoint_factor=2, train_iters=4)
    run_train(tmp_path, cfg)
    before = _snapshot(save)
    again = run_train(tmp_path, cfg, "again.yml")
    assert "already at iteration 4 >= train_iters 4" in again.stderr
    assert _snapshot(save) == before  # global_step4 (what `latest` names) untouched


def test_roll_back_moves_the_later_steps_aside(tmp_path, data_prefix):
    save = tmp_path / "ckpt"
    cfg = base_config(tmp_path, data_prefix, train_micro_batch_size_per_gpu=4, save=str(save),
                      load=str(save), checkpoint_factor=2, train_iters=6)
    run_train(tmp_path, cfg)
    first_run = {n: (save / n / "mp_rank_00_model_states.pt").read_bytes() for n in ("global_step4", "global_step6")}
    result = run_train(tmp_path, {**cfg, "iteration": 2}, "rollback.yml")
    assert "rolled back to iteration 2" in result.stderr
    aside = list(save.glob("rolled_back_*"))
    assert len(aside) == 1
    for name, data in first_run.items():  # the first run's later steps, whole, aside
        assert (aside[0] / name / "mp_rank_00_model_states.pt").read_bytes() == data
        assert (aside[0] / name / "megatron_lite.json").exists()
    assert (save / "latest").read_text() == "global_step6"
    assert (save / "global_step6" / "megatron_lite.json").exists()  # the new run's own step 6


def test_lost_latest_resumes_the_newest_complete_step_and_deletes_nothing_old(tmp_path, data_prefix):
    save = tmp_path / "ckpt"
    cfg = base_config(tmp_path, data_prefix, train_micro_batch_size_per_gpu=4, save=str(save),
                      load=str(save), checkpoint_factor=2, train_iters=4)
    run_train(tmp_path, cfg)
    (save / "latest").unlink()
    (save / "latest").mkdir()  # `latest` that is a directory: as good as lost
    shutil.copytree(save / "global_step4", save / "global_step9")  # an incomplete step: ignored
    (save / "global_step9" / "megatron_lite.json").unlink()
    result = run_train(tmp_path, {**cfg, "train_iters": 8, "keep_last_n_checkpoints": 1}, "resume.yml")
    assert "no readable 'latest' file: using the newest complete step" in result.stderr
    assert "resumed from" in result.stderr and "global_step4" in result.stderr
    # keep_last_n_checkpoints deletes only what this run wrote: global_step2 and 4 stay.
    names = sorted(p.name for p in save.glob("global_step*"))
    assert "global_step2" in names and "global_step4" in names and "global_step8" in names
    assert "global_step6" not in names
    assert len(list(save.glob("latest.*.was_a_directory"))) == 1  # kept, under another name


def _lock_holder(save: Path) -> str:
    lock = save / ".megatron_lite.lock"
    return lock.read_text() if lock.exists() else ""


def test_one_run_per_save_directory_and_a_stale_lock_is_taken_over(tmp_path, data_prefix):
    save = tmp_path / "ckpt"
    long_cfg = base_config(tmp_path, data_prefix, train_micro_batch_size_per_gpu=4, save=str(save),
                           load=str(save), checkpoint_factor=1000, train_iters=100000, eval_interval=0)
    path = tmp_path / "long.yml"
    path.write_text(json.dumps(long_cfg))
    first = subprocess.Popen([sys.executable, str(REPO / "deepy.py"), str(REPO / "train.py"), str(path)],
                             cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)},
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while f"pid {first.pid}" not in _lock_holder(save) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert f"pid {first.pid}" in _lock_holder(save)
        second = run_train(tmp_path, {**long_cfg, "train_iters": 2, "master_port": free_port()},
                           "second.yml", expect_ok=False)
        assert second.returncode == 1
        assert f"is in use by another run (host {os.uname().nodename} pid {first.pid}" in second.stderr
        assert "Traceback" not in second.stderr
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    third = run_train(tmp_path, {**long_cfg, "train_iters": 2, "master_port": free_port()}, "third.yml")
    assert "taking over the lock of a run that is no longer running (host" in third.stderr
    assert f"pid {first.pid}" in third.stderr
    assert _lock_holder(save) == ""  # released cleanly at the end


class _RunsCode:
    """Unpickling this runs a shell command: what a crafted checkpoint file can hold."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_crafted_checkpoint_is_refused_not_run(tmp_path, data_prefix):
    import torch

    import megatron_lite
    from megatron_lite.checkpoint.layout import CheckpointError

    save = tmp_path / "ckpt"
    cfg = base_config(tmp_path, data_prefix, train_micro_batch_size_per_gpu=4, save=str(save),
                      load=str(save), checkpoint_factor=2, train_iters=2)
    run_train(tmp_path, cfg)
    marker = tmp_path / "code_ran"
    model_file = save / "global_step2" / "mp_rank_00_model_states.pt"
    torch.save({"module": {"w": torch.ones(1)}, "payload": _RunsCode(marker)}, model_file)
    # Resuming (DeepSpeed's loader), fine-tuning and load_model all refuse it, naming the file.
    resumed = run_train(tmp_path, {**cfg, "train_iters": 4}, "resume.yml", expect_ok=False)
    finetuned = run_train(tmp_path, {**cfg, "train_iters": 4, "finetune": True, "save": str(tmp_path / "ft")},
                          "finetune.yml", expect_ok=False)
    for result in (resumed, finetuned):
        assert result.returncode == 1
        assert f"{model_file}: refused to load: it would unpickle posix.system" in result.stderr
        assert "Traceback" not in result.stderr and "weights_only=False" not in result.stderr
    try:
        megatron_lite.load_model(str(save))
        raise AssertionError("load_model accepted a crafted checkpoint")
    except CheckpointError as exc:
        assert str(exc).startswith(f"{model_file}: refused to load: it would unpickle posix.system")
    assert not marker.exists()


def _damage_meta(step: Path) -> None:
    meta = json.loads((step / "megatron_lite.json").read_text())
    del meta["consumed_train_samples"]
    (step / "megatron_lite.json").write_text(json.dumps(meta))


def _newer_format(step: Path) -> None:
    meta = json.loads((step / "megatron_lite.json").read_text())
    (step / "megatron_lite.json").write_text(json.dumps({**meta, "format": 99}))


def _truncate(name: str):
    def damage(step: Path) -> None:
        data = (step / name).read_bytes()
        (step / name).write_bytes(data[: len(data) // 3])
    return damage


def test_a_damaged_latest_checkpoint_is_one_line_naming_the_file_and_the_fallback(tmp_path, data_prefix):
    save = tmp_path / "ckpt"
    cfg = base_config(tmp_path, data_prefix, train_micro_batch_size_per_gpu=4, save=str(save),
                      load=str(save), checkpoint_factor=2, train_iters=4)
    run_train(tmp_path, cfg)
    cases = {
        "megatron_lite.json: damaged (keys": _damage_meta,
        "megatron_lite.json: checkpoint format 99 is newer": _newer_format,
        "mp_rank_00_model_states.pt: not a readable checkpoint file": _truncate("mp_rank_00_model_states.pt"),
        "rng_state_rank0.pt: not a readable checkpoint file": _truncate("rng_state_rank0.pt"),
    }
    for n, (expected, damage) in enumerate(cases.items()):
        copy = tmp_path / f"copy{n}"
        shutil.copytree(save, copy)
        damage(copy / "global_step4")
        result = run_train(tmp_path, {**cfg, "save": str(copy), "load": str(copy), "train_iters": 6,
                                      "master_port": free_port()}, f"resume{n}.yml", expect_ok=False)
        assert result.returncode == 1, expected
        assert f"{copy / 'global_step4'}/{expected}" in result.stderr, result.stderr[-2000:]
        assert "the previous complete checkpoint is global_step2: resume from it with `iteration: 2`" \
            in result.stderr
        assert "Traceback" not in result.stderr


def test_save_that_is_a_file_fails_before_launch(tmp_path, data_prefix):
    (tmp_path / "ckpt").write_text("not a directory")
    cfg = base_config(tmp_path, data_prefix, train_micro_batch_size_per_gpu=4, save=str(tmp_path / "ckpt"))
    result = run_train(tmp_path, cfg, expect_ok=False)
    assert result.returncode == 1
    assert f"save: {tmp_path / 'ckpt'} exists and is not a directory" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "logs").exists()


# train.py on a disk that fills up during the second save (ENOSPC from torch.save, injected
# from outside the library).
_FULL_DISK_TRAIN = """
import errno, os, sys
import torch
from megatron_lite.training.main import main

_save = torch.save

def _filling_disk(obj, path, *args, **kwargs):
    if "global_step4" in str(path):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    return _save(obj, path, *args, **kwargs)

torch.save = _filling_disk
sys.exit(main())
"""


def test_disk_full_during_a_save_is_one_line_and_leaves_no_partial_step(tmp_path, data_prefix):
    save = tmp_path / "ckpt"
    cfg = base_config(tmp_path, data_prefix, train_micro_batch_size_per_gpu=4, save=str(save),
                      load=str(save), checkpoint_factor=2, train_iters=6)
    proc = start_faulty_train(tmp_path, cfg, _FULL_DISK_TRAIN)
    _, err = proc.communicate(timeout=300)
    result = subprocess.CompletedProcess(proc.args, proc.returncode, "", err)
    assert result.returncode == 1
    assert (f"no space left on device while saving {save / 'global_step4'}; the last complete "
            "checkpoint is global_step2") in result.stderr
    assert "Traceback" not in result.stderr
    assert not (save / "global_step4").exists() and (save / "latest").read_text() == "global_step2"
