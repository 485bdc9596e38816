"""Causal self-attention with tensor-parallel heads, through scaled_dot_product_attention.

The fused QKV projection is laid out per key/value group, ``[groups, q_per_group + 2, head_dim]``
rows: with plain multi-head attention (one query per group) that is ``[heads, 3, head_dim]``,
exactly Hugging Face GPTNeoX's ``query_key_value``; splitting the rows into contiguous chunks
gives every tensor-parallel rank whole groups.

Plain causal attention is SDPA's ``is_causal`` (flash-eligible); an explicit mask is built only
when something needs one: ALiBi, a padding or document mask, a chunk decoded after cached
tokens, or a sliding window (``sliding_window_width``, GPT-NeoX's meaning: a token sees itself
and that many tokens before it) that is shorter than the keys in view.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from megatron_lite.config.schema import ModelConfig
from megatron_lite.model.init_methods import init_std
from megatron_lite.model.kv_cache import KVCache
from megatron_lite.model.positional import RotaryEmbedding, alibi_bias, alibi_slopes
from megatron_lite.parallel.layers import ColumnParallelLinear, RowParallelLinear
from megatron_lite.parallel.random import get_rng_tracker
from megatron_lite.parallel.state import ParallelState


class ParallelAttention(nn.Module):
    def __init__(self, cfg: ModelConfig, state: ParallelState, layer_number: int, seed: int) -> None:
        super().__init__()
        h, heads = cfg.hidden_size, cfg.num_attention_heads
        kv = cfg.num_kv_heads or heads
        self.head_dim = h // heads
        self.heads_local, self.kv_local = heads // state.tp_size, kv // state.tp_size
        self.q_per_group = heads // kv
        self.layer_number = layer_number
        self.dropout = cfg.attention_dropout
        self.window = cfg.sliding_window_width
        std = init_std(cfg.init_method, cfg.init_method_std, h, cfg.num_layers)
        out_std = init_std(cfg.output_layer_init_method, cfg.init_method_std, h, cfg.num_layers)
        prefix = f"layers.{layer_number}.attention"
        self.query_key_value = ColumnParallelLinear(
            h, (heads + 2 * kv) * self.head_dim, state, bias=cfg.use_bias_in_attn_linear,
            init_std=std, seed=seed, name=f"{prefix}.query_key_value",
            sequence_parallel=state.sequence_parallel,
        )
        self.dense = RowParallelLinear(
            heads * self.head_dim, h, state, bias=cfg.use_bias_in_attn_linear,
            init_std=out_std, seed=seed, name=f"{prefix}.dense",
            sequence_parallel=state.sequence_parallel,
        )
        self.rotary = (
            RotaryEmbedding(self.head_dim, cfg.rotary_pct, cfg.rotary_emb_base, cfg.rope_scaling)
            if cfg.pos_emb == "rotary" else None
        )
        if cfg.pos_emb == "alibi":
            first = state.tp_rank * self.heads_local
            slopes = alibi_slopes(heads)[first : first + self.heads_local]
            self.register_buffer("alibi_slopes", slopes, persistent=False)
        else:
            self.alibi_slopes = None

    def _split_qkv(self, qkv: torch.Tensor):
        b, s, _ = qkv.shape
        qkv = qkv.view(b, s, self.kv_local, self.q_per_group + 2, self.head_dim)
        # split (not indexing): its backward is one concatenation, where three index ops would
        # each fill a zero tensor of the whole qkv size and then be summed.
        q, k, v = qkv.split([self.q_per_group, 1, 1], dim=3)
        q = q.reshape(b, s, self.heads_local, self.head_dim)
        return q, k.squeeze(3), v.squeeze(3)  # [b, s, heads|kv, d]

    def forward(
        self,
        x: torch.Tensor,
        position_ids: torch.Tensor,
        cache: KVCache | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x [b, s, h] -> [b, s, h]. ``attention_mask`` (bool [b, 1, s, k], True = attend)
        is only needed for padded batches; causality is built in. Under sequence parallelism x
        and the result are this rank's chunk [b, s/tp, h]; the projections gather and re-split
        it, so everything between them (positions, masks, the cache) sees the whole sequence."""
        q, k, v = self._split_qkv(self.query_key_value(x))
        if self.rotary is not None:
            cos, sin = self.rotary.cos_sin(position_ids, q.dtype)
            q, k = self.rotary.rotate(q, cos, sin), self.rotary.rotate(k, cos, sin)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # [b, heads|kv, s, d]
        past = 0
        if cache is not None:
            past = cache.seen
            k, v = cache.update(self.layer_number, k, v)
        # Keys before `first` are outside every query's window: decoding reads only the window
        # from the cache (a window-long product per token, however long the text).
        first = max(0, past - self.window) if self.window is not None else 0
        if first:
            k, v = k[:, :, first:], v[:, :, first:]
            attention_mask = attention_mask[..., first:] if attention_mask is not None else None
        mask = self._mask(q, first, k.shape[2], past, attention_mask)
        dropout = self.dropout if self.training else 0.0
        # Dropout on this rank's heads draws from the per-rank stream; without dropout there is
        # nothing to draw, and swapping generator states in and out costs time every layer.
        stream = get_rng_tracker().fork() if dropout else contextlib.nullcontext()
        with stream:
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=dropout,
                is_causal=mask is None and q.shape[2] > 1,
                enable_gqa=self.q_per_group > 1,
            )
        b, _, s, _ = out.shape
        out = out.transpose(1, 2).reshape(b, s, self.heads_local * self.head_dim)
        return self.dense(out)

    def _mask(self, q: torch.Tensor, first: int, k_len: int, past: int,
              attention_mask: torch.Tensor | None) -> torch.Tensor | None:
        """None when plain causal attention suffices (the fast, flash-eligible path); else a
        bool mask [b|1, 1, s, k] (True = attend) or, with ALiBi, an additive bias [1|b, heads, s, k].
        Queries are at ``past ..``, keys at ``first .. first + k_len``; ``attention_mask`` (padding
        or documents) is combined with causality and the window, never replaces them."""
        s = q.shape[2]
        # The farthest query-key distance in view, (past + s - 1) - first, exceeds the window?
        windowed = self.window is not None and past + s - 1 - first > self.window
        if not (windowed or self.alibi_slopes is not None or attention_mask is not None or (past and s > 1)):
            return None
        q_pos = torch.arange(past, past + s, device=q.device)
        distance = q_pos.view(-1, 1) - torch.arange(first, first + k_len, device=q.device).view(1, -1)  # [s, k]
        allowed = distance >= 0
        if windowed:
            allowed = allowed & (distance <= self.window)  # itself and `window` tokens before it
        allowed = allowed.view(1, 1, s, k_len)
        if attention_mask is not None:
            allowed = allowed & attention_mask
        if self.alibi_slopes is None:
            return allowed
        bias = alibi_bias(self.alibi_slopes, q_pos, first + k_len, q.dtype)[..., first:]  # [1, heads, s, k]
        return bias.masked_fill(~allowed, float("-inf"))
