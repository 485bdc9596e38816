"""A stop signal to deepy.py's pid with several ranks (issue #17, points 4 and 27).

The signal comes from outside, as ``kill``, systemd, Kubernetes or a closed terminal send it; the
save is slowed from outside (a wrapper around train.py's main) to show that it is not cut short.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import psutil
import pytest

from tests.integration.test_train import base_config, records, start_faulty_train

# train.py with every save held for HOLD s before it is marked complete (fault injected here).
_SLOW_SAVE = """
import sys, time
from megatron_lite.checkpoint import engine
from megatron_lite.training.main import main

_finish = engine.finish_step_dir

def _slow_finish(*args, **kwargs):
    time.sleep({hold})
    return _finish(*args, **kwargs)

engine.finish_step_dir = _slow_finish
sys.exit(main())
"""


def _run_processes(tmp_path: Path) -> list[psutil.Process]:
    """Processes whose command line names this test's run directories (ranks, their helpers)."""
    marker = str(tmp_path / "logs")
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any(marker in arg for arg in proc.info["cmdline"] or []):
                found.append(proc)
        except psutil.Error:
            pass
    return found


def _start(tmp_path: Path, data_prefix: str, hold: float, **overrides):
    save = tmp_path / "ckpt"
    cfg = base_config(tmp_path, data_prefix, save=str(save), train_iters=100000,
                      checkpoint_factor=100000, eval_interval=0, num_gpus=2, num_workers=1,
                      train_micro_batch_size_per_gpu=2, **overrides)
    proc = start_faulty_train(tmp_path, cfg, _SLOW_SAVE.format(hold=hold))
    deadline = time.monotonic() + 180
    while len(records(tmp_path)) < 2 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.5)
    assert proc.poll() is None, proc.communicate()[1][-3000:]
    return proc, save


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_a_stop_signal_to_deepy_saves_on_every_rank_and_exits_0(tmp_path, data_prefix, sig):
    proc, save = _start(tmp_path, data_prefix, hold=3)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err[-3000:]
    latest = (save / "latest").read_text()
    assert int(latest.removeprefix("global_step")) >= 2
    assert (save / latest / "megatron_lite.json").exists()
    rank_logs = sorted((tmp_path / "logs").glob("*/rank*.log"))
    assert [p.name for p in rank_logs] == ["rank0.log", "rank1.log"]
    assert all("received signal 15" in p.read_text() for p in rank_logs)  # SIGTERM, whatever came
    assert "Killing subprocess" not in err  # DeepSpeed's launch never started its 30 s kill
    assert _run_processes(tmp_path) == []  # no orphans: ranks, DataLoader workers, launchers


def test_the_grace_period_ends_a_save_that_takes_too_long(tmp_path, data_prefix):
    proc, save = _start(tmp_path, data_prefix, hold=600, stop_grace_period=2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1
    assert "did not stop within stop_grace_period=2" in err
    assert not (save / "latest").exists()  # the cut save never became a checkpoint
    deadline = time.monotonic() + 10
    while _run_processes(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _run_processes(tmp_path) == []
