"""``<save>/.megatron_lite.lock``: the run that writes a ``save`` directory holds its lock.

A second run with the same ``save`` fails at once with one line naming the holder (host, pid,
start time), instead of both "saving" and one silently losing its checkpoints. The lock is an
OS advisory lock (``fcntl.flock``, the standard library's) on that file, held by rank 0 for the
life of the process: the kernel drops it when the process dies, however it dies, so the next run
takes over a stale lock at once, with a warning naming the run that left it.
"""

from __future__ import annotations

import datetime
import fcntl
import os
import socket

from megatron_lite.checkpoint.layout import CheckpointError
from megatron_lite.utils.logging import get_logger

logger = get_logger(__name__)

LOCK_FILE = ".megatron_lite.lock"


class SaveDirLock:
    """Holds ``<save_dir>/.megatron_lite.lock`` from ``acquire()`` to ``release()`` (or exit)."""

    def __init__(self, save_dir: str) -> None:
        self.save_dir = save_dir
        self.path = os.path.join(save_dir, LOCK_FILE)
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, or raise ``CheckpointError`` naming the run that holds it."""
        try:
            os.makedirs(self.save_dir, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise CheckpointError(f"save: cannot create {self.path}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read(fd) or "another process"
            os.close(fd)
            raise CheckpointError(
                f"save directory {self.save_dir} is in use by another run ({holder}); "
                "wait for it to finish, or give this run another `save`") from None
        previous = _read(fd)
        if previous:
            logger.warning("%s: taking over the lock of a run that is no longer running (%s)",
                           self.save_dir, previous)
        started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"host {socket.gethostname()} pid {os.getpid()} started {started}\n".encode(), 0)
        os.fsync(fd)
        self._fd = fd

    def release(self) -> None:
        """Empty the file (a clean release, not a stale lock) and unlock it."""
        if self._fd is None:
            return
        os.ftruncate(self._fd, 0)
        os.close(self._fd)  # closing the last descriptor drops the flock
        self._fd = None


def _read(fd: int) -> str:
    return os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
