"""tools/clean_data.py --executor ray for real: datatrove's RayPipelineExecutor on a Ray instance
that the run starts on this machine (RAY_ADDRESS unset) and stops when done. The outputs equal
the pool run's byte for byte, and no Ray process outlives the run.

Each run gets its own marker in the environment and its own Ray temp directory (RAY_TMPDIR): every
process of its Ray instance (GCS, raylet, agents, workers, the workers' pool processes) inherits
the environment, so the processes of this test are told apart from those of any other Ray user
on the machine (another test, CI)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from megatron_lite.curation.ray_run import RayRunError, run_stage
from tests.integration import test_clean_data as base

corpus = base.corpus  # the fixture: two .jsonl.zst files (a bad line in one) and a .txt
INPUT = "in/*.jsonl.zst,in/c.txt"
# 2 bands (3 bucket tasks: each Ray task is a new worker process, seconds on a loaded 2-core
# machine); the near copy of the corpus is still found. 0.5 GB per task: Ray's memory reservation.
CONFIG = "dedup: {num_perm: 8, bands: 2, rows: 4}\ncluster: {tasks: 2, mem_per_cpu_gb: 0.5}\n"
GRACE_SECONDS = 10  # for a process that ray.shutdown() has signalled to exit


@pytest.fixture
def job_dir(corpus, tmp_path) -> Path:
    shutil.copytree(corpus["root"], tmp_path / "in")
    (tmp_path / "c.yml").write_text(CONFIG)
    return tmp_path


@pytest.fixture
def ray_env() -> Iterator[dict]:
    """The environment of one run: no RAY_ADDRESS (a local instance), a marker, a short
    RAY_TMPDIR (Ray's socket paths must fit in 107 bytes, pytest's tmp_path may not)."""
    temp = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(RAY_TMPDIR=temp, CLEAN_DATA_RAY_TEST=uuid.uuid4().hex)
    yield env
    shutil.rmtree(temp, ignore_errors=True)


def ray_processes(env: dict) -> dict[tuple[int, str], tuple[str, int]]:
    """(pid, start time) -> (command line, RSS bytes) of every process of this run: those with
    its marker in their environment, and those holding a file under its RAY_TMPDIR (Ray's agents
    rename their process with setproctitle, which overwrites the environment /proc shows)."""
    marker = f"CLEAN_DATA_RAY_TEST={env['CLEAN_DATA_RAY_TEST']}".encode()
    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        proc = Path("/proc", pid)
        try:
            if marker not in (proc / "environ").read_bytes().split(b"\0") and not any(
                    os.readlink(fd).startswith(env["RAY_TMPDIR"] + "/") for fd in (proc / "fd").iterdir()):
                continue
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            started = (proc / "stat").read_text().rsplit(")", 1)[1].split()[19]  # pid reuse
            rss = int((proc / "statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:  # gone meanwhile, or not ours to read
            continue
        found[int(pid), started] = (cmdline, rss)
    return found


def still_alive(seen: dict) -> dict:
    alive = {}
    for (pid, started), (cmdline, _) in seen.items():
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19] == started:
                alive[pid] = cmdline
        except OSError:
            continue
    return alive


def run_clean(cwd: Path, env: dict, *args: str, executor: str = "ray") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(base.REPO / "tools" / "clean_data.py"), "--executor", executor,
                           *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=240)


class Sampler(threading.Thread):
    """Records the run's processes while it goes, and their peak total RSS."""

    def __init__(self, env: dict) -> None:
        super().__init__(daemon=True)
        self.env, self.stop, self.peak_rss, self.seen = env, threading.Event(), 0, {}

    def run(self) -> None:
        while not self.stop.wait(0.5):
            found = ray_processes(self.env)
            self.peak_rss = max(self.peak_rss, sum(rss for _, rss in found.values()))
            self.seen.update(found)


def test_ray_run_matches_pool(job_dir, ray_env):
    pool = run_clean(job_dir, ray_env, "--input", INPUT, "--output-dir", "pool", "--config", "c.yml",
                     executor="pool")
    assert pool.returncode == 0, pool.stderr
    sampler = Sampler(ray_env)
    sampler.start()
    start = time.monotonic()
    result = run_clean(job_dir, ray_env, "--input", INPUT, "--output-dir", "out", "--config", "c.yml",
                       "--workers", "2")
    seconds = time.monotonic() - start
    sampler.stop.set()
    sampler.join()
    assert result.returncode == 0, result.stderr
    assert "running on a local Ray instance (2 CPUs)" in result.stderr
    assert "documents: 15  kept: 12  removed: 3 (c4: 1, exact_duplicate: 1, near_duplicate: 1)" in result.stdout
    for name in base.OUTPUTS:
        assert (job_dir / "out" / name).read_bytes() == (job_dir / "pool" / name).read_bytes(), name
    assert sorted(p.name for p in (job_dir / "out").iterdir()) == sorted(base.OUTPUTS)  # the work dir is gone
    # the run did start Ray's processes (the sampler saw them), and none of them is left
    names = {cmd.split()[0].rsplit("/", 1)[-1].split(".")[0] for cmd, _ in sampler.seen.values() if cmd}
    assert {"raylet", "gcs_server", "ray::RankWorker"} <= names, names
    deadline = time.monotonic() + GRACE_SECONDS
    while (left := {**still_alive(sampler.seen), **{p: c for (p, _), (c, _) in ray_processes(ray_env).items()}}) \
            and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not left, left
    print(f"ray run: {seconds:.1f} s, {len(sampler.seen)} processes, peak RSS {sampler.peak_rss / 2**20:.0f} MiB")
    assert sampler.peak_rss < 4 * 2**30


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("address", ["closed", "not an address"])
def test_bad_ray_address_is_one_line(job_dir, ray_env, address):
    """RAY_ADDRESS that nothing answers: one error line in seconds (ray.init alone would retry
    for minutes), no traceback, no output directory, no Ray process started."""
    if address == "closed":
        address = f"127.0.0.1:{closed_port()}"
    start = time.monotonic()
    result = run_clean(job_dir, {**ray_env, "RAY_ADDRESS": address}, "--input", INPUT, "--output-dir", "out",
                       "--config", "c.yml")
    assert time.monotonic() - start < 60
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("clean_data.py: error:")]
    assert len(errors) == 1 and f"cannot connect to RAY_ADDRESS={address}" in errors[0], result.stderr
    assert not (job_dir / "out").exists() and not ray_processes(ray_env)


class FailedStage:
    """A datatrove executor whose task 1 failed: run() returned all the same (as datatrove's does)."""

    world_size = 2

    def run(self) -> None:
        pass

    def get_incomplete_ranks(self, ranks: range, skip_completed: bool) -> list[int]:
        return [1] if skip_completed else list(ranks)


def test_failed_task_is_one_line(tmp_path):
    """A failed task stops the run with its error, read from the task's log (the traceback's end)."""
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "task_00001.log").write_text(
        "2026-11-29 | ERROR | ...\nTraceback (most recent call last):\n  File \"x.py\", line 1\n"
        "megatron_lite.data.readers.InputError: in/b.jsonl.zst: truncated zstd file\n\nbye\n")
    with pytest.raises(RayRunError, match=r"1 of 2 process tasks failed; task 1: InputError: in/b.jsonl.zst: "
                                          r"truncated zstd file \(log: .*task_00001.log\)"):
        run_stage(FailedStage(), "process", str(tmp_path))
