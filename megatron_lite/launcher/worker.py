"""Worker start-up, what every entry script (train.py, generate.py, evaluate.py) runs first:
``start_worker`` (config, logging, CPU allocator setting, process group) and ``finish_worker``.
Process groups: gloo on CPU, the configured backend on GPU."""

from __future__ import annotations

import contextlib
import os
import sys
from datetime import timedelta

import torch
import torch.distributed as dist

from megatron_lite.config import Config, pipe_stages
from megatron_lite.launcher.allocator import keep_freed_memory
from megatron_lite.launcher.scheduler_env import SchedulerEnvError
from megatron_lite.launcher.worker_args import WorkerArgs, parse_worker_args
from megatron_lite.parallel.state import ParallelState
from megatron_lite.utils.logging import get_logger, setup_logging

logger = get_logger(__name__)


def device_for(local_rank: int) -> torch.device:
    """This rank's device: its GPU when there is one, else the CPU."""
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def init_distributed(cfg: Config) -> ParallelState:
    """Initialize torch.distributed (through DeepSpeed's comm layer) and build the groups.

    Always initializes, even for one rank, so that the DeepSpeed engine and our code see one
    kind of world. The backend is gloo without CUDA (nccl cannot run on CPU). A rank waits
    ``rendezvous_timeout`` seconds for its peers (start-up and every collective), then fails.
    """
    import deepspeed

    backend = cfg.parallel.distributed_backend if torch.cuda.is_available() else "gloo"
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29500")
    os.environ.setdefault("RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    os.environ.setdefault("LOCAL_RANK", "0")
    if not dist.is_initialized():
        deepspeed.init_distributed(
            dist_backend=backend, timeout=timedelta(seconds=cfg.launcher.rendezvous_timeout), verbose=False
        )
        _unlink_deepspeed_shm_buffer()
    state = ParallelState.build(
        tp_size=cfg.parallel.model_parallel_size,
        pp_size=pipe_stages(cfg.parallel.pipe_parallel_size),
        sequence_parallel=cfg.parallel.sequence_parallel,
    )
    logger.info("parallel layout: %s", state.describe())
    return state


def _unlink_deepspeed_shm_buffer() -> None:
    """Remove this rank's name for DeepSpeed's CPU all-reduce buffer in /dev/shm.

    When every rank is on one machine (the launcher's LOCAL_SIZE equals the world size),
    DeepSpeed's CPU backend creates a 69 MB shared-memory file per rank,
    ``deepspeed_allreduce_buffer_<uid>_<MASTER_ADDR>_<MASTER_PORT>_<rank>``, and never removes
    it: every run left them behind in RAM-backed /dev/shm until it filled and new runs hung
    waiting for their peers' files. Once every rank has mapped its peers' buffers (the barrier),
    the names are not needed: the mappings stay valid, and the memory is freed when the last
    rank exits, however it exits.
    """
    if os.environ.get("LOCAL_SIZE") != str(dist.get_world_size()):
        return  # DeepSpeed made no buffer (its own condition)
    dist.barrier()
    name = "deepspeed_allreduce_buffer_{}_{}_{}_{}".format(
        os.getuid(), os.environ.get("MASTER_ADDR", ""), os.environ.get("MASTER_PORT", ""), dist.get_rank())
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join("/dev/shm", name))


def start_worker(argv: list[str] | None = None) -> tuple[WorkerArgs, ParallelState]:
    """What every entry script does first, in this order:

    1. read the config deepy.py passed (``worker_args.py``);
    2. log to the run directory (``rank<N>.log``, every rank; the console shows rank 0);
    3. on the CPU, with ``cpu_keep_freed_memory`` (default true), make malloc keep freed memory
       for reuse (``allocator.py``: no page faults in the step);
    4. build the process group and the parallel groups.
    """
    try:
        args = parse_worker_args(argv)
    except SchedulerEnvError as exc:  # logging is not set up yet: one plain line
        print(f"error: {exc}", file=sys.stderr, flush=True)
        os._exit(1)
    setup_logging(
        all_ranks=args.cfg.logging.log_all_ranks,
        log_file=os.path.join(args.run_dir, f"rank{args.rank}.log"),
    )
    if not torch.cuda.is_available() and args.cfg.launcher.cpu_keep_freed_memory:
        keep_freed_memory()
    try:
        return args, init_distributed(args.cfg)
    except dist.DistError as exc:  # the rendezvous: a peer never came (or the address is wrong)
        logger.error("rank %d of %d: no rendezvous with the other ranks at %s:%s within "
                     "rendezvous_timeout=%ss (did every node start? their logs say why): %s",
                     args.rank, args.world_size, os.environ.get("MASTER_ADDR"),
                     os.environ.get("MASTER_PORT"), args.cfg.launcher.rendezvous_timeout,
                     str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
        finish_worker(1)
        raise  # not reached


def finish_worker(code: int) -> None:
    """End a worker process: wait for the other ranks, flush, and exit without running C++
    static destructors. Gloo/DeepSpeed communication threads torn down at interpreter exit
    occasionally abort the process ("terminate called without an active exception") after all
    work is done; the results are already on disk by then, so skip that teardown."""
    import logging

    if dist.is_initialized() and code == 0:
        dist.barrier()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
