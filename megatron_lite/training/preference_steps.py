"""The post-training step (``train_impl`` dpo / kto / rm) for the plain and the pipelined engine.

    batches = preference_batches(loader_iter, engine.device, eod_id, eod_mask_loss)
    objective = Objective(cfg.post_training, state)
    result = train_step(engine, schedule, batches, state, pipelined, objective, reference)
    loss, metrics = evaluate(engine, batches, state, pipelined, objective, reference, num_batches)

Pairs travel as GPT-NeoX feeds them: one batch of 2b rows, the b chosen sequences first, then
their b rejected ones, so one forward pass serves both. The reference model is a frozen module
outside the DeepSpeed engine (ZeRO never shards it); its sequence log-probabilities are computed
first, without gradients: on the plain engine by calling it, on the pipeline by running it stage
after stage (point-to-point sends of the hidden state; the last stage keeps the result), then
handed to the pipeline's loss function with the labels. Precomputed log-probabilities
(``precompute_model_name``) arrive with the batch instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from megatron_lite.config.schema import PostTrainingConfig
from megatron_lite.data.loaders import get_batch
from megatron_lite.parallel.state import ParallelState
from megatron_lite.training.losses import (
    Metrics,
    dpo_loss,
    kto_loss,
    last_label_values,
    reward_model_loss,
    sequence_log_probs,
    token_log_probs,
)
from megatron_lite.training.lr_schedule import AnnealingLR
from megatron_lite.training.steps import StepResult, dp_mean

# The metrics each objective reports (training/losses.py), in a fixed order for the all-reduce.
METRICS = {
    "dpo": ("chosen_rewards", "logp_chosen", "logp_rejected", "rejected_rewards", "reward_accuracy",
            "reward_margin"),
    "rm": ("chosen_rewards", "rejected_rewards", "reward_accuracy", "reward_margin"),
    "kto": ("desirable_rewards", "kl", "logp_policy", "reward_accuracy", "undesirable_rewards"),
}


@dataclass
class PreferenceBatch:
    """One micro batch on the device: n = 2b rows for pairs (chosen, then rejected), b for KTO."""

    tokens: torch.Tensor  # [n, s]
    labels: torch.Tensor  # [n, s] (any valid id where the mask is 0)
    loss_mask: torch.Tensor  # [n, s] float, 1 on label tokens
    reference: torch.Tensor | None  # [n] precomputed reference sequence log-probs
    rewards: torch.Tensor | None  # [n] KTO rewards


def _lm_batch(sample: dict[str, torch.Tensor], text: str, label: str, eod_id: int | None,
              eod_mask_loss: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    part = {"text": sample[text], **({"label": sample[label]} if label in sample else {})}
    tokens, labels, loss_mask, _ = get_batch(part, eod_id=eod_id, eod_mask_loss=eod_mask_loss)
    return tokens, labels, loss_mask


def preference_batches(it: Iterator[dict], device: torch.device, eod_id: int | None,
                       eod_mask_loss: bool = False) -> Iterator[PreferenceBatch]:
    """Loader samples (data/unpacked.py) -> :class:`PreferenceBatch` micro batches on ``device``."""
    while True:
        sample = next(it)
        rewards = sample.get("reward")
        if "pos" in sample:
            parts = [_lm_batch(sample, side, f"{side}_label", eod_id, eod_mask_loss) for side in ("pos", "neg")]
            tokens, labels, loss_mask = (torch.cat([p[i] for p in parts]) for i in range(3))  # [2b, s]
            ref = torch.cat([sample["pos_ref"], sample["neg_ref"]]) if "pos_ref" in sample else None
        else:
            tokens, labels, loss_mask = _lm_batch(sample, "text", "label", eod_id, eod_mask_loss)
            ref = sample.get("ref")
        if ref is not None:
            # GPT-NeoX's precomputed layout: the value at position i is log p(token i + 1), so it
            # lines up with labels = tokens shifted by one.
            ref = sequence_log_probs(ref[:, :-1].float(), loss_mask)  # [n]
        yield PreferenceBatch(*(None if t is None else t.to(device, non_blocking=True)
                                for t in (tokens, labels, loss_mask, ref, rewards)))


class Objective:
    """The loss of ``train_impl`` (dpo, kto or rm) from the model's output and the batch."""

    def __init__(self, cfg: PostTrainingConfig, state: ParallelState) -> None:
        self.cfg, self.state, self.kind = cfg, state, cfg.train_impl
        self.fp32 = cfg.kto_fp32 if self.kind == "kto" else cfg.dpo_fp32
        self.metric_names = METRICS[self.kind]
        # DPO without a reference (dpo_reference_free) compares the policy's log-probs alone.
        self.uses_reference = self.kind == "kto" or (self.kind == "dpo" and not cfg.dpo_reference_free)

    def sequence_logps(self, logits: torch.Tensor, labels: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
        """Sequence log-probabilities [n] from vocab-split logits [n, s, v/tp]."""
        return sequence_log_probs(token_log_probs(logits, labels, self.state, self.fp32), loss_mask)

    def __call__(self, output: torch.Tensor, labels: torch.Tensor, loss_mask: torch.Tensor,
                 reference: torch.Tensor | None, rewards: torch.Tensor | None) -> tuple[torch.Tensor, Metrics]:
        cfg = self.cfg
        if self.kind == "rm":
            values = last_label_values(output.float(), loss_mask)  # [2b]
            chosen, rejected = values.chunk(2)
            return reward_model_loss(chosen, rejected, cfg.z_loss)
        logps = self.sequence_logps(output, labels, loss_mask)  # [n]
        if reference is None:
            reference = torch.zeros_like(logps)
        if self.kind == "dpo":
            (pc, pr), (rc, rr) = logps.chunk(2), reference.to(logps.dtype).chunk(2)
            return dpo_loss(pc, pr, rc, rr, cfg.dpo_beta)
        return kto_loss(logps, reference.to(logps.dtype), rewards, cfg.kto_beta,
                        cfg.kto_desirable_weight, cfg.kto_undesirable_weight)

    def vector(self, metrics: list[Metrics]) -> torch.Tensor:
        """Metrics of micro batches -> their means, as one float32 vector in ``metric_names`` order."""
        return torch.stack([torch.stack([m[k].float() for m in metrics]).mean() for k in self.metric_names])


class Reference:
    """The frozen reference model: a module outside the DeepSpeed engine (this rank's pipeline
    stage, or the whole model), called without gradients."""

    def __init__(self, module: torch.nn.Module, state: ParallelState, pipelined: bool, hidden_size: int) -> None:
        self.module, self.state, self.pipelined, self.hidden_size = module, state, pipelined, hidden_size

    @torch.no_grad()
    def __call__(self, tokens: torch.Tensor) -> torch.Tensor | None:
        """Logits [n, s, v/tp] (on the last pipeline stage; None on the others)."""
        if not self.pipelined:
            return self.module(tokens)
        return self._staged(tokens)

    def _staged(self, tokens: torch.Tensor) -> torch.Tensor | None:
        # DeepSpeed's schedule needs its engine; a frozen forward needs only the order: each
        # stage runs its layers and sends the hidden state [n, s, h] to the next stage.
        state = self.state
        stride = state.dp_size * state.tp_size  # global rank distance between neighbouring stages
        if state.pp_rank == 0:
            x = self.module(tokens)
        else:
            param = next(self.module.parameters())
            x = torch.empty(*tokens.shape, self.hidden_size, dtype=param.dtype, device=param.device)
            dist.recv(x, src=state.rank - stride)
            x = self.module(x)
        if state.pp_rank < state.pp_size - 1:
            dist.send(x.contiguous(), dst=state.rank + stride)
            return None
        return x


@torch.no_grad()
def reference_logps(reference: Reference | None, batch: PreferenceBatch, objective: Objective) -> torch.Tensor | None:
    """The reference's sequence log-probabilities [n] (None: reference-free, or not the last stage)."""
    if batch.reference is not None or not objective.uses_reference or reference is None:
        return batch.reference
    logits = reference(batch.tokens)
    return None if logits is None else objective.sequence_logps(logits, batch.labels, batch.loss_mask)


class LossCollector:
    """The pipeline's ``loss_fn``: the objective's loss, keeping each micro batch's metrics."""

    def __init__(self, objective: Objective) -> None:
        self.objective, self.metrics = objective, []

    def __call__(self, output: torch.Tensor, labels: tuple[torch.Tensor, ...]) -> torch.Tensor:
        target, loss_mask, reference, rewards = labels
        loss, metrics = self.objective(output, target, loss_mask, reference, rewards)
        self.metrics.append(metrics)
        return loss


def _pipelined(engine: Any, batches: Iterator[PreferenceBatch], state: ParallelState, objective: Objective,
               reference: Reference | None, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """One global batch through DeepSpeed's pipeline engine: (mean loss, metric vector)."""
    items = []
    for _ in range(engine.gradient_accumulation_steps()):
        b = next(batches)
        ref = reference_logps(reference, b, objective)
        zeros = torch.zeros(b.tokens.shape[0], device=b.tokens.device)  # [n]; stages other than the last
        rewards = b.rewards if b.rewards is not None else zeros
        items.append((b.tokens, (b.labels, b.loss_mask, zeros if ref is None else ref, rewards.float())))
    collector: LossCollector = engine.module.loss_fn
    collector.metrics = []
    run = engine.train_batch if train else engine.eval_batch
    loss = run(data_iter=iter(items)).detach().float()
    last = state.pp_rank == state.pp_size - 1
    vector = dp_mean(objective.vector(collector.metrics), state) if last else \
        torch.zeros(len(objective.metric_names), device=loss.device)
    if state.pp_size > 1:  # to every stage (rank 0, which logs, is on the first)
        dist.broadcast(vector, src=state.rank + (state.pp_size - 1 - state.pp_rank) * state.dp_size * state.tp_size,
                       group=state.pp_group)
    return loss, vector


def _plain(engine: Any, batches: Iterator[PreferenceBatch], state: ParallelState, objective: Objective,
           reference: Reference | None, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """One global batch through the plain engine: (mean loss, metric vector), both dp-averaged."""
    losses, metrics = [], []
    for _ in range(engine.gradient_accumulation_steps()):
        b = next(batches)
        ref = reference_logps(reference, b, objective)
        loss, m = objective(engine(b.tokens), b.labels, b.loss_mask, ref, b.rewards)
        if train:
            engine.backward(loss)
            engine.step()
        losses.append(loss.detach().float())
        metrics.append(m)
    vector = torch.cat([torch.stack(losses).mean().unsqueeze(0), objective.vector(metrics)])
    vector = dp_mean(vector, state)
    return vector[0], vector[1:]


def train_step(engine: Any, schedule: AnnealingLR, batches: Iterator[PreferenceBatch], state: ParallelState,
               pipelined: bool, objective: Objective, reference: Reference | None) -> StepResult:
    """One optimizer step over ``gradient_accumulation_steps`` micro batches (no device sync)."""
    lr = schedule.get_lr()
    loss, vector = (_pipelined if pipelined else _plain)(engine, batches, state, objective, reference, True)
    skipped = bool(getattr(engine, "skipped_steps", 0) and engine.was_step_applied() is False)
    metrics = dict(zip(objective.metric_names, vector))
    return StepResult(loss, engine.get_global_grad_norm(), skipped, lr, metrics)


@torch.no_grad()
def evaluate(engine: Any, batches: Iterator[PreferenceBatch], state: ParallelState, pipelined: bool,
             objective: Objective, reference: Reference | None, num_batches: int) -> dict[str, float]:
    """Mean loss and metrics over ``num_batches`` global batches: {"loss": ..., metric: ...}."""
    engine.eval()
    totals = []
    try:
        for _ in range(num_batches):
            loss, vector = (_pipelined if pipelined else _plain)(engine, batches, state, objective, reference, False)
            totals.append(torch.cat([loss.reshape(1), vector]))
    finally:
        engine.train()
    means = torch.stack(totals).mean(dim=0).cpu().tolist()
    return dict(zip(("loss", *objective.metric_names), means))
