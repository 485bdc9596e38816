"""The training loop: setup, train steps, evaluation, checkpoints, logging, signals.

    args, state = start_worker()
    Trainer(args, state).train()

Runtime state (iteration, consumed samples, loaders, writers, tokenizer) lives here, never on
the frozen config.
"""

from __future__ import annotations

import math
import signal
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist

from megatron_lite.checkpoint.engine import (
    load_for_resume,
    move_later_steps_aside,
    resumes_weights_only,
    save_checkpoint,
)
from megatron_lite.checkpoint.layout import CheckpointError
from megatron_lite.checkpoint.loader import load_model_weights
from megatron_lite.checkpoint.lock import SaveDirLock
from megatron_lite.config import Config
from megatron_lite.config.lora import with_lora_base
from megatron_lite.data.data_utils import (
    build_train_valid_test_datasets,
    train_valid_test_num_samples,
)
from megatron_lite.data.gpt_dataset import train_iters_from_epochs
from megatron_lite.data.loaders import build_data_loader
from megatron_lite.launcher.worker import device_for
from megatron_lite.launcher.worker_args import WorkerArgs
from megatron_lite.model.gpt import log_model_size
from megatron_lite.model.reward import REWARD_HEAD_KEY
from megatron_lite.parallel.random import seed_everything
from megatron_lite.parallel.state import ParallelState
from megatron_lite.tokenizer import build_tokenizer
from megatron_lite.training import steps
from megatron_lite.training.engine import build_engine, build_module, is_pipelined
from megatron_lite.training.lora import add_lora, lora_base
from megatron_lite.training.metrics import MetricsWriter
from megatron_lite.training.steps import Progress
from megatron_lite.utils.logging import get_logger

logger = get_logger(__name__)


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss, ...); the message says why."""


class Trainer:
    """One training run on this rank: built from the worker's config and parallel groups, run by
    ``train()``. Holds the runtime state (progress, engine, data iterators, metrics)."""

    lora_base: str | None = None  # LoRA: where the frozen weights came from (every save records it)

    def __init__(self, args: WorkerArgs, state: ParallelState) -> None:
        self.cfg, self.state, self.run_dir = args.cfg, state, args.run_dir
        self.device = device_for(args.local_rank)
        self.pipelined = is_pipelined(self.cfg)
        self.progress = Progress()
        self.stop_signal = 0
        seed_everything(self.cfg.training.seed, state.tp_rank, state.pp_rank)
        self.tokenizer = build_tokenizer(self.cfg.tokenizer)
        self._check_runtime()
        self.save_lock = self._lock_save_dir()
        self.saved_steps: list[int] = []  # what keep_last_n_checkpoints may delete
        self._build_data()
        self._build_engine()
        self._load()
        self.train_batches = self._batches("train", self.progress.consumed_train_samples)
        self.valid_batches = self._batches("valid", self._valid_samples_read())
        self.metrics = MetricsWriter(self.cfg, self.run_dir, dist.get_rank())

    # ---- setup ---------------------------------------------------------------------------------
    def _check_runtime(self) -> None:
        cfg = self.cfg
        if cfg.training.precision == "fp16" and self.device.type != "cuda":
            raise TrainingError("fp16 training needs a GPU; use fp32 (no fp16/bf16 section) on CPU")
        if cfg.model.padded_vocab_size is None:
            raise TrainingError("padded_vocab_size unknown: is the tokenizer's vocab_file readable?")
        if cfg.training.train_iters is None and cfg.training.train_epochs is None:
            raise TrainingError("set train_iters or train_epochs")
        if cfg.checkpoint.save is None:
            logger.warning("no `save` directory: this run will not write checkpoints")
        eod_keys = [k for k in ("eod_mask_loss", "reset_position_ids", "reset_attention_mask")
                    if getattr(cfg.data, k)]
        if eod_keys and getattr(self.tokenizer, "eod", None) is None:
            raise TrainingError(f"{', '.join(eod_keys)} need the tokenizer's end-of-document id, "
                                f"and {cfg.tokenizer.tokenizer_type} has none")

    def _build_data(self) -> None:
        cfg, tr = self.cfg, self.cfg.training
        if tr.train_epochs is not None:
            num_samples: tuple[Any, Any, Any] = (None, None, None)
        else:
            num_samples = train_valid_test_num_samples(
                tr.train_iters, tr.eval_interval or tr.train_iters, tr.eval_iters, tr.train_batch_size)
        self.datasets = dict(zip(("train", "valid", "test"), build_train_valid_test_datasets(
            cfg.data, cfg.model.seq_length, tr.seed, num_samples, vocab_size=cfg.model.padded_vocab_size)))
        if self.datasets["train"] is None:
            raise TrainingError("the training split is empty: check `split` and the data paths")
        self.train_iters = tr.train_iters or train_iters_from_epochs(
            len(self.datasets["train"]), tr.train_epochs, tr.train_batch_size)
        self.lr_decay_iters = cfg.lr_schedule.lr_decay_iters or self.train_iters
        self.tokens_per_step = tr.train_batch_size * cfg.model.seq_length
        logger.info("training for %d iterations (%d tokens each)", self.train_iters, self.tokens_per_step)

    def _build_engine(self) -> None:
        cfg = self.cfg
        log_model_size(cfg.model)
        module = self._build_module()
        self.engine, self.optimizer, self.schedule = build_engine(
            cfg, self.state, module, self.lr_decay_iters, on_gpu=self.device.type == "cuda")

    def _build_module(self) -> torch.nn.Module:
        """This rank's model, holding the weights training starts from (before DeepSpeed wraps it)."""
        module = build_module(self.cfg, self.state)
        if self.cfg.post_training.lora:  # the frozen base weights, then adapters (training/lora.py)
            self.lora_base = lora_base(self.cfg)
            return add_lora(module, self.cfg, self.state.tp_rank, self.pipelined, self.lora_base)
        if self.cfg.checkpoint.finetune or resumes_weights_only(self.cfg):
            # A reward model's head may be new: it starts from its initialisation.
            load_model_weights(module, self.cfg, self.state.tp_rank, self.pipelined, new_heads=(REWARD_HEAD_KEY,))
        return module

    def _lock_save_dir(self) -> SaveDirLock | None:
        """Rank 0 locks ``save`` (one run writes a directory); every rank learns the outcome."""
        save = self.cfg.checkpoint.save
        if not save:
            return None
        lock, error = SaveDirLock(save), None
        if dist.get_rank() == 0:
            try:
                lock.acquire()
            except CheckpointError as exc:
                error = str(exc)
        holder = [error]
        if dist.get_world_size() > 1:
            dist.broadcast_object_list(holder, src=0)
        if holder[0]:
            raise CheckpointError(holder[0])
        return lock

    def _load(self) -> None:
        ck = self.cfg.checkpoint
        if ck.load and not ck.finetune:
            it, consumed = load_for_resume(self.engine, self.cfg)
            self.progress = Progress(iteration=it, consumed_train_samples=consumed)
        if ck.save and self.progress.iteration < self.train_iters:
            # Resumed at an earlier step than the newest (a roll-back): the later complete steps
            # would be written over; they are moved aside first.
            if dist.get_rank() == 0:
                move_later_steps_aside(ck.save, self.progress.iteration)
            dist.barrier()

    def _valid_samples_read(self) -> int:
        """Validation samples an uninterrupted run read before ``progress.iteration``: ``eval_iters``
        global batches at every ``eval_interval``-th iteration. A resumed run continues there (as
        GPT-NeoX and Megatron-LM do), so its validation losses equal the uninterrupted run's."""
        tr = self.cfg.training
        if not tr.eval_interval:
            return 0
        return (self.progress.iteration // tr.eval_interval) * tr.eval_iters * tr.train_batch_size

    def _loader(self, split: str, consumed: int) -> Any:
        """This rank's DataLoader of ``split`` from ``consumed`` samples on (None without data)."""
        return build_data_loader(
            self.datasets[split], self.cfg.training.train_micro_batch_size_per_gpu,
            self.state.dp_rank, self.state.dp_size, consumed, self.cfg.data.num_workers,
            loop=split != "train" or self.cfg.training.train_epochs is not None,
        )

    def _batches(self, split: str, consumed: int) -> Iterator[steps.Batch] | None:
        """Micro batches of ``split`` on the device, from ``consumed`` samples on (None without data)."""
        loader = self._loader(split, consumed)
        if loader is None:
            return None
        data = self.cfg.data
        return steps.micro_batches(
            iter(loader), getattr(self.tokenizer, "eod", None), self.engine.device,
            eod_mask_loss=data.eod_mask_loss, reset_position_ids=data.reset_position_ids,
            reset_attention_mask=data.reset_attention_mask)

    # ---- the loop ------------------------------------------------------------------------------
    def train(self) -> int:
        """Run to ``train_iters`` (or an exit condition); returns the process exit code."""
        try:
            if self.progress.iteration >= self.train_iters:
                logger.info("already at iteration %d >= train_iters %d: nothing to train",
                            self.progress.iteration, self.train_iters)
                return 0
            return self._loop()
        finally:
            self.metrics.close()
            if self.save_lock is not None:
                self.save_lock.release()

    def _loop(self) -> int:
        self._install_signal_handlers()
        bar = _progress_bar(self.train_iters, self.progress.iteration, dist.get_rank() == 0)
        window = steps.Window()
        try:
            while self.progress.iteration < self.train_iters:
                result = self._train_step()
                self._after_step(result, window, bar)
                if self._should_stop(window):
                    return 0
            self._final()
            return 0
        finally:
            bar.close()

    def _train_step(self) -> steps.StepResult:
        return steps.train_step(self.engine, self.schedule, self.train_batches, self.state, self.pipelined)

    def _after_step(self, result: steps.StepResult, window: steps.Window, bar: Any) -> None:
        p, cfg = self.progress, self.cfg
        p.iteration += 1
        p.consumed_train_samples += cfg.training.train_batch_size
        p.skipped_iters += int(result.skipped)
        window.add(result)
        bar.update(1)
        log_due = p.iteration % cfg.logging.log_interval == 0
        eval_due = bool(cfg.training.eval_interval and p.iteration % cfg.training.eval_interval == 0)
        save_due = self._save_due(p.iteration)
        if not (log_due or eval_due or save_due or p.iteration >= self.train_iters):
            return  # losses are read (a device sync) only where something uses them
        self._check_losses(window)
        if log_due:
            record = steps.training_record(window, p, self.tokens_per_step, cfg.model,
                                           cfg.training.peak_theoretical_tflops)
            self.metrics.write(record, p.iteration)
            logger.info(steps.format_record(record))
            bar.set_postfix(loss=f"{record['loss']:.4f}", refresh=False)
            window.reset()
        if eval_due or save_due:
            window.pause()  # evaluation and checkpoints are not training time
            if eval_due:
                self.evaluate("valid")
            if save_due:
                self.save()
            window.resume()

    def _check_losses(self, window: steps.Window) -> None:
        """Stop on a non-finite loss before anything is logged, evaluated or saved after it."""
        first = self.progress.iteration - len(window.results) + 1
        for i, (result, loss) in enumerate(zip(window.results, window.losses())):
            if i >= window.checked and not result.skipped and not math.isfinite(loss):
                raise TrainingError(
                    f"loss is {loss} at iteration {first + i}: stopping without saving; "
                    f"the last good checkpoint is in {self.cfg.checkpoint.save}. Lower the "
                    "learning rate, check the data, or use bf16/fp32")
        window.checked = len(window.results)

    def _save_due(self, iteration: int) -> bool:
        ck = self.cfg.checkpoint
        if not ck.save:
            return False
        return bool((ck.checkpoint_factor and iteration % ck.checkpoint_factor == 0)
                    or iteration in (ck.extra_save_iters or []))

    def _should_stop(self, window: steps.Window) -> bool:
        it, exit_interval = self.progress.iteration, self.cfg.training.exit_interval
        flag = torch.tensor([float(self.stop_signal)], device=self.device)  # nccl needs device tensors
        if dist.get_world_size() > 1:
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if flag.item() or (exit_interval and it % exit_interval == 0 and it < self.train_iters):
            reason = f"signal {int(flag.item())}" if flag.item() else f"exit_interval {exit_interval}"
            logger.info("stopping at iteration %d (%s)", it, reason)
            self._check_losses(window)
            if self.cfg.checkpoint.save and not self._save_due(it):
                self.save()
            return True
        return False

    def _final(self) -> None:
        it = self.progress.iteration
        if self.cfg.checkpoint.save and not self._save_due(it):
            self.save()
        if self.cfg.training.eval_interval == 0 or it % self.cfg.training.eval_interval:
            self.evaluate("valid")
        self.evaluate("test")
        logger.info("training finished at iteration %d; run directory %s", it, self.run_dir)

    def save(self) -> None:
        tok = self.cfg.tokenizer
        files = [f for f in (tok.vocab_file, tok.merge_file) if f]
        cfg = with_lora_base(self._config_to_save(), self.lora_base)  # a LoRA checkpoint names its base
        save_checkpoint(self.engine, cfg, self.progress.iteration, self.progress.consumed_train_samples,
                        files, self.tokenizer.vocab_size, own_steps=self.saved_steps)

    def _config_to_save(self) -> Config:
        """The config written with each checkpoint (post-training records its reference there)."""
        return self.cfg

    def evaluate(self, split: str) -> float | None:
        """Mean loss over ``eval_iters`` global batches of ``split`` (None without data)."""
        batches = self._batches("test", 0) if split == "test" else self.valid_batches
        if batches is None or self.cfg.training.eval_iters == 0:
            return None
        loss = steps.evaluate(self.engine, batches, self.state, self.pipelined, self.cfg.training.eval_iters)
        record = {"iteration": self.progress.iteration, "split": split, "loss": loss,
                  "perplexity": float(torch.tensor(loss).exp().clamp(max=1e30))}
        self.metrics.write(record, self.progress.iteration)
        logger.info("%s | iteration %d | loss %.4f | perplexity %.3f", split,
                    self.progress.iteration, loss, record["perplexity"])
        return loss

    def _install_signal_handlers(self) -> None:
        def handler(signum, _frame):
            logger.warning("received signal %d: saving a checkpoint after this iteration", signum)
            self.stop_signal = signum

        # SIGHUP: a closed terminal or an ended job step, treated as a request to stop.
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, handler)


def _progress_bar(total: int, initial: int, enabled: bool) -> Any:
    """A tqdm bar on rank 0 when stderr is a terminal (log files get the log lines instead)."""
    import sys

    from tqdm import tqdm

    enabled = enabled and sys.stderr.isatty()
    return tqdm(total=total, initial=initial, disable=not enabled, desc="train", unit="it",
                mininterval=2.0, dynamic_ncols=True, leave=False)

