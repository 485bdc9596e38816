"""deepy.py stays the parent of a multi-process run and turns a stop signal into a clean stop.

Why not hand the process over to DeepSpeed's runner (``exec``), as a one-rank run does:
- a SIGTERM to the runner (what ``kill``, systemd, Kubernetes and ``docker stop`` send to the pid
  they started) reached only the runner; the workers trained on as orphans;
- DeepSpeed's per-node ``launch`` answers SIGTERM/SIGINT by SIGTERM-ing the workers and
  SIGKILL-ing them 30 s later (``terminate_process_tree``): a longer save never completed;
- across nodes the runner cleans up with ``pkill -f`` on a pattern any job started the same way
  matches, and exits with -15 even after a good save.

So the runner starts in a session of its own (a terminal's Ctrl-C or hang-up reaches only
deepy.py), and on SIGTERM, SIGINT or SIGHUP deepy.py sends SIGTERM straight to this run's workers
(on every node: ``pkill`` through pdsh, on a pattern only they match). Each worker saves and
exits 0; the launchers then exit 0 on their own and so does deepy.py. ``stop_grace_period``
bounds the wait; past it, or at a second signal, every process of the run is killed (the
checkpoint's ``latest`` still names the last complete step: saves are crash-safe).

A worker of this run is a process whose argument list holds ``--local_rank=N`` (added by
DeepSpeed's launch) and ``--run_dir=<this run's directory>`` (unique per run). Its DataLoader
workers share that argument list and ignore stop signals (``utils/processes.py``).
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import time
from collections.abc import Sequence

import psutil  # DeepSpeed's own dependency; the portable way to walk a process tree

from megatron_lite.launcher.worker_args import RUN_DIR_ARG
from megatron_lite.utils.logging import get_logger

logger = get_logger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def is_worker(argv: Sequence[str], run_dir: str) -> bool:
    """Whether ``argv`` is a rank of the run in ``run_dir`` (see the module docstring)."""
    return f"{RUN_DIR_ARG}={run_dir}" in argv and any(a.startswith("--local_rank=") for a in argv)


def _ere_escape(text: str) -> str:
    """``text`` as a literal in a POSIX extended regular expression (what pkill reads)."""
    return re.sub(r"([.\[\]()*+?{}|^$\\])", r"\\\1", text)


def remote_signal_command(hosts: Sequence[str], run_dir: str, sig: signal.Signals) -> list[str]:
    """pdsh argv that sends ``sig`` to this run's workers on ``hosts``, and to nothing else.

    The pattern is passed through the remote shell quoted: a path is data, never code.
    """
    pattern = f"--local_rank=[0-9]+ .*{_ere_escape(f'{RUN_DIR_ARG}={run_dir}')}( |$)"
    remote = f"pkill -{sig.name.removeprefix('SIG')} -f -- {shlex.quote(pattern)}"
    return ["pdsh", "-S", "-f", "1024", "-w", ",".join(hosts), remote]


class Supervisor:
    """Run ``cmd`` (DeepSpeed's runner or launch) and stop its workers cleanly on a signal."""

    def __init__(self, cmd: list[str], env: dict[str, str], run_dir: str,
                 remote_hosts: Sequence[str] = (), grace_period: float | None = None,
                 scheduler_started: bool = False) -> None:
        """``remote_hosts``: the nodes a pdsh launch reaches (signalled through pdsh).
        ``scheduler_started``: mpirun or srun started the ranks; they forward a SIGTERM sent to
        them to every rank, so the signal goes to the runner's children (mpirun / srun)."""
        self.cmd, self.env, self.run_dir = cmd, env, run_dir
        self.remote_hosts = list(remote_hosts)
        self.scheduler_started = scheduler_started
        self.grace_period = grace_period
        self.proc: subprocess.Popen | None = None
        self.stop_deadline: float | None = None  # set by the first stop signal
        self.killed = False

    def run(self) -> int:
        """Start, wait, and return the exit code the run should have (0 after a clean stop)."""
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._on_signal)
        self.proc = subprocess.Popen(self.cmd, env=self.env, start_new_session=True)
        while True:
            try:
                code = self.proc.wait(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                if not self.killed and self.stop_deadline is not None and time.monotonic() > self.stop_deadline:
                    logger.error("the ranks did not stop within stop_grace_period=%ss: killing them",
                                 self.grace_period)
                    self._kill_everything()
        if self.killed:
            return 1
        return code if code >= 0 else 128 - code  # a signal's death as the shell reports it

    def _on_signal(self, signum: int, _frame: object) -> None:
        name = signal.Signals(signum).name
        if self.killed:
            return
        if self.stop_deadline is not None:
            logger.warning("%s again: killing the run now (the last complete checkpoint stays)", name)
            self._kill_everything()
            return
        logger.warning("%s: asking every rank to save and stop%s", name,
                       f" (at most {self.grace_period} s)" if self.grace_period else "")
        self.stop_deadline = (time.monotonic() + self.grace_period) if self.grace_period else float("inf")
        self._signal_workers(signal.SIGTERM)

    def _signal_workers(self, sig: signal.Signals) -> None:
        tree = self._local_tree()
        for proc in tree:
            try:
                if is_worker(proc.cmdline(), self.run_dir) or (
                        self.scheduler_started and proc.ppid() == self.proc.pid):
                    proc.send_signal(sig)
            except psutil.Error:
                pass  # it exited meanwhile
        if self.remote_hosts:
            subprocess.run(remote_signal_command(self.remote_hosts, self.run_dir, sig),
                           env=self.env, check=False, timeout=120)

    def _local_tree(self) -> list[psutil.Process]:
        try:
            root = psutil.Process(self.proc.pid)
            return [root, *root.children(recursive=True)]
        except psutil.Error:
            return []

    def _kill_everything(self) -> None:
        self.killed = True
        if self.remote_hosts:
            self._signal_workers(signal.SIGKILL)
        for proc in self._local_tree():
            try:
                proc.kill()
            except psutil.Error:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # anything the tree walk missed
        except (ProcessLookupError, PermissionError):
            pass
