"""Saving and resuming training checkpoints through the DeepSpeed engine, crash-safely.

Save: every rank writes its part into ``global_step<N>/`` (DeepSpeed), then its own RNG state;
after a barrier, rank 0 writes config, tokenizer copies and ``megatron_lite.json`` (the
completeness mark), and only then moves ``latest`` (atomically). A crash at any point leaves
``latest`` on the previous complete step. DeepSpeed's own ``latest`` is not used: it is
written before DeepSpeed's final barrier, with a plain write.

Resume (``load``): weights, optimizer, LR schedule (DeepSpeed), RNG states and consumed
samples (ours). A weights-only checkpoint (resharded or converted: no optimizer states for any
layout) resumes its weights (any layout), iteration, consumed samples and LR schedule position,
with a fresh optimizer. Fine-tune (``finetune: true``): weights only, read with
``torch.load(weights_only=True)`` from any layout, iteration 0, fresh optimizer.
"""

from __future__ import annotations

import errno
import os
import shutil
import time
from typing import Any

import torch
import torch.distributed as dist

from megatron_lite.checkpoint.layout import (
    META_FILE,
    CheckpointError,
    CheckpointMeta,
    complete_steps,
    finish_step_dir,
    read_meta,
    resolve_step_dir,
    step_dir_name,
    write_latest,
)
from megatron_lite.checkpoint.lora import check_resumable
from megatron_lite.checkpoint.safe_load import deepspeed_may_load, safe_torch_load
from megatron_lite.config import Config, dump_yaml
from megatron_lite.parallel.random import get_rng_tracker
from megatron_lite.utils.files import fsync_tree
from megatron_lite.utils.logging import get_logger

logger = get_logger(__name__)


def _rng_file(step_dir: str, rank: int) -> str:
    return os.path.join(step_dir, f"rng_state_rank{rank}.pt")


def save_checkpoint(engine: Any, cfg: Config, iteration: int, consumed_samples: int,
                    tokenizer_files: list[str], vocab_size: int | None = None,
                    own_steps: list[int] | None = None) -> str:
    """Save step ``iteration`` to ``cfg.checkpoint.save`` (collective: every rank calls it).

    ``own_steps``: the steps this run saved so far (appended to); ``keep_last_n_checkpoints``
    deletes only among them, never a checkpoint another run wrote.
    """
    save_dir = cfg.checkpoint.save
    tag = step_dir_name(iteration)
    step_dir = os.path.join(save_dir, tag)
    _clear_for(step_dir)
    # LoRA: the frozen base is not saved (its source is in config.yml: checkpoint/lora.py).
    failure = _write_rank_files(engine, save_dir, step_dir, iteration, consumed_samples,
                                adapters_only=bool(cfg.post_training.lora))
    if dist.get_rank() == 0 and failure is None:
        meta = CheckpointMeta(iteration, consumed_samples, cfg.parallel.model_parallel_size,
                              cfg.parallel.pipe_parallel_size, vocab_size=vocab_size)
        failure = _attempt(lambda: finish_step_dir(step_dir, dump_yaml(cfg), tokenizer_files, meta))
        failure = failure or _attempt(lambda: write_latest(save_dir, iteration))
    _raise_if_any_failed(failure, save_dir, step_dir)  # collective: every rank learns of a failure
    if dist.get_rank() == 0:
        logger.info("saved checkpoint %s", step_dir)
    if own_steps is not None:
        own_steps.append(iteration)
        if dist.get_rank() == 0:
            _rotate(save_dir, cfg.checkpoint.keep_last_n_checkpoints, own_steps)
    dist.barrier()
    return step_dir


def _write_rank_files(engine: Any, save_dir: str, step_dir: str, iteration: int,
                      consumed_samples: int, adapters_only: bool = False) -> OSError | None:
    """This rank's part of the step (DeepSpeed's files, its RNG states), on disk; then every
    rank has written (barrier). Returns the OSError (a full disk, ...) instead of raising it.
    ``adapters_only``: the parameters that train, not the frozen ones."""
    frozen = {"exclude_frozen_parameters": True} if adapters_only else {}

    def write() -> None:
        engine.save_checkpoint(save_dir, tag=os.path.basename(step_dir), save_latest=False,
                               client_state={"iteration": iteration, "consumed_train_samples": consumed_samples},
                               **frozen)
        tracker = get_rng_tracker().snapshot()
        rng = {"torch": torch.get_rng_state(), "tracker": tracker[0]}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state()
            rng["tracker_cuda"] = tracker[1]
        torch.save(rng, _rng_file(step_dir, dist.get_rank()))
        fsync_tree(step_dir)  # this rank's files are on disk before rank 0 marks the step complete

    failure = _attempt(write)
    dist.barrier()
    return failure


def _attempt(write: Any) -> OSError | None:
    try:
        write()
    except OSError as exc:
        return exc
    except RuntimeError as exc:  # torch.save reports a full disk as a RuntimeError around errno
        if "No space left" in str(exc) or "file write failed" in str(exc):
            return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        raise
    return None


def _raise_if_any_failed(failure: OSError | None, save_dir: str, step_dir: str) -> None:
    """All ranks agree whether the save failed; if so the partial step is removed and each
    rank raises one ``CheckpointError`` naming the last complete checkpoint."""
    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else None
    flag = torch.tensor([0.0 if failure is None else float(failure.errno or 1)], device=device)
    if dist.get_world_size() > 1:
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    if not flag.item():
        return
    if dist.get_rank() == 0:
        shutil.rmtree(step_dir, ignore_errors=True)
    code = int(flag.item())
    reason = os.strerror(code).lower() if failure is None else (failure.strerror or str(failure)).lower()
    complete = complete_steps(save_dir)
    last = step_dir_name(complete[-1]) if complete else "none"
    raise CheckpointError(f"{reason} while saving {step_dir}; the last complete checkpoint is {last}")


def _clear_for(step_dir: str) -> None:
    """Never write into a complete step; remove what a crashed save left (collective)."""
    if os.path.isfile(os.path.join(step_dir, META_FILE)):
        raise CheckpointError(f"{step_dir} is a complete checkpoint: refusing to write into it")
    if dist.get_rank() == 0 and os.path.isdir(step_dir):
        logger.warning("removing %s, left incomplete by an interrupted save", step_dir)
        shutil.rmtree(step_dir)
    dist.barrier()


def _rotate(save_dir: str, keep_last: int | None, own_steps: list[int]) -> None:
    """Delete this run's oldest steps beyond ``keep_last`` (never the one just written)."""
    if not keep_last:
        return
    while len(own_steps) > keep_last:
        shutil.rmtree(os.path.join(save_dir, step_dir_name(own_steps.pop(0))), ignore_errors=True)


def move_later_steps_aside(save_dir: str, iteration: int) -> list[str]:
    """Before a run that resumed at ``iteration`` (a roll-back) saves into ``save_dir``: move the
    complete steps after it to ``<save_dir>/rolled_back_<time>/``, so that none is overwritten,
    and point ``latest`` at ``iteration``. Returns the moved steps."""
    later = [n for n in complete_steps(save_dir) if n > iteration]
    if not later:
        return []
    write_latest(save_dir, iteration)  # first: a crash from here on resumes the chosen step
    aside = os.path.join(save_dir, "rolled_back_" + time.strftime("%Y%m%d-%H%M%S"))
    os.makedirs(aside, exist_ok=True)
    moved = []
    for n in later:
        os.replace(os.path.join(save_dir, step_dir_name(n)), os.path.join(aside, step_dir_name(n)))
        moved.append(os.path.join(aside, step_dir_name(n)))
    logger.warning("rolled back to iteration %d: moved the later checkpoints %s aside to %s",
                   iteration, ", ".join(step_dir_name(n) for n in later), aside)
    return moved


def resumes_weights_only(cfg: Config) -> bool:
    """True when ``load`` (not fine-tuning) points at a weights-only checkpoint: its weights
    must then go into the module before DeepSpeed wraps it, as for ``finetune``."""
    ck = cfg.checkpoint
    if not ck.load or ck.finetune:
        return False
    try:
        return read_meta(resolve_step_dir(ck.load, ck.iteration)).weights_only
    except CheckpointError:
        return False  # nothing to resume, or an error load_for_resume reports


def load_for_resume(engine: Any, cfg: Config) -> tuple[int, int]:
    """Resume from ``load``: returns (iteration, consumed samples); (0, 0) when nothing to load."""
    ck = cfg.checkpoint
    try:
        step_dir = resolve_step_dir(ck.load, ck.iteration)
    except CheckpointError as exc:
        if ck.iteration is None and (not os.path.isdir(ck.load) or "no 'latest'" in str(exc)):
            logger.info("no checkpoint in %s: starting from scratch", ck.load)
            return 0, 0
        raise
    try:
        return _resume(engine, step_dir, cfg)
    except CheckpointError as exc:
        raise CheckpointError(f"{exc}{_fallback_hint(ck.load, step_dir)}") from None


def _resume(engine: Any, step_dir: str, cfg: Config) -> tuple[int, int]:
    ck = cfg.checkpoint
    meta = read_meta(step_dir)
    check_resumable(step_dir, cfg.post_training.lora)
    if meta.weights_only:
        return _resume_weights_only(engine, step_dir, meta)
    layout = (cfg.parallel.model_parallel_size, cfg.parallel.pipe_parallel_size)
    if (meta.model_parallel_size, meta.pipe_parallel_size) != layout:
        raise CheckpointError(
            f"{step_dir} was saved with model_parallel_size={meta.model_parallel_size}, "
            f"pipe_parallel_size={meta.pipe_parallel_size}; this run uses {layout[0]}, {layout[1]}. "
            "Reshard it (tools/reshard_checkpoint.py) or load weights only with finetune: true"
        )
    load_dir, tag = os.path.dirname(os.path.abspath(step_dir)), os.path.basename(step_dir)
    with deepspeed_may_load(step_dir):
        try:
            _, client = engine.load_checkpoint(
                load_dir, tag=tag, load_optimizer_states=not ck.no_load_optim,
                load_lr_scheduler_states=not ck.no_load_optim,
                # LoRA: the step holds the adapters; the frozen base is already loaded.
                load_module_strict=not cfg.post_training.lora,
            )
        except (RuntimeError, KeyError, ValueError, OSError) as exc:  # damaged content
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
            raise CheckpointError(f"{step_dir}: DeepSpeed could not load it ({first})") from None
    if client is None:
        raise CheckpointError(f"DeepSpeed could not load {step_dir}")
    if not ck.no_load_rng:
        _restore_rng(step_dir)
    logger.info("resumed from %s (iteration %d)", step_dir, meta.iteration)
    return int(client["iteration"]), int(client["consumed_train_samples"])


def _fallback_hint(load_dir: str, step_dir: str) -> str:
    """Which earlier complete step a damaged one can be replaced by (``iteration: N``)."""
    name = os.path.basename(os.path.normpath(step_dir))
    current = int(name.removeprefix("global_step")) if name.removeprefix("global_step").isdigit() else None
    earlier = [n for n in complete_steps(load_dir) if current is None or n < current]
    if not earlier:
        return ""
    return (f"; the previous complete checkpoint is {step_dir_name(earlier[-1])}: resume from it "
            f"with `iteration: {earlier[-1]}`")


def _resume_weights_only(engine: Any, step_dir: str, meta: CheckpointMeta) -> tuple[int, int]:
    """The weights are already in (``load_model_weights``); carry on the iteration count, the
    data position and the LR schedule (a function of the iteration), not the optimizer."""
    logger.warning(
        "%s holds weights only (resharded or converted): resuming at iteration %d (%d samples "
        "consumed) with a FRESH optimizer state (Adam moments restart from zero) and fresh RNG "
        "states; the LR schedule continues from iteration %d", step_dir, meta.iteration,
        meta.consumed_train_samples, meta.iteration)
    if engine.lr_scheduler is not None:
        engine.lr_scheduler.step(meta.iteration)
    return meta.iteration, meta.consumed_train_samples


def _restore_rng(step_dir: str) -> None:
    path = _rng_file(step_dir, dist.get_rank())
    if not os.path.isfile(path):
        logger.warning("%s missing: RNG states not restored (world size changed?)", path)
        return
    rng = safe_torch_load(path)
    torch.set_rng_state(rng["torch"])
    if torch.cuda.is_available() and "cuda" in rng:
        torch.cuda.set_rng_state(rng["cuda"])
    get_rng_tracker().restore((rng["tracker"], rng.get("tracker_cuda", {})))
