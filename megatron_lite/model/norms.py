"""The layers' norms: LayerNorm (optionally without bias) or RMSNorm over the hidden size.

Under sequence parallelism a layer's norms see only this rank's sequence chunk [b, s/tp, h],
so each rank's weight gradient covers its own tokens; the sequence-parallel variants sum it
over the tensor-parallel ranks (``sequence_parallel_param``), which keeps the replicated
weights equal on every rank. Parameter names are the plain modules' (``weight``, ``bias``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from megatron_lite.config.schema import ModelConfig
from megatron_lite.parallel.layers import sequence_parallel_param
from megatron_lite.parallel.state import ParallelState


class SequenceParallelLayerNorm(nn.LayerNorm):
    def __init__(self, state: ParallelState, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.state = state

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [b, s/tp, h] -> [b, s/tp, h]
        bias = sequence_parallel_param(self.bias, self.state) if self.bias is not None else None
        return F.layer_norm(x, self.normalized_shape, sequence_parallel_param(self.weight, self.state),
                            bias, self.eps)


class SequenceParallelRMSNorm(nn.RMSNorm):
    def __init__(self, state: ParallelState, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.state = state

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [b, s/tp, h] -> [b, s/tp, h]
        return F.rms_norm(x, self.normalized_shape, sequence_parallel_param(self.weight, self.state), self.eps)


def build_norm(cfg: ModelConfig, state: ParallelState | None = None) -> nn.Module:
    """The norm of ``cfg``; with a sequence-parallel ``state``, the variant for sequence chunks."""
    sequence_parallel = state is not None and state.sequence_parallel
    if cfg.norm == "rmsnorm":
        if sequence_parallel:
            return SequenceParallelRMSNorm(state, cfg.hidden_size, eps=cfg.rms_norm_epsilon)
        return nn.RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_epsilon)
    if sequence_parallel:
        return SequenceParallelLayerNorm(state, cfg.hidden_size, eps=cfg.layernorm_epsilon,
                                         bias=cfg.use_bias_in_norms)
    return nn.LayerNorm(cfg.hidden_size, eps=cfg.layernorm_epsilon, bias=cfg.use_bias_in_norms)
