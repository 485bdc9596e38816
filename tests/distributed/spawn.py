"""Run a function on N gloo ranks (CPU) in fresh processes and collect what each returns.

A hang fails by timeout instead of blocking the suite: the parent waits at most
``timeout_s`` and then kills the workers.
"""

from __future__ import annotations

import os
import pickle
import socket
import tempfile
import traceback
from collections.abc import Callable
from typing import Any

import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _entry(rank: int, fn: Callable, world_size: int, port: int, out_dir: str, args: tuple) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
        WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
    )
    try:
        result: Any = ("ok", fn(rank, world_size, *args))
    except BaseException:  # report any failure, with its traceback, to the parent
        result = ("error", traceback.format_exc())
    with open(os.path.join(out_dir, f"{rank}.pkl"), "wb") as handle:
        pickle.dump(result, handle)
    # Exit without C++ static destructors, as workers do (utils.distributed.finish_worker):
    # gloo/DeepSpeed threads torn down at interpreter exit occasionally abort the process
    # ("terminate called without an active exception") after the result is written.
    os._exit(0)


def run_distributed(fn: Callable, world_size: int, *args: Any, timeout_s: float = 240) -> list[Any]:
    """``fn(rank, world_size, *args)`` on every rank; returns the results in rank order."""
    with tempfile.TemporaryDirectory() as out_dir:
        ctx = mp.start_processes(
            _entry, args=(fn, world_size, free_port(), out_dir, args), nprocs=world_size,
            join=False, start_method="spawn",
        )
        import time

        deadline = time.monotonic() + timeout_s
        while not ctx.join(timeout=1):
            if time.monotonic() > deadline:
                for proc in ctx.processes:
                    proc.kill()
                raise TimeoutError(f"distributed test did not finish in {timeout_s} s (hang?)")
        results = []
        for rank in range(world_size):
            with open(os.path.join(out_dir, f"{rank}.pkl"), "rb") as handle:
                status, value = pickle.load(handle)
            if status == "error":
                raise AssertionError(f"rank {rank} failed:\n{value}")
            results.append(value)
        return results
