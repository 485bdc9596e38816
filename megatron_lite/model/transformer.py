"""One transformer layer: (norm, attention, norm, MLP) with sequential or parallel residual."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from megatron_lite.config.schema import ModelConfig
from megatron_lite.model.attention import ParallelAttention
from megatron_lite.model.kv_cache import KVCache
from megatron_lite.model.mlp import ParallelMLP
from megatron_lite.model.norms import build_norm
from megatron_lite.parallel.random import get_rng_tracker
from megatron_lite.parallel.state import ParallelState


class TransformerLayer(nn.Module):
    """x + attn(norm1(x)) then + mlp(norm2(.)); or, with ``gpt_j_residual``,
    x + attn(norm1(x)) + mlp(norm2(x)) (GPT-J / Pythia parallel residual).

    x is [b, s, h], or under sequence parallelism this rank's chunk [b, s/tp, h]: the norms,
    dropout and residual sums work on the chunk, attention and MLP gather and re-split it."""

    def __init__(self, cfg: ModelConfig, state: ParallelState, layer_number: int, seed: int) -> None:
        super().__init__()
        self.layer_number = layer_number
        self.parallel_residual = cfg.gpt_j_residual
        self.hidden_dropout = cfg.hidden_dropout
        self.state, self.sequence_parallel = state, state.sequence_parallel
        self.input_layernorm = build_norm(cfg, state)
        self.attention = ParallelAttention(cfg, state, layer_number, seed)
        self.post_attention_layernorm = build_norm(cfg, state)
        self.mlp = ParallelMLP(cfg, state, layer_number, seed)

    def _drop(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.hidden_dropout and self.training):
            return x
        if self.sequence_parallel:  # each rank holds other tokens: its own stream
            with get_rng_tracker().fork():
                return F.dropout(x, self.hidden_dropout, True)
        # The residual stream is replicated across TP ranks: the default RNG stream, which is
        # seeded identically on them, keeps the masks equal.
        return F.dropout(x, self.hidden_dropout, True)

    def forward(
        self,
        x: torch.Tensor,
        position_ids: torch.Tensor,
        cache: KVCache | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        attn = self.attention(self.input_layernorm(x), position_ids, cache, attention_mask)
        if self.parallel_residual:
            return x + self._drop(attn) + self._drop(self.mlp(self.post_attention_layernorm(x)))
        x = x + self._drop(attn)
        return x + self._drop(self.mlp(self.post_attention_layernorm(x)))
