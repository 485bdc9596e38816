"""One training step and one evaluation pass, for the plain and the pipelined engine, plus the
per-interval training record (tokens/s, TFLOP/s, MFU, memory).

The functions take what they use, not the Trainer:

    batches = micro_batches(loader_iter, eod_id, engine.device)   # (tokens, labels, loss_mask, None, None)
    result = train_step(engine, schedule, batches, state, pipelined)
    loss = evaluate(engine, batches, state, pipelined, num_batches)
    record = training_record(window, progress, tokens_per_step, cfg.model, peak_tflops)
"""

from __future__ import annotations

import resource
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

from megatron_lite.config.schema import ModelConfig
from megatron_lite.data.loaders import document_attention_mask, get_batch
from megatron_lite.model.gpt import flops_per_token
from megatron_lite.parallel.cross_entropy import masked_mean_loss
from megatron_lite.parallel.state import ParallelState
from megatron_lite.training.lr_schedule import AnnealingLR

# What post-training steps report besides the loss (training/losses.py), in log-line order.
METRIC_NAMES = ("reward_accuracy", "reward_margin", "chosen_rewards", "rejected_rewards", "kl",
                "desirable_rewards", "undesirable_rewards", "logp_chosen", "logp_rejected", "logp_policy")

# tokens, labels, loss_mask [b, s] each; position_ids [b, s] and attention_mask [b, 1, s, s] (bool)
# only when documents reset positions or attention, else None (the model's fast defaults).
Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]


@dataclass
class Progress:
    """Where training stands (saved in every checkpoint)."""

    iteration: int = 0
    consumed_train_samples: int = 0
    skipped_iters: int = 0


@dataclass
class StepResult:
    """One step's outcome. ``loss`` and ``grad_norm`` stay device tensors: reading them would
    wait for the device, so the trainer reads a window of them at once, at log intervals."""

    loss: torch.Tensor
    grad_norm: torch.Tensor | float | None
    skipped: bool
    lr: float
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)  # post-training: rewards, accuracy


@dataclass
class Window:
    """Steps since the last log line, and the wall time they took (pauses for evaluation and
    checkpoints excluded)."""

    results: list[StepResult] = field(default_factory=list)
    seconds: float = 0.0
    checked: int = 0  # results[:checked] are known to have finite losses
    clock: float = field(default_factory=time.perf_counter)

    def add(self, result: StepResult) -> None:
        self.results.append(result)

    def losses(self) -> list[float]:
        """The window's losses as floats (one device sync for all of them)."""
        return torch.stack([r.loss.float() for r in self.results]).cpu().tolist() if self.results else []

    def pause(self) -> None:
        """Stop the clock (the device drained first: queued steps belong to this window)."""
        _synchronize()
        self.seconds += time.perf_counter() - self.clock

    def resume(self) -> None:
        self.clock = time.perf_counter()

    def reset(self) -> None:
        self.results.clear()
        self.seconds, self.checked = 0.0, 0
        self.resume()


def _synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _to_device(batch: tuple[torch.Tensor | None, ...], device: torch.device) -> tuple[torch.Tensor | None, ...]:
    return tuple(None if t is None else t.to(device, non_blocking=True) for t in batch)


def micro_batches(it: Iterator[dict], eod_id: int | None, device: torch.device, *,
                  eod_mask_loss: bool = False, reset_position_ids: bool = False,
                  reset_attention_mask: bool = False) -> Iterator[Batch]:
    """Loader samples -> :data:`Batch` micro batches on ``device`` (the data keys of the same
    names: GPT-NeoX's ``eod_mask_loss``, Megatron-LM's ``reset_position_ids`` and
    ``reset_attention_mask``)."""
    resets = reset_position_ids or reset_attention_mask
    if (eod_mask_loss or resets) and eod_id is None:
        raise ValueError("eod_mask_loss, reset_position_ids and reset_attention_mask need the "
                         "tokenizer's eod id")
    while True:
        tokens, labels, loss_mask, position_ids = get_batch(
            next(it), eod_id=eod_id, eod_mask_loss=eod_mask_loss, reset_position_ids=reset_position_ids)
        mask = document_attention_mask(tokens, eod_id) if reset_attention_mask and eod_id is not None else None
        # Positions travel only when they may differ per row; the model builds [1, s] otherwise.
        positions = position_ids.contiguous() if resets else None
        yield _to_device((tokens, labels, loss_mask, positions, mask), device)


def _pipe_iter(batches: Iterator[Batch]) -> Iterator[tuple[Any, Any]]:
    # DeepSpeed's pipeline feeds batch[0] to the first stage and batch[1] to the loss. The first
    # stage gets the tokens alone, or (tokens, position_ids[, attention_mask]): None cannot
    # travel between stages (model/pipeline.py).
    for tokens, labels, loss_mask, position_ids, attention_mask in batches:
        extras = tuple(t for t in (position_ids, attention_mask) if t is not None)
        yield ((tokens, *extras) if extras else tokens), (labels, loss_mask)


def _micro_loss(engine: Any, batch: Batch, state: ParallelState) -> torch.Tensor:
    """Masked mean loss of one micro batch through the plain (not pipelined) engine."""
    tokens, labels, loss_mask, position_ids, attention_mask = batch
    logits = engine(tokens, position_ids, attention_mask=attention_mask)  # [b, s, v/tp]
    return masked_mean_loss(logits, labels, loss_mask, state)


def dp_mean(value: torch.Tensor, state: ParallelState) -> torch.Tensor:
    """Mean over the data-parallel replicas (a copy; one rank: the value itself)."""
    if state.dp_size > 1:
        value = value.clone()
        dist.all_reduce(value, group=state.dp_group)
        value /= state.dp_size
    return value


def train_step(engine: Any, schedule: AnnealingLR, batches: Iterator[Batch], state: ParallelState,
               pipelined: bool) -> StepResult:
    """One optimizer step over ``gradient_accumulation_steps`` micro batches. Nothing here
    waits for the device: the loss and gradient norm come back as tensors."""
    lr = schedule.get_lr()  # the rate this step uses (the engine moves the schedule after it)
    if pipelined:
        mean_loss = engine.train_batch(data_iter=_pipe_iter(batches)).detach().float()
    else:
        total = torch.zeros((), device=engine.device)
        for _ in range(engine.gradient_accumulation_steps()):
            loss = _micro_loss(engine, next(batches), state)
            engine.backward(loss)
            engine.step()
            total += loss.detach().float()
        mean_loss = dp_mean(total / engine.gradient_accumulation_steps(), state)
    skipped = bool(getattr(engine, "skipped_steps", 0) and engine.was_step_applied() is False)
    return StepResult(mean_loss, engine.get_global_grad_norm(), skipped, lr)


@torch.no_grad()
def evaluate(engine: Any, batches: Iterator[Batch], state: ParallelState, pipelined: bool,
             num_batches: int) -> float:
    """Mean loss over ``num_batches`` global batches (all micro batches of each)."""
    engine.eval()
    losses = []
    try:
        for _ in range(num_batches):
            if pipelined:
                loss = engine.eval_batch(data_iter=_pipe_iter(batches))
                losses.append(float(loss.detach().float().cpu().item()))
            else:
                micro = [_micro_loss(engine, next(batches), state).float()
                         for _ in range(engine.gradient_accumulation_steps())]
                losses.append(float(dp_mean(torch.stack(micro).mean(), state).item()))
    finally:
        engine.train()
    return sum(losses) / len(losses)


def _memory_mb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # peak RSS (KiB on Linux)


def training_record(window: Window, progress: Progress, tokens_per_step: int, model: ModelConfig,
                    peak_tflops: float | None) -> dict[str, Any]:
    """The metrics of the steps since the last log line (reads the window's tensors)."""
    results = window.results
    window.pause()
    seconds = window.seconds
    losses = window.losses()
    tokens_per_s = tokens_per_step * len(results) / max(seconds, 1e-9)
    tflops = flops_per_token(model) * tokens_per_s / dist.get_world_size() / 1e12
    norms = [r.grad_norm for r in results if r.grad_norm is not None]
    record: dict[str, Any] = {
        "iteration": progress.iteration,
        "loss": sum(losses) / len(losses),
        "lr": results[-1].lr,
        "grad_norm": float(norms[-1]) if norms else None,
        "tokens_per_s": tokens_per_s,
        "ms_per_iter": 1000.0 * seconds / len(results),
        "tflops_per_device": tflops,
        "memory_mb": _memory_mb(),
        "consumed_samples": progress.consumed_train_samples,
        "skipped_iters": progress.skipped_iters,
    }
    if peak_tflops:
        record["mfu"] = tflops / peak_tflops
    record.update(mean_metrics([r.metrics for r in results]))
    return record


def mean_metrics(metrics: list[dict[str, torch.Tensor]]) -> dict[str, float]:
    """Each metric's mean over the steps that report it (one device sync for all)."""
    names = sorted({k for m in metrics for k in m})
    if not names:
        return {}
    values = [[m[k].float() for m in metrics if k in m] for k in names]
    means = torch.stack([torch.stack(v).mean() for v in values]).cpu().tolist()
    return dict(zip(names, means))


def format_record(record: dict[str, Any]) -> str:
    parts = [f"iteration {record['iteration']}", f"loss {record['loss']:.4f}", f"lr {record['lr']:.3e}"]
    if record.get("grad_norm") is not None:
        parts.append(f"grad norm {record['grad_norm']:.3f}")
    parts += [f"{record['tokens_per_s']:.0f} tokens/s", f"{record['ms_per_iter']:.1f} ms/iter",
              f"{record['tflops_per_device']:.3f} TFLOP/s/device"]
    if "mfu" in record:
        parts.append(f"MFU {100 * record['mfu']:.1f}%")
    parts.append(f"mem {record['memory_mb']:.0f} MB")
    parts += [f"{k.replace('_', ' ')} {record[k]:.4f}" for k in METRIC_NAMES if k in record]
    if record["skipped_iters"]:
        parts.append(f"skipped {record['skipped_iters']}")
    return " | ".join(parts)
