"""The GPT model as a list of DeepSpeed layer specs, for ``PipelineModule``.

Stages pass one tensor, the hidden state [b, s, h], and positions are recomputed from its
length; only when documents reset positions or attention (``reset_position_ids`` /
``reset_attention_mask``) do they pass ``(hidden, position_ids [b, s][, attention_mask
[b, 1, s, s] bool])`` instead, as GPT-NeoX's pipeline passes its mask. Spec index -> GPTModel name:

    0            embedding.*        (TiedLayerSpec "embed" when the head is tied)
    1 .. L       layers.{i-1}.*
    L + 1        final_layernorm.*
    L + 2        lm_head.*          (for a tied head: the embedding again, as forward_fn)

``pipeline_index_to_prefix`` encodes that table, for checkpoint readers.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from megatron_lite.config.schema import ModelConfig
from megatron_lite.model.embedding import Embedding, LMHead
from megatron_lite.model.gpt import check_model_config, default_position_ids
from megatron_lite.model.transformer import TransformerLayer
from megatron_lite.parallel.mappings import copy_to_region
from megatron_lite.parallel.state import ParallelState

Activation = torch.Tensor | tuple[torch.Tensor, ...]  # what one stage hands the next


def _split(inputs: Activation) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """(tokens or hidden state, extras): extras is () or (position_ids[, attention_mask])."""
    if isinstance(inputs, torch.Tensor):
        return inputs, ()
    return inputs[0], tuple(inputs[1:])


def _positions(x: torch.Tensor, extras: tuple[torch.Tensor, ...]) -> torch.Tensor:
    return extras[0] if extras else default_position_ids(x)  # [b, s] or [1, s]


class EmbeddingPipe(Embedding):
    def forward(self, inputs: Activation) -> Activation:  # tokens [b, s] -> [b, s, h] (+ extras)
        tokens, extras = _split(inputs)
        x = super().forward(tokens, _positions(tokens, extras))
        return (x, *extras) if extras else x


class TransformerLayerPipe(TransformerLayer):
    def forward(self, inputs: Activation) -> Activation:  # [b, s, h] -> [b, s, h] (+ extras)
        x, extras = _split(inputs)
        mask = extras[1] if len(extras) > 1 else None
        x = super().forward(x, _positions(x, extras), None, mask)
        return (x, *extras) if extras else x


class LayerNormPipe(nn.LayerNorm):
    """Final LayerNorm as a pipeline layer (parameters named weight/bias, as GPTModel's); the
    head after it needs the hidden state only."""

    def forward(self, inputs: Activation) -> torch.Tensor:
        return super().forward(_split(inputs)[0])


class RMSNormPipe(nn.RMSNorm):
    """Final RMSNorm as a pipeline layer."""

    def forward(self, inputs: Activation) -> torch.Tensor:
        return super().forward(_split(inputs)[0])


class LMHeadPipe(LMHead):
    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [b, s, h] -> [b, s, v/tp]
        return super().forward(x)


def _final_norm_spec(cfg: ModelConfig) -> Any:
    from deepspeed.pipe import LayerSpec

    if cfg.norm == "rmsnorm":
        return LayerSpec(RMSNormPipe, cfg.hidden_size, eps=cfg.rms_norm_epsilon)
    return LayerSpec(LayerNormPipe, cfg.hidden_size, eps=cfg.layernorm_epsilon,
                     bias=cfg.use_bias_in_norms)


def _tied_head(state: ParallelState):
    def forward(embedding: EmbeddingPipe, x: torch.Tensor) -> torch.Tensor:
        return F.linear(copy_to_region(x, state), embedding.weight)  # [b, s, v/tp]

    return forward


def layer_specs(cfg: ModelConfig, state: ParallelState, seed: int, reward_head: bool = False) -> list[Any]:
    """DeepSpeed ``LayerSpec``s of the whole model, first stage to last; ``reward_head``: the
    reward model's scalar head (``model/reward.py``) in the LM head's place."""
    from deepspeed.pipe import LayerSpec, TiedLayerSpec

    from megatron_lite.model.reward import RewardHeadPipe

    check_model_config(cfg)
    tied = not cfg.no_weight_tying
    specs: list[Any] = []
    if tied:
        specs.append(TiedLayerSpec("embed", EmbeddingPipe, cfg, state, seed, tied_weight_attr="weight"))
    else:
        specs.append(LayerSpec(EmbeddingPipe, cfg, state, seed))
    specs += [LayerSpec(TransformerLayerPipe, cfg, state, i, seed) for i in range(cfg.num_layers)]
    specs.append(_final_norm_spec(cfg))
    if reward_head:
        specs.append(LayerSpec(RewardHeadPipe, cfg, seed))
    elif tied:
        specs.append(TiedLayerSpec("embed", EmbeddingPipe, cfg, state, seed,
                                   forward_fn=_tied_head(state), tied_weight_attr="weight"))
    else:
        specs.append(LayerSpec(LMHeadPipe, cfg, state, seed))
    return specs


def pipeline_index_to_prefix(index: int, num_layers: int) -> str:
    """GPTModel state-dict prefix of the parameters saved for pipeline layer ``index``."""
    if index == 0:
        return "embedding."
    if 1 <= index <= num_layers:
        return f"layers.{index - 1}."
    if index == num_layers + 1:
        return "final_layernorm."
    if index == num_layers + 2:
        return "lm_head."
    raise ValueError(f"pipeline layer index {index} out of range for {num_layers} layers")
