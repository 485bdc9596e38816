"""The GPT model as a list of DeepSpeed layer specs, for ``PipelineModule``.

Stages pass one tensor, the hidden state [b, s, h] (under sequence parallelism this rank's
chunk [b, s/tp, h]), and positions are recomputed from its length; only when documents reset positions or attention (``reset_position_ids`` /
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
from megatron_lite.model.gpt import check_model_config
from megatron_lite.model.transformer import TransformerLayer
from megatron_lite.parallel.mappings import copy_to_region, gather_from_sequence
from megatron_lite.parallel.state import ParallelState

Activation = torch.Tensor | tuple[torch.Tensor, ...]  # what one stage hands the next


def _split(inputs: Activation) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """(tokens or hidden state, extras): extras is () or (position_ids[, attention_mask])."""
    if isinstance(inputs, torch.Tensor):
        return inputs, ()
    return inputs[0], tuple(inputs[1:])


def _positions(x: torch.Tensor, extras: tuple[torch.Tensor, ...], chunks: int = 1) -> torch.Tensor:
    """Positions of the whole sequence, [b, s] or [1, s]; x holds 1/``chunks`` of it."""
    if extras:
        return extras[0]
    return torch.arange(x.shape[1] * chunks, device=x.device).unsqueeze(0)


class EmbeddingPipe(Embedding):
    def forward(self, inputs: Activation) -> Activation:  # tokens [b, s] -> [b, s, h] (+ extras)
        tokens, extras = _split(inputs)
        x = super().forward(tokens, _positions(tokens, extras))
        return (x, *extras) if extras else x


class TransformerLayerPipe(TransformerLayer):
    def forward(self, inputs: Activation) -> Activation:  # [b, s, h] -> [b, s, h] (+ extras)
        x, extras = _split(inputs)
        mask = extras[1] if len(extras) > 1 else None
        chunks = self.state.tp_size if self.sequence_parallel else 1
        x = super().forward(x, _positions(x, extras, chunks), None, mask)
        return (x, *extras) if extras else x


def _whole(inputs: Activation, state: ParallelState) -> torch.Tensor:
    """The last layer's hidden state as [b, s, h] (``GPTModel.whole_sequence``)."""
    x = _split(inputs)[0]
    return gather_from_sequence(x, state) if state.sequence_parallel else x


class LayerNormPipe(nn.LayerNorm):
    """Final LayerNorm as a pipeline layer (parameters named weight/bias, as GPTModel's); the
    head after it needs the hidden state only."""

    def __init__(self, state: ParallelState, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.state = state

    def forward(self, inputs: Activation) -> torch.Tensor:
        return super().forward(_whole(inputs, self.state))


class RMSNormPipe(nn.RMSNorm):
    """Final RMSNorm as a pipeline layer."""

    def __init__(self, state: ParallelState, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.state = state

    def forward(self, inputs: Activation) -> torch.Tensor:
        return super().forward(_whole(inputs, self.state))


class LMHeadPipe(LMHead):
    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [b, s, h] -> [b, s, v/tp]
        return super().forward(x)


def _final_norm_spec(cfg: ModelConfig, state: ParallelState) -> Any:
    from deepspeed.pipe import LayerSpec

    if cfg.norm == "rmsnorm":
        return LayerSpec(RMSNormPipe, state, cfg.hidden_size, eps=cfg.rms_norm_epsilon)
    return LayerSpec(LayerNormPipe, state, cfg.hidden_size, eps=cfg.layernorm_epsilon,
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
    specs.append(_final_norm_spec(cfg, state))
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
