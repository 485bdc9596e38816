"""The feed-forward block: column-parallel up projection, activation, row-parallel down."""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from megatron_lite.config.schema import ModelConfig
from megatron_lite.model.init_methods import init_std
from megatron_lite.parallel.layers import ColumnParallelLinear, RowParallelLinear, glu_row_order
from megatron_lite.parallel.state import ParallelState

_ACTIVATIONS = {"gelu": F.gelu, "relu": F.relu, "silu": F.silu, "swiglu": F.silu, "geglu": F.gelu}


class ParallelMLP(nn.Module):
    """h -> mlp_inner_size (x2 for GLU: [value; gate]) -> h. Names follow GPT-NeoX.

    ``mlp_inner_size`` is the width derived from GPT-NeoX's keys (config/derived.py), not the
    raw ``intermediate_size``."""

    def __init__(self, cfg: ModelConfig, state: ParallelState, layer_number: int, seed: int) -> None:
        super().__init__()
        h, ff = cfg.hidden_size, cfg.mlp_inner_size
        self.glu = cfg.activation in ("swiglu", "geglu")
        self.act = _ACTIVATIONS[cfg.activation]
        if cfg.activation == "gelu" and cfg.bias_gelu_fusion:
            # GPT-NeoX's fused bias-GeLU kernel computes the tanh approximation, not the erf GeLU.
            self.act = functools.partial(F.gelu, approximate="tanh")
        std = init_std(cfg.init_method, cfg.init_method_std, h, cfg.num_layers)
        out_std = init_std(cfg.output_layer_init_method, cfg.init_method_std, h, cfg.num_layers)
        prefix = f"layers.{layer_number}.mlp"
        self.dense_h_to_4h = ColumnParallelLinear(
            h, ff * (2 if self.glu else 1), state, bias=cfg.use_bias_in_mlp, init_std=std,
            seed=seed, name=f"{prefix}.dense_h_to_4h", row_order=glu_row_order if self.glu else None,
            sequence_parallel=state.sequence_parallel,
        )
        self.dense_4h_to_h = RowParallelLinear(
            ff, h, state, bias=cfg.use_bias_in_mlp, init_std=out_std, seed=seed,
            name=f"{prefix}.dense_4h_to_h", sequence_parallel=state.sequence_parallel,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dense_h_to_4h(x)  # [b, s, ff/tp] (x2 for GLU); x [b, s or s/tp (sequence parallel), h]
        if self.glu:
            value, gate = y.chunk(2, dim=-1)
            y = self.act(gate) * value
        else:
            y = self.act(y)
        return self.dense_4h_to_h(y)  # [b, s, h], or [b, s/tp, h] sequence parallel
