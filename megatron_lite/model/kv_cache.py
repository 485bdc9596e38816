"""Key/value cache for incremental decoding.

Preallocated per layer: [b, kv_heads_local, max_len, head_dim]. A forward pass over ``s`` new
tokens writes them at ``[seen, seen + s)`` and attends to ``[0, seen + s)``; the model advances
``seen`` once all layers have run. With a sliding window (``sliding_window_width``) attention
reads only the window's keys back from the cache (``ParallelAttention.forward``).
"""

from __future__ import annotations

import torch


class KVCache:
    """Keys and values of every layer for a batch of sequences decoded together."""

    def __init__(
        self,
        num_layers: int,
        batch_size: int,
        kv_heads: int,
        head_dim: int,
        max_len: int,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> None:
        shape = (batch_size, kv_heads, max_len, head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.max_len = max_len
        self.seen = 0

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v [b, kv, s, d] for ``layer``; return all keys/values so far [b, kv, seen+s, d]."""
        end = self.seen + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"KV cache holds {self.max_len} positions, asked for {end}")
        self.keys[layer][:, :, self.seen : end] = k
        self.values[layer][:, :, self.seen : end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]

    def advance(self, num_tokens: int) -> None:
        self.seen += num_tokens

    def select(self, batch_index: torch.Tensor) -> None:
        """Keep only some sequences (e.g. drop finished ones) in place."""
        self.keys = [k[batch_index] for k in self.keys]
        self.values = [v[batch_index] for v in self.values]
