"""Post-training objectives: pure functions of per-token log-probabilities, masks and rewards.

    token_logps = token_log_probs(logits, labels, state, fp32)      # [b, s], log p(label)
    logps = sequence_log_probs(token_logps, loss_mask)                # [b], sum over label tokens
    loss, metrics = dpo_loss(pol_chosen, pol_rejected, ref_chosen, ref_rejected, beta)
    loss, metrics = kto_loss(pol_logps, ref_logps, rewards, beta, desirable_weight, undesirable_weight)
    loss, metrics = reward_model_loss(chosen_values, rejected_values, z_loss)
    values = last_label_values(values, loss_mask)                     # [b]

The formulas are GPT-NeoX's (``megatron/training.py``, ``forward_step``):

- a sequence's log-probability is the sum, over the tokens whose label is not -100 (the loss
  mask), of the vocab-parallel log-softmax gathered at the label: minus the per-token cross
  entropy, never a gathered [b, s, vocab] tensor;
- DPO (Rafailov et al.): ``-logsigmoid(beta * ((pi_c - pi_r) - (ref_c - ref_r)))``, mean over
  pairs; rewards ``beta * (pi - ref)`` per side;
- KTO (Ethayarajh et al.): the batch is cut in two halves and each half's KL reference point is
  the other half's mean clamped log-ratio (GPT-NeoX's stand-in for TRL's mismatched pairs),
  ``weight * (1 - sigmoid(beta * reward * (log_ratio - kl)))``, mean over documents;
- reward model: Bradley-Terry ``-logsigmoid(r_c - r_r)`` plus ``z_loss * (r_c^2 + r_r^2)``, the
  reward being the value at a sequence's last label token.

Metrics are detached scalars (device tensors: reading them waits for the device).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from megatron_lite.parallel.cross_entropy import vocab_parallel_cross_entropy
from megatron_lite.parallel.state import ParallelState

Metrics = dict[str, torch.Tensor]


def token_log_probs(logits: torch.Tensor, labels: torch.Tensor, state: ParallelState,
                    fp32: bool = True) -> torch.Tensor:
    """log p(label) at every position [b, s] from vocab-split logits [b, s, v/tp] and labels
    [b, s] (any valid id where the mask is 0). ``fp32``: GPT-NeoX's ``dpo_fp32`` / ``kto_fp32``."""
    return -vocab_parallel_cross_entropy(logits, labels, state, upcast=fp32)


def sequence_log_probs(token_logps: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
    """Sum of the log-probabilities [b, s] where ``loss_mask`` [b, s] is 1: [b]."""
    return (token_logps * loss_mask.to(token_logps.dtype)).sum(dim=-1)


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, reference_chosen: torch.Tensor,
             reference_rejected: torch.Tensor, beta: float) -> tuple[torch.Tensor, Metrics]:
    """DPO loss (scalar) over pairs of sequence log-probabilities [b] each, and its metrics."""
    logits = (policy_chosen - policy_rejected) - (reference_chosen - reference_rejected)  # [b]
    loss = -F.logsigmoid(beta * logits).mean()
    with torch.no_grad():
        chosen = beta * (policy_chosen - reference_chosen)  # [b] implicit rewards
        rejected = beta * (policy_rejected - reference_rejected)  # [b]
        metrics = _pair_metrics(chosen, rejected)
        metrics["logp_chosen"] = policy_chosen.mean()
        metrics["logp_rejected"] = policy_rejected.mean()
    return loss, metrics


def kto_loss(policy: torch.Tensor, reference: torch.Tensor, rewards: torch.Tensor, beta: float,
             desirable_weight: float = 1.0, undesirable_weight: float = 1.0) -> tuple[torch.Tensor, Metrics]:
    """KTO loss (scalar) of documents with sequence log-probabilities [b] (b >= 2) and rewards
    [b] (> 0 desirable, < 0 undesirable, 0 no loss), and its metrics."""
    if policy.shape[0] < 2:
        raise ValueError("KTO needs at least 2 documents per micro batch (each half's KL estimate "
                         "comes from the other half): raise train_micro_batch_size_per_gpu")
    log_ratio = policy - reference  # [b]
    first, second = torch.chunk(log_ratio.detach(), 2, dim=0)  # [b1], [b2]
    kl_first, kl_second = first.clamp(min=0).mean(), second.clamp(min=0).mean()
    # Each document is measured against the other half's KL estimate (a constant: detached).
    kl = torch.cat([kl_second.expand(first.shape[0]), kl_first.expand(second.shape[0])])  # [b]
    rewards = rewards.to(log_ratio.dtype)
    zero = torch.zeros_like(rewards)
    weight = torch.where(rewards > 0, zero + desirable_weight,
                         torch.where(rewards < 0, zero + undesirable_weight, zero))  # [b]
    loss = (weight * (1.0 - torch.sigmoid(beta * rewards * (log_ratio - kl)))).mean()
    with torch.no_grad():
        implicit = beta * log_ratio.detach()  # [b]
        metrics = {
            "kl": 0.5 * (kl_first + kl_second),
            "reward_accuracy": (rewards * implicit > 0).float().mean(),
            "desirable_rewards": _masked_mean(implicit, rewards > 0),
            "undesirable_rewards": _masked_mean(implicit, rewards < 0),
            "logp_policy": policy.detach().mean(),
        }
    return loss, metrics


def reward_model_loss(chosen: torch.Tensor, rejected: torch.Tensor, z_loss: float = 0.0
                      ) -> tuple[torch.Tensor, Metrics]:
    """Bradley-Terry loss (scalar) of the rewards [b] of chosen and rejected sequences, plus
    GPT-NeoX's ``z_loss`` penalty on their squares, and its metrics."""
    loss = -F.logsigmoid(chosen - rejected).mean() + (z_loss * (chosen ** 2 + rejected ** 2)).mean()
    with torch.no_grad():
        metrics = _pair_metrics(chosen.detach(), rejected.detach())
    return loss, metrics


def last_label_values(values: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
    """The value [b] at each row's last position where ``loss_mask`` [b, s] is 1 (the reward
    model's reading point: GPT-NeoX's ``--for-rm`` data labels only the final token)."""
    positions = torch.arange(values.shape[1], device=values.device).expand_as(values)  # [b, s]
    last = torch.where(loss_mask > 0, positions, 0).max(dim=1).values  # [b]
    return values.gather(1, last.unsqueeze(1)).squeeze(1)


def _pair_metrics(chosen: torch.Tensor, rejected: torch.Tensor) -> Metrics:
    return {
        "chosen_rewards": chosen.mean(),
        "rejected_rewards": rejected.mean(),
        "reward_margin": (chosen - rejected).mean(),
        "reward_accuracy": (chosen > rejected).float().mean(),
    }


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` where ``mask``; 0 when nothing is selected."""
    mask = mask.to(x.dtype)
    return (x * mask).sum() / mask.sum().clamp(min=1.0)
