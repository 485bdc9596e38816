"""LoRA adapters on the tensor-parallel layers, as peft LoRA layers.

peft injects, freezes, names and collects them (``model/lora.py`` registers these classes with
``LoraConfig._register_custom_module``); what peft lacks is the layer itself. Its own
tensor-parallel LoRA (``peft.tuners.lora.tp_layer.LoraParallelLinear``) is written for
Megatron-Core only: it builds its factors with Megatron-Core's ``ColumnParallelLinear(input_size,
output_size, config=...)`` constructors, expects the base layer to return ``(output, bias)``, and
initialises each rank's shard from that rank's own generator, so a tp = 2 run would start from
other adapters than a tp = 1 run. Here, as for the layers' own weights (``layers.py``), every
factor is drawn whole from a generator seeded by the layer's name, then sliced:

- column-parallel ``W [out/tp, in]``: ``A [r, in]`` replicated, ``B [out/tp, r]`` split like W's
  rows (GLU ``[value_r; gate_r]`` order included: B's rows follow W's rows on the rank);
- row-parallel ``W [out, in/tp]``: ``A [r, in/tp]`` split like W's columns, ``B [out, r]``
  replicated; the partial ``x A^T`` is all-reduced (``[*, r]``, before B) like W's partial sums.

Either way the rank's share of ``delta W = B A`` is the shard of ``W`` it sits on, so merging
is local on every rank, and the checkpoint's shards merge like the weights (``sharding.py``).
A starts kaiming-uniform (peft's default, ``U(-1/sqrt(in), 1/sqrt(in))``), B at zero: the adapted
model starts equal to its base.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from peft.tuners.lora.layer import LoraLayer
from peft.tuners.tuners_utils import check_adapters_to_merge
from torch import nn

from megatron_lite.parallel.layers import (
    enter_region,
    leave_region,
    linear,
    mark_tensor_parallel,
    sequence_parallel_param,
)
from megatron_lite.parallel.lora import adapters_are_off, delta_weight, master_lora_a
from megatron_lite.parallel.mappings import gather_from_region, scatter_to_region
from megatron_lite.parallel.random import get_rng_tracker


def _factor(weight: torch.Tensor, like: torch.Tensor) -> nn.Linear:
    """An ``nn.Linear`` holding ``weight`` (peft's layout: ``lora_A[name].weight``)."""
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=False, device="meta")
    layer.weight = nn.Parameter(weight.to(device=like.device, dtype=like.dtype))
    return layer


def _dropout_stream(drop: nn.Module, per_rank: bool) -> contextlib.AbstractContextManager:
    """Where ``drop`` draws its mask: the per-rank stream for inputs that differ between
    tensor-parallel ranks, else the default one (no swap when nothing is drawn)."""
    if per_rank and drop.training and isinstance(drop, nn.Dropout):
        return get_rng_tracker().fork()
    return contextlib.nullcontext()


class _ParallelLoraLayer(nn.Module, LoraLayer):
    """What both parallel LoRA layers share: peft's bookkeeping, init, merge."""

    column: bool

    def __init__(self, base_layer: nn.Module, adapter_name: str, config: Any, r: int = 0,
                 lora_alpha: float = 1, **kwargs: Any) -> None:
        super().__init__()
        LoraLayer.__init__(self, base_layer)
        self._active_adapter = adapter_name
        self.update_layer(adapter_name, r, lora_alpha, config)

    def _get_in_out_features(self, module: nn.Module) -> tuple[int, int]:
        return module.in_features, module.out_features  # the full sizes (layers.py)

    def update_layer(self, adapter_name: str, r: int, lora_alpha: float, config: Any, **kwargs: Any) -> None:
        """Add adapter ``adapter_name``: A from the layer's seed and name, B zero (module docstring)."""
        if r <= 0:
            raise ValueError(f"LoRA rank must be > 0, got {r}")
        base = self.get_base_layer()
        self.r[adapter_name], self.lora_alpha[adapter_name] = r, lora_alpha
        self.scaling[adapter_name] = lora_alpha / r
        self.lora_dropout[adapter_name] = nn.Dropout(config.lora_dropout) if config.lora_dropout else nn.Identity()
        a = master_lora_a(r, base.in_features, base.seed, base.name)  # [r, in]
        state = base.state
        if self.column:
            b = torch.zeros(base.out_features // state.tp_size, r)  # [out/tp, r]
        else:
            per_rank = base.in_features // state.tp_size
            a = a[:, state.tp_rank * per_rank : (state.tp_rank + 1) * per_rank]  # [r, in/tp]
            b = torch.zeros(base.out_features, r)  # [out, r]
        self.lora_A[adapter_name] = _factor(a.contiguous(), base.weight)
        self.lora_B[adapter_name] = _factor(b, base.weight)
        # The split factor sums its gradient norm over tensor ranks, like its weight's shard.
        mark_tensor_parallel(self.lora_B[adapter_name].weight if self.column else self.lora_A[adapter_name].weight)
        self.set_adapter(self.active_adapters)

    def _active(self) -> list[str]:
        if self.disable_adapters or self.merged or adapters_are_off():
            return []
        return [name for name in self.active_adapters if name in self.lora_A]

    def get_delta_weight(self, adapter: str) -> torch.Tensor:
        """This rank's ``scaling * B A``: the shape of its shard of the base weight."""
        return delta_weight(self.lora_A[adapter].weight, self.lora_B[adapter].weight, self.scaling[adapter])

    def merge(self, safe_merge: bool = False, adapter_names: list[str] | None = None) -> None:
        """Add the adapters into this rank's base weight (peft's ``merge_and_unload`` calls it)."""
        weight = self.get_base_layer().weight
        for name in check_adapters_to_merge(self, adapter_names):
            if name in self.lora_A:
                weight.data += self.get_delta_weight(name).to(weight.dtype)
                self.merged_adapters.append(name)

    def unmerge(self) -> None:
        weight = self.get_base_layer().weight
        while self.merged_adapters:
            name = self.merged_adapters.pop()
            if name in self.lora_A:
                weight.data -= self.get_delta_weight(name).to(weight.dtype)

    def __repr__(self) -> str:
        return "lora." + super().__repr__()


class LoraColumnParallelLinear(_ParallelLoraLayer):
    """``ColumnParallelLinear`` + ``scaling * B A``: x [*, in] -> [*, out/tp] (or gathered)."""

    column = True

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        result = self.base_layer(x)
        base = self.get_base_layer()
        for name in self._active():
            # Dropout on the replicated input draws from the default stream (equal on TP ranks);
            # sequence chunks differ between ranks, and take the per-rank stream.
            drop, a = self.lora_dropout[name], self.lora_A[name].weight
            if base.sequence_parallel:  # A is replicated and sees this rank's tokens only
                a = sequence_parallel_param(a, base.state)
            with _dropout_stream(drop, per_rank=base.sequence_parallel):
                h = linear(drop(x), a)  # [*, r]
            # A is replicated and each rank's B sees only its output columns: the backward sums
            # dL/dh over the ranks, so every rank's A gets the whole gradient. Sequence chunks
            # [b, s/tp, r] are gathered here, as the base layer gathers its input (r wide, not h).
            h = enter_region(h, base.state, base.sequence_parallel)
            delta = linear(h, self.lora_B[name].weight)  # [*, out/tp]
            if base.gather_output:
                delta = gather_from_region(delta, base.state)
            result = result + delta * self.scaling[name]
        return result


class LoraRowParallelLinear(_ParallelLoraLayer):
    """``RowParallelLinear`` + ``scaling * B A``: x [*, in/tp] -> [*, out] (replicated)."""

    column = False

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        result = self.base_layer(x)
        base = self.get_base_layer()
        for name in self._active():
            local = x if base.input_is_parallel else scatter_to_region(x, base.state)
            drop = self.lora_dropout[name]
            # This rank's input columns differ from the others': its own dropout stream.
            with _dropout_stream(drop, per_rank=True):
                local = drop(local)
            # [*, r], or this rank's sequence chunk [b, s/tp, r], like the base layer's output
            h = leave_region(linear(local, self.lora_A[name].weight), base.state, base.sequence_parallel)
            b = self.lora_B[name].weight
            if base.sequence_parallel:  # B is replicated and sees this rank's tokens only
                b = sequence_parallel_param(b, base.state)
            result = result + linear(h, b) * self.scaling[name]  # [*, out]
        return result
