"""The reward model (GPT-NeoX ``train_impl: rm``): the GPT body with a scalar head in place of
the LM head.

GPT-NeoX swaps its output layer for a ``RowParallelLinear(hidden, 1, bias=False)`` when
``train_impl`` is ``rm``; here the head is ``lm_head.rm_linear`` [1, h], replicated on every
tensor-parallel rank (one row is too small to split; the hidden state it reads is replicated, so
every rank computes the same value and the same gradient, as for the final norm). Its state-dict
name sits in the head's slot, so the pipeline's layer files and the plain model agree, and an LM
checkpoint loads into the body (the head starts from its initialisation).
"""

from __future__ import annotations

import torch
from torch import nn

from megatron_lite.config.schema import ModelConfig
from megatron_lite.model.gpt import GPTModel, default_position_ids
from megatron_lite.model.init_methods import init_std
from megatron_lite.parallel.layers import master_normal
from megatron_lite.parallel.state import ParallelState

REWARD_HEAD_KEY = "lm_head.rm_linear.weight"


class RewardHead(nn.Module):
    """Hidden states [b, s, h] -> one scalar per position [b, s]."""

    def __init__(self, cfg: ModelConfig, seed: int) -> None:
        super().__init__()
        std = init_std(cfg.init_method, cfg.init_method_std, cfg.hidden_size, cfg.num_layers)
        self.rm_linear = nn.Linear(cfg.hidden_size, 1, bias=False)
        with torch.no_grad():
            self.rm_linear.weight.copy_(master_normal((1, cfg.hidden_size), std, seed, "rm_head"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rm_linear(x).squeeze(-1)  # [b, s, h] -> [b, s]


class RewardModel(GPTModel):
    """tokens [b, s] -> a reward at every position [b, s] (the model reads it at the last label)."""

    def __init__(self, cfg: ModelConfig, state: ParallelState | None = None, seed: int = 1234) -> None:
        super().__init__(cfg, state, seed)
        self.lm_head = RewardHead(cfg, seed)

    def forward(self, tokens: torch.Tensor, position_ids: torch.Tensor | None = None,  # type: ignore[override]
                attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        if position_ids is None:
            position_ids = default_position_ids(tokens)
        x = self.embedding(tokens, position_ids)  # [b, s, h]
        x = self.whole_sequence(self._run_layers(x, position_ids, None, attention_mask))
        return self.lm_head(self.final_layernorm(x))  # [b, s]


class RewardHeadPipe(RewardHead):
    """The head as the pipeline's last layer (the final norm is the layer before)."""
