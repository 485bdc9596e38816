"""Input embedding (tokens + absolute positions) and the LM head (tied or untied)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from megatron_lite.config.schema import ModelConfig
from megatron_lite.model.init_methods import init_std
from megatron_lite.model.positional import sinusoidal_table
from megatron_lite.parallel.layers import (
    ColumnParallelLinear,
    VocabParallelEmbedding,
    linear,
    master_normal,
)
from megatron_lite.parallel.mappings import copy_to_region, gather_from_region, scatter_to_sequence
from megatron_lite.parallel.random import get_rng_tracker
from megatron_lite.parallel.state import ParallelState


class Embedding(nn.Module):
    """Token embedding (vocab split across TP ranks) plus learned/sinusoidal positions."""

    def __init__(self, cfg: ModelConfig, state: ParallelState, seed: int) -> None:
        super().__init__()
        std = init_std(cfg.init_method, cfg.init_method_std, cfg.hidden_size, cfg.num_layers)
        self.word_embeddings = VocabParallelEmbedding(
            cfg.padded_vocab_size, cfg.hidden_size, state, init_std=std, seed=seed, name="embed_in"
        )
        self.pos_emb = cfg.pos_emb
        if cfg.pos_emb == "learned":
            self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
            with torch.no_grad():
                self.position_embeddings.weight.copy_(
                    master_normal(tuple(self.position_embeddings.weight.shape), std, seed, "pos_emb")
                )
        elif cfg.pos_emb == "sinusoidal":
            table = sinusoidal_table(cfg.max_position_embeddings, cfg.hidden_size)
            self.register_buffer("sinusoidal", table, persistent=False)
        self.dropout = cfg.hidden_dropout
        self.state = state

    @property
    def weight(self) -> nn.Parameter:
        """The word-embedding matrix [v/tp, h] (what a tied LM head multiplies by)."""
        return self.word_embeddings.weight

    def forward(self, tokens: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        """-> [b, s, h], or under sequence parallelism this rank's chunk [b, s/tp, h]."""
        x = self.word_embeddings(tokens)  # [b, s, h]
        if self.pos_emb == "learned":
            x = x + self.position_embeddings(position_ids)
        elif self.pos_emb == "sinusoidal":
            x = x + self.sinusoidal[position_ids].to(x.dtype)
        if not self.state.sequence_parallel:
            return F.dropout(x, self.dropout, self.training) if self.dropout else x
        # Whole, then split: Megatron-LM reduce-scatters the word embeddings instead, which saves
        # one all-reduce of [b, s, h] per step (not per layer) at the cost of slicing positions.
        x = scatter_to_sequence(x, self.state)
        if not (self.dropout and self.training):
            return x
        with get_rng_tracker().fork():  # each rank holds other tokens: its own stream
            return F.dropout(x, self.dropout, True)


class LMHead(nn.Module):
    """Hidden [b, s, h] -> logits over this rank's vocabulary slice [b, s, v/tp].

    Tied heads have no weight of their own: they use the embedding's (passed at call time,
    so the pipeline can tie across stages with DeepSpeed's TiedLayerSpec).
    """

    def __init__(self, cfg: ModelConfig, state: ParallelState, seed: int) -> None:
        super().__init__()
        self.state = state
        self.tied = not cfg.no_weight_tying
        if not self.tied:
            std = init_std(cfg.init_method, cfg.init_method_std, cfg.hidden_size, cfg.num_layers)
            self.embed_out = ColumnParallelLinear(
                cfg.hidden_size, cfg.padded_vocab_size, state, bias=False, init_std=std,
                seed=seed, name="embed_out",
            )

    def forward(
        self, x: torch.Tensor, tied_weight: torch.Tensor | None = None, gather: bool = False
    ) -> torch.Tensor:
        if self.tied:
            logits = linear(copy_to_region(x, self.state), tied_weight)
        else:
            logits = self.embed_out(x)
        return gather_from_region(logits, self.state) if gather else logits
