"""What LoRA needs that is not a layer (and so not peft): the merge formula, the factor A's
layout-independent init, and the switch that turns every adapter off (the DPO reference).
The layers themselves are in ``lora_layers.py``, which imports peft (seconds): checkpoint
readers merge adapters with this module alone.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from contextvars import ContextVar

import torch

from megatron_lite.parallel.layers import stable_seed

# True within ``adapters_disabled()``: the layers compute their base alone. A context variable,
# not a flag on every layer: the DPO reference (the base) runs in the middle of a training step,
# and flipping peft's per-layer switch would also flip requires_grad on the trained factors.
_ADAPTERS_OFF: ContextVar[bool] = ContextVar("megatron_lite_adapters_off", default=False)


def adapters_are_off() -> bool:
    """True within ``adapters_disabled()``."""
    return _ADAPTERS_OFF.get()


@contextlib.contextmanager
def adapters_disabled() -> Iterator[None]:
    """Within the block, every LoRA layer computes its base layer only."""
    token = _ADAPTERS_OFF.set(True)
    try:
        yield
    finally:
        _ADAPTERS_OFF.reset(token)


def delta_weight(lora_a: torch.Tensor, lora_b: torch.Tensor, scaling: float) -> torch.Tensor:
    """``scaling * B A`` [out, in] from A [r, in] and B [out, r], computed in fp32, returned in
    B's dtype (the one formula behind merging a layer and merging a checkpoint)."""
    return (scaling * (lora_b.float() @ lora_a.float())).to(lora_b.dtype)


def master_lora_a(rank: int, in_features: int, seed: int, name: str) -> torch.Tensor:
    """The whole A [r, in]: kaiming-uniform (a = sqrt(5), peft's and nn.Linear's default), drawn
    on the CPU from a generator seeded by the layer's name (same on every rank and layout)."""
    gen = torch.Generator().manual_seed(stable_seed(seed, f"{name}.lora_A"))
    bound = 1.0 / math.sqrt(in_features)
    return torch.empty(rank, in_features).uniform_(-bound, bound, generator=gen)
