"""Parameter groups (no weight decay on biases and norm weights, GPT-NeoX's rule) and gradient
clipping by the norm over the whole model replica (tensor and pipeline ranks)."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from megatron_lite.parallel.state import ParallelState


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two groups: matrices and embeddings decay; 1-D tensors (biases, norm scales) do not."""
    decay, no_decay = [], []
    for _name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim < 2 else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def clip_grad_norm(params: list[nn.Parameter], max_norm: float, state: ParallelState) -> torch.Tensor:
    """Scale gradients so that their global 2-norm is at most ``max_norm``; returns the norm.

    Tensor-replicated parameters count once (on tensor rank 0), DeepSpeed's pipeline copies of
    tied weights (``ds_pipe_replicated``) not at all; the sum runs over the model-parallel group.
    """
    counted = [p.grad.detach() for p in params
               if not getattr(p, "ds_pipe_replicated", False)
               and (state.tp_rank == 0 or getattr(p, "tensor_model_parallel", False))]
    device = params[0].grad.device if params else torch.device("cpu")
    norms = torch._foreach_norm(counted) if counted else [torch.zeros((), device=device)]
    total = torch.stack([n.float() for n in norms]).pow(2).sum()
    if state.tp_size * state.pp_size > 1:
        dist.all_reduce(total, group=state.mp_group)
    norm = total.sqrt()
    # Scale by min(1, max_norm / norm) as a tensor, as torch's clip_grad_norm_ does: deciding
    # "is it above max_norm?" on the host would wait for the device in the middle of the step.
    coef = (max_norm / (norm + 1e-6)).clamp(max=1.0)
    torch._foreach_mul_([p.grad for p in params], coef)
    return norm
