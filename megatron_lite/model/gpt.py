"""The GPT-NeoX model: embedding, N transformer layers, final norm, LM head.

``GPTModel`` is the plain module (``pipe_parallel_size: 0``, inference, conversion). The same
building blocks, as DeepSpeed ``LayerSpec``s, make the pipeline model (``pipeline.py``).
State-dict names follow GPT-NeoX's layout (``embedding.word_embeddings.weight``,
``layers.3.attention.query_key_value.weight``, ``final_layernorm.weight``, ...).
"""

from __future__ import annotations

import torch
from torch import nn

from megatron_lite.config.model_size import count_parameters, flops_per_token
from megatron_lite.config.schema import ModelConfig
from megatron_lite.model.embedding import Embedding, LMHead
from megatron_lite.model.kv_cache import KVCache
from megatron_lite.model.norms import build_norm
from megatron_lite.model.transformer import TransformerLayer
from megatron_lite.parallel.mappings import gather_from_sequence
from megatron_lite.parallel.random import checkpoint
from megatron_lite.parallel.state import ParallelState
from megatron_lite.utils.logging import get_logger

logger = get_logger(__name__)


def check_model_config(cfg: ModelConfig) -> None:
    """The model needs its shape and padded vocabulary (derived from the tokenizer)."""
    missing = [k for k in ("num_layers", "hidden_size", "num_attention_heads", "seq_length",
                           "padded_vocab_size", "mlp_inner_size", "max_position_embeddings")
               if getattr(cfg, k) is None]
    if missing:
        raise ValueError(f"model config is missing {', '.join(missing)}")


def default_position_ids(tokens: torch.Tensor, offset: int = 0) -> torch.Tensor:
    """[1, s] positions offset..offset+s-1 (broadcast over the batch)."""
    return torch.arange(offset, offset + tokens.shape[1], device=tokens.device).unsqueeze(0)


class GPTModel(nn.Module):
    """tokens [b, s] -> logits over this rank's vocabulary slice [b, s, padded_vocab / tp]."""

    def __init__(self, cfg: ModelConfig, state: ParallelState | None = None, seed: int = 1234) -> None:
        super().__init__()
        check_model_config(cfg)
        state = state or ParallelState.single()
        self.cfg, self.state = cfg, state
        self.embedding = Embedding(cfg, state, seed)
        self.layers = nn.ModuleList(
            TransformerLayer(cfg, state, layer_number=i, seed=seed) for i in range(cfg.num_layers)
        )
        self.final_layernorm = build_norm(cfg)
        self.lm_head = LMHead(cfg, state, seed)

    def new_kv_cache(self, batch_size: int, max_len: int) -> KVCache:
        """An empty cache for ``batch_size`` sequences of up to ``max_len`` tokens."""
        if self.state.sequence_parallel:
            raise ValueError("a KV cache needs the whole sequence on every rank: build the model "
                             "with state.without_sequence_parallel() to generate")
        cfg = self.cfg
        kv_local = (cfg.num_kv_heads or cfg.num_attention_heads) // self.state.tp_size
        param = self.embedding.weight
        return KVCache(cfg.num_layers, batch_size, kv_local, cfg.hidden_size // cfg.num_attention_heads,
                       max_len, dtype=param.dtype, device=param.device)

    def forward(
        self,
        tokens: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        cache: KVCache | None = None,
        attention_mask: torch.Tensor | None = None,
        gather_logits: bool = False,
        last_only: bool = False,
    ) -> torch.Tensor:
        """``last_only``: logits of the last position only, [b, 1, v] (generation needs no
        more; the LM head dominates a prefill's cost with a large vocabulary)."""
        if position_ids is None:
            position_ids = default_position_ids(tokens, cache.seen if cache is not None else 0)
        x = self.embedding(tokens, position_ids)  # [b, s, h]
        x = self.whole_sequence(self._run_layers(x, position_ids, cache, attention_mask))
        if cache is not None:
            cache.advance(tokens.shape[1])
        if last_only:
            x = x[:, -1:]
        x = self.final_layernorm(x)
        return self.lm_head(x, self.embedding.weight, gather=gather_logits)

    def whole_sequence(self, x: torch.Tensor) -> torch.Tensor:
        """The layers' output as [b, s, h]: under sequence parallelism it is gathered here, so
        the final norm and the heads (LM, reward, ``last_only``) see every position. Megatron
        instead norms the chunks and gathers inside the LM head, whose backward then sends a
        reduce-scatter where this path all-reduces: the difference is one [b, s, h] per step."""
        return gather_from_sequence(x, self.state) if self.state.sequence_parallel else x

    def _run_layers(self, x, position_ids, cache, attention_mask):
        chunk = self.cfg.checkpoint_num_layers
        if not (self.cfg.checkpoint_activations and self.training and cache is None):
            for layer in self.layers:
                x = layer(x, position_ids, cache, attention_mask)
            return x
        for start in range(0, len(self.layers), chunk):
            block = self.layers[start : start + chunk]

            def run(h, pos, block=block):
                for layer in block:
                    h = layer(h, pos, None, attention_mask)
                return h

            x = checkpoint(run, x, position_ids)
        return x


def log_model_size(cfg: ModelConfig) -> None:
    logger.info(
        "model: %d layers, hidden %d, %d heads, vocab %d (padded): %.2fM parameters, "
        "%.3g training FLOPs per token",
        cfg.num_layers, cfg.hidden_size, cfg.num_attention_heads, cfg.padded_vocab_size,
        count_parameters(cfg) / 1e6, flops_per_token(cfg),
    )
