"""Position encodings: rotary (GPT-NeoX / Hugging Face layout), ALiBi, sinusoidal.

Learned positions are a plain ``nn.Embedding`` in ``embedding.py``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from megatron_lite.config.attention_options import canonical_rope_scaling


def scaled_inv_freq(inv_freq: torch.Tensor, scaling: dict[str, Any] | None) -> torch.Tensor:
    """Rotary frequencies [rot/2] after ``rope_scaling``, exactly as transformers'
    ``modeling_rope_utils`` computes them (same operations in the same order, so the same bits):

    - ``linear``: every frequency / factor, i.e. positions / factor;
    - ``llama3`` (Llama 3.1): wavelengths longer than ``original / low_freq_factor`` are divided
      by factor, shorter than ``original / high_freq_factor`` kept, those between interpolated.
    """
    scaling = canonical_rope_scaling(scaling, "rotary")
    if scaling is None:
        return inv_freq
    factor = scaling["factor"]
    if scaling["type"] == "linear":
        return inv_freq / factor
    low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
    old_len = scaling["original_max_position_embeddings"]
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
    smooth = (old_len / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < old_len / high) * ~(wavelen > old_len / low)
    return torch.where(medium, smoothed, scaled)


class RotaryEmbedding(nn.Module):
    """Rotates the first ``rotary_ndims`` dims of each head, halves-style (``rotate_half``).

    Matches ``transformers``' GPTNeoX and Llama/Mistral (the same ``rotate_half`` form; Llama
    rotates the whole head, ``rotary_pct`` 1.0): ``inv_freq = base ** -(arange(0, d, 2) / d)``
    (then ``rope_scaling``), ``cos/sin`` of ``cat(freqs, freqs)``; the other
    ``head_dim - rotary_ndims`` dims pass through.
    """

    def __init__(self, head_dim: int, rotary_pct: float, base: int,
                 scaling: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.rotary_ndims = int(head_dim * rotary_pct)
        exponent = torch.arange(0, self.rotary_ndims, 2, dtype=torch.int64).float() / self.rotary_ndims
        inv_freq = scaled_inv_freq(1.0 / (base**exponent), scaling)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def cos_sin(self, position_ids: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin: [b or 1, s, 1, rotary_ndims] for positions [b or 1, s]."""
        freqs = position_ids.float().unsqueeze(-1) * self.inv_freq  # [b, s, rot/2]
        emb = torch.cat((freqs, freqs), dim=-1).unsqueeze(2)  # [b, s, 1, rot]
        return emb.cos().to(dtype), emb.sin().to(dtype)

    def rotate(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """x: [b, s, heads, head_dim] -> same shape, first rotary_ndims rotated."""
        # chunk/split rather than slicing: their backward is one concatenation, where every
        # slice's backward fills a zero tensor of x's size (this runs twice per layer).
        full = self.rotary_ndims == x.shape[-1]
        rot, rest = (x, None) if full else x.split([self.rotary_ndims, x.shape[-1] - self.rotary_ndims], -1)
        first, second = rot.chunk(2, dim=-1)
        rotated = torch.cat((-second, first), dim=-1)
        out = rot * cos + rotated * sin
        return out if rest is None else torch.cat((out, rest), dim=-1)


def alibi_slopes(num_heads: int) -> torch.Tensor:
    """ALiBi head slopes (Press et al.), including the non-power-of-two interpolation."""
    def powers(n: int) -> list[float]:
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        return [start * start**i for i in range(n)]

    if math.log2(num_heads).is_integer():
        return torch.tensor(powers(num_heads))
    closest = 2 ** math.floor(math.log2(num_heads))
    extra = powers(2 * closest)[0::2][: num_heads - closest]
    return torch.tensor(powers(closest) + extra)


def alibi_bias(
    slopes: torch.Tensor, q_positions: torch.Tensor, k_len: int, dtype: torch.dtype
) -> torch.Tensor:
    """Additive attention bias [1, heads, s_q, s_k]: -slope * distance, -inf above the diagonal."""
    k_positions = torch.arange(k_len, device=q_positions.device)
    distance = q_positions.view(-1, 1) - k_positions.view(1, -1)  # [s_q, s_k]
    bias = -slopes.to(q_positions.device).view(-1, 1, 1) * distance.clamp(min=0).float()
    bias = bias.masked_fill(distance < 0, float("-inf"))
    return bias.unsqueeze(0).to(dtype)


def sinusoidal_table(max_positions: int, hidden_size: int) -> torch.Tensor:
    """GPT-NeoX's sinusoidal positions: [max_positions, hidden] = cat(sin, cos)."""
    inv_freq = 1.0 / (10000 ** (torch.arange(0, hidden_size, 2).float() / hidden_size))
    angles = torch.arange(max_positions).float().unsqueeze(1) * inv_freq  # [p, h/2]
    return torch.cat((angles.sin(), angles.cos()), dim=-1)
