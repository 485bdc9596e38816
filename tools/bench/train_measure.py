"""How ``train.py`` times the training steps: per-step timing with the device drained, peak
memory (resident set growth on the CPU, the allocator's peak on a GPU), and the three ways to
run the implementations: resident side by side (CPU), rebuilt one at a time (GPU), or each in a
process of its own (``--isolate``)."""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import multiprocessing
import os
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import torch
from train_impls import BUILDERS, Shape, Step, _import_all, _steps_for, model_config, random_batches

from megatron_lite.config import Config
from megatron_lite.launcher.allocator import keep_freed_memory


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class PeakRSS:
    """Peak resident set growth (MB) while the block runs, sampled every millisecond."""

    def __enter__(self) -> PeakRSS:
        try:  # hand freed heap back first, so growth is not hidden by reuse of old pages
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except OSError:
            pass
        self.base = self.peak = _rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.001):
            self.peak = max(self.peak, _rss_mb())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_mb())

    @property
    def growth_mb(self) -> float:
        return self.peak - self.base


def time_steps(step: Step, count: int, device: torch.device) -> float:
    """Milliseconds per step over ``count`` steps (the device drained before and after)."""
    _sync(device)
    start = time.perf_counter()
    for _ in range(count):
        loss = step()
    _sync(device)
    if isinstance(loss, torch.Tensor) and not torch.isfinite(loss):
        raise RuntimeError("non-finite loss")
    return 1000.0 * (time.perf_counter() - start) / count


@dataclass
class Measured:
    ms: list[float] = field(default_factory=list)
    peak_mem_mb: float = 0.0


def _warm(impl: str, cfg: Config, batches: list[torch.Tensor], device: torch.device,
          warmup: int) -> tuple[Step, float]:
    """Build ``impl`` and run its warmup steps; returns the step and its peak memory (MB)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        step = BUILDERS[impl](cfg, batches, device)
        time_steps(step, warmup, device)
        return step, torch.cuda.max_memory_allocated() / 2**20
    with PeakRSS() as rss:
        step = BUILDERS[impl](cfg, batches, device)
        time_steps(step, warmup, device)
    return step, rss.growth_mb


def measure_resident(cfg: Config, batches: list[torch.Tensor], impls: tuple[str, ...], warmup: int,
                     steps: int, repeats: int, device: torch.device) -> dict[str, Measured]:
    """CPU: build all implementations once, then alternate timed repeats between them."""
    results, step_fns = {impl: Measured() for impl in impls}, {}
    for impl in impls:
        step_fns[impl], results[impl].peak_mem_mb = _warm(impl, cfg, batches, device, warmup)
    for r in range(repeats):
        for impl in impls[r % len(impls):] + impls[: r % len(impls)]:
            results[impl].ms.append(time_steps(step_fns[impl], steps, device))
    return results


def measure_rebuilding(cfg: Config, batches: list[torch.Tensor], impls: tuple[str, ...], warmup: int,
                       steps: int, repeats: int, device: torch.device) -> dict[str, Measured]:
    """GPU: one implementation in memory at a time (three 1.3B models with optimizer state
    would not fit together); each repeat rebuilds, warms up and times each in turn."""
    results = {impl: Measured() for impl in impls}
    for r in range(repeats):
        for impl in impls[r % len(impls):] + impls[: r % len(impls)]:
            step, peak = _warm(impl, cfg, batches, device, warmup)
            results[impl].ms.append(time_steps(step, steps, device))
            results[impl].peak_mem_mb = max(results[impl].peak_mem_mb, peak,
                                            torch.cuda.max_memory_allocated() / 2**20)
            del step
            gc.collect()
            torch.cuda.empty_cache()
    return results


def _keeps_freed_memory(impl: str, args: argparse.Namespace) -> bool:
    """Whether ``impl``'s isolated process keeps freed memory: ours does, as train.py's CPU
    workers do; the references only with ``--reference-keep-freed-memory``."""
    return impl == "megatron_lite" or args.reference_keep_freed_memory


def _isolated_worker(impl: str, shape: Shape, args: argparse.Namespace, conn: Any) -> None:
    """One implementation in a process of its own: build and warm up, report the memory, then
    time as many steps as each request asks for until told to stop (None)."""
    try:
        if _keeps_freed_memory(impl, args):
            keep_freed_memory()
        device = torch.device("cpu")
        _import_all(shape, argparse.Namespace(**{**vars(args), "impls": [impl]}), device)
        warmup, steps = _steps_for(shape, args)
        cfg = model_config(shape, args.bf16, args.compile, args.arch)
        step, peak = _warm(impl, cfg, random_batches(shape, max(steps, 4)), device, warmup)
        conn.send(("ok", peak))
        while (count := conn.recv()) is not None:
            conn.send(("ok", time_steps(step, count, device)))
    except BaseException:  # noqa: BLE001 - the parent reports it with the worker's traceback
        conn.send(("error", traceback.format_exc()))
    conn.close()
    os._exit(0)  # skip process-group teardown (see tests/distributed/spawn.py)


def _reply(impl: str, conn: Any) -> Any:
    try:
        status, value = conn.recv()
    except EOFError:
        raise RuntimeError(f"{impl} worker exited without replying (killed, e.g. out of memory?)") from None
    if status != "ok":
        raise RuntimeError(f"{impl} worker failed:\n{value}")
    return value


def measure_isolated(shape: Shape, args: argparse.Namespace, impls: tuple[str, ...],
                     steps: int, repeats: int) -> dict[str, Measured]:
    """CPU, ``--isolate``: each implementation in a process of its own, set up as its users'
    would be (our train.py keeps freed host memory; see ``_keeps_freed_memory``). They are
    built one after another, then the timed repeats alternate between them as in
    ``measure_resident``; a process waits, idle, while another runs."""
    ctx = multiprocessing.get_context("spawn")
    results, workers = {impl: Measured() for impl in impls}, {}
    try:
        for impl in impls:
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_isolated_worker, args=(impl, shape, args, child), daemon=True)
            proc.start()
            workers[impl] = (proc, parent)
            results[impl].peak_mem_mb = _reply(impl, parent)
        for r in range(repeats):
            for impl in impls[r % len(impls):] + impls[: r % len(impls)]:
                workers[impl][1].send(steps)
                results[impl].ms.append(_reply(impl, workers[impl][1]))
    finally:
        for proc, conn in workers.values():
            with contextlib.suppress(OSError):
                conn.send(None)
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
    return results
