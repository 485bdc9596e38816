"""Cross entropy over logits whose vocabulary is split across tensor-parallel ranks.

Never gathers the [b, s, vocab] logits: each rank reduces its slice to a max, a sum of
exponentials and (where it owns the target) the target logit, and three small all-reduces
finish the softmax. The loss mask averages over the tokens that count (prompt tokens of
supervised data are masked out).
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from megatron_lite.parallel.state import ParallelState


class _VocabParallelCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, target, state, upcast=True):
        # logits [b, s, v/tp], target [b, s] global ids; the softmax in fp32 unless not upcast
        logits = logits.float() if upcast else logits
        logits_max = logits.max(dim=-1).values
        dist.all_reduce(logits_max, op=dist.ReduceOp.MAX, group=state.tp_group)
        shifted = logits - logits_max.unsqueeze(-1)
        vocab_local = logits.shape[-1]
        start = state.tp_rank * vocab_local
        outside = (target < start) | (target >= start + vocab_local)
        local_target = (target - start).masked_fill(outside, 0)
        target_logit = shifted.gather(-1, local_target.unsqueeze(-1)).squeeze(-1)
        target_logit = target_logit.masked_fill(outside, 0.0)
        dist.all_reduce(target_logit, group=state.tp_group)
        exp = shifted.exp()
        sum_exp = exp.sum(dim=-1)
        dist.all_reduce(sum_exp, group=state.tp_group)
        loss = sum_exp.log() - target_logit  # [b, s]
        softmax = exp.div_(sum_exp.unsqueeze(-1))
        ctx.save_for_backward(softmax, local_target, outside)
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        softmax, local_target, outside = ctx.saved_tensors
        grad = softmax  # d loss / d logits = softmax - onehot(target)
        onehot = torch.zeros_like(grad).scatter_(-1, local_target.unsqueeze(-1), 1.0)
        onehot.masked_fill_(outside.unsqueeze(-1), 0.0)
        grad = (grad - onehot) * grad_loss.unsqueeze(-1)
        return grad, None, None, None


def vocab_parallel_cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, state: ParallelState, upcast: bool = True
) -> torch.Tensor:
    """Per-token loss [b, s] from vocab-split logits [b, s, v/tp] and global targets [b, s].
    ``upcast=False`` keeps the logits' precision (GPT-NeoX's ``dpo_fp32: false``)."""
    if state.tp_size == 1:
        flat = torch.nn.functional.cross_entropy(
            (logits.float() if upcast else logits).reshape(-1, logits.shape[-1]), target.reshape(-1),
            reduction="none",
        )
        return flat.view(target.shape)
    return _VocabParallelCrossEntropy.apply(logits, target, state, upcast)


def masked_mean_loss(
    logits: torch.Tensor, labels: torch.Tensor, loss_mask: torch.Tensor, state: ParallelState
) -> torch.Tensor:
    """Mean loss over tokens with ``loss_mask == 1`` (labels of masked tokens may be -100)."""
    mask = loss_mask.float()
    safe_labels = labels.masked_fill(mask == 0, 0)  # -100 is not a valid id to gather
    per_token = vocab_parallel_cross_entropy(logits, safe_labels, state)
    return (per_token * mask).sum() / mask.sum().clamp(min=1.0)
