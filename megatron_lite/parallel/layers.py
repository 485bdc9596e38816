"""Tensor-parallel layers: ColumnParallelLinear, RowParallelLinear, VocabParallelEmbedding.

Initialization is layout-independent: every weight is first drawn whole ("master" weight) from a
generator seeded by a stable name, then this rank keeps its slice. So a tp=1 and a tp=4 model
built from the same seed hold the same numbers, which is what the invariance tests rely on
(Megatron's CPU-initialization path does the same).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterator
from contextvars import ContextVar

import torch
import torch.nn.functional as F
from torch import nn

from megatron_lite.parallel.mappings import (
    copy_to_region,
    gather_from_region,
    gather_sequence_to_region,
    reduce_from_region,
    reduce_scatter_to_sequence,
    scatter_to_region,
)
from megatron_lite.parallel.state import ParallelState

# Reorders master rows before slicing: rows -> rows in "rank-major" order (see glu_row_order).
RowOrder = Callable[[int, int], torch.Tensor]


def stable_seed(seed: int, name: str) -> int:
    """A 63-bit seed from the run seed and a parameter's name (same on every rank and run)."""
    digest = hashlib.blake2b(f"{seed}:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def master_normal(shape: tuple[int, ...], std: float, seed: int, name: str) -> torch.Tensor:
    """The whole weight, N(0, std), drawn on the CPU in fp32."""
    gen = torch.Generator().manual_seed(stable_seed(seed, name))
    return torch.empty(shape).normal_(0.0, std, generator=gen)


def glu_row_order(rows: int, tp: int) -> torch.Tensor:
    """Row order for a fused [value; gate] projection so each rank gets its value AND gate rows.

    Canonical (tp=1) layout is [value (rows/2); gate (rows/2)]. Rank r must hold
    [value_r; gate_r], so the master rows are permuted to [v_0, g_0, v_1, g_1, ...].
    """
    half, chunk = rows // 2, rows // 2 // tp
    order = [torch.arange(r * chunk, (r + 1) * chunk) + off for r in range(tp) for off in (0, half)]
    return torch.cat(order)


LinearFn = Callable[..., torch.Tensor]  # (x [*, in], weight [out, in], bias [out] | None) -> [*, out]

# The product the layers (and the tied LM head) compute: F.linear, unless a caller swaps in an
# equal one for a block (the inference path does, for CPU decoding: inference/cpu_decoding.py).
# A context variable, not a global: a swap is local to the thread / task that made it.
_LINEAR: ContextVar[LinearFn] = ContextVar("megatron_lite_linear", default=F.linear)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(x, weight, bias)``, or the product ``linear_product`` put in place."""
    return _LINEAR.get()(x, weight, bias)


@contextlib.contextmanager
def linear_product(fn: LinearFn) -> Iterator[None]:
    """Within the block, the layers compute their products with ``fn`` (which must equal
    ``F.linear`` up to rounding)."""
    token = _LINEAR.set(fn)
    try:
        yield
    finally:
        _LINEAR.reset(token)


def enter_region(x: torch.Tensor, state: ParallelState, sequence_parallel: bool) -> torch.Tensor:
    """The input of a column-parallel product: replicated [*, in] as it is, or sequence chunks
    [b, s/tp, in] gathered to [b, s, in]."""
    return gather_sequence_to_region(x, state) if sequence_parallel else copy_to_region(x, state)


def leave_region(x: torch.Tensor, state: ParallelState, sequence_parallel: bool) -> torch.Tensor:
    """Partial sums [b, s, out] of a row-parallel product -> their sum, whole or (sequence
    parallel) this rank's chunk [b, s/tp, out]."""
    return reduce_scatter_to_sequence(x, state) if sequence_parallel else reduce_from_region(x, state)


def sequence_parallel_param(param: torch.Tensor, state: ParallelState) -> torch.Tensor:
    """A replicated parameter applied to sequence chunks: its gradient is summed over the
    tensor-parallel ranks in the backward pass (Megatron all-reduces such gradients after the
    backward; through autograd it also holds under pipelining, checkpointing and ZeRO)."""
    return copy_to_region(param, state)


def mark_tensor_parallel(*params: nn.Parameter | None) -> None:
    """Tag split parameters (Megatron's attribute) so that DeepSpeed's gradient-norm clipping
    sums them over tensor-parallel ranks but counts replicated ones (norms) only once."""
    for param in params:
        if param is not None:
            param.tensor_model_parallel = True


class ColumnParallelLinear(nn.Module):
    """``y = x A^T + b`` with A split by output rows: rank r computes output columns r.

    Input [*, in] (replicated) -> output [*, out/tp], or [*, out] with ``gather_output``.
    With ``sequence_parallel`` the input is this rank's sequence chunk [b, s/tp, in], gathered
    to [b, s, in] on the way in.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        state: ParallelState,
        *,
        bias: bool = True,
        gather_output: bool = False,
        init_std: float = 0.02,
        seed: int = 0,
        name: str = "linear",
        row_order: RowOrder | None = None,
        sequence_parallel: bool = False,
    ) -> None:
        super().__init__()
        if out_features % state.tp_size:
            raise ValueError(f"{name}: {out_features} outputs not divisible by tp {state.tp_size}")
        self.state, self.gather_output = state, gather_output
        self.sequence_parallel = sequence_parallel and state.tp_size > 1
        self.out_local = out_features // state.tp_size
        # The full sizes and the init name: what a LoRA adapter on this layer draws its own
        # layout-independent init from (parallel/lora_layers.py).
        self.in_features, self.out_features, self.name, self.seed = in_features, out_features, name, seed
        master = master_normal((out_features, in_features), init_std, seed, name)
        if row_order is not None:
            master = master[row_order(out_features, state.tp_size)]
        rows = slice(state.tp_rank * self.out_local, (state.tp_rank + 1) * self.out_local)
        self.weight = nn.Parameter(master[rows].clone())  # [out/tp, in]
        self.bias = nn.Parameter(torch.zeros(self.out_local)) if bias else None
        mark_tensor_parallel(self.weight, self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = enter_region(x, self.state, self.sequence_parallel)
        y = linear(x, self.weight, self.bias)  # [*, out/tp]
        return gather_from_region(y, self.state) if self.gather_output else y


class RowParallelLinear(nn.Module):
    """``y = x A^T + b`` with A split by input columns; partial sums are all-reduced.

    Input [*, in/tp] (``input_is_parallel``) or [*, in] -> output [*, out] (replicated), or
    with ``sequence_parallel`` this rank's sequence chunk [b, s/tp, out] (reduce-scattered).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        state: ParallelState,
        *,
        bias: bool = True,
        input_is_parallel: bool = True,
        init_std: float = 0.02,
        seed: int = 0,
        name: str = "linear",
        sequence_parallel: bool = False,
    ) -> None:
        super().__init__()
        if in_features % state.tp_size:
            raise ValueError(f"{name}: {in_features} inputs not divisible by tp {state.tp_size}")
        self.state, self.input_is_parallel = state, input_is_parallel
        self.sequence_parallel = sequence_parallel and state.tp_size > 1
        self.in_local = in_features // state.tp_size
        self.in_features, self.out_features, self.name, self.seed = in_features, out_features, name, seed
        master = master_normal((out_features, in_features), init_std, seed, name)
        cols = slice(state.tp_rank * self.in_local, (state.tp_rank + 1) * self.in_local)
        self.weight = nn.Parameter(master[:, cols].clone())  # [out, in/tp]
        mark_tensor_parallel(self.weight)
        # The bias is added once, after the reduction, so every rank holds all of it.
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.input_is_parallel:
            x = scatter_to_region(x, self.state)
        y = leave_region(linear(x, self.weight), self.state, self.sequence_parallel)  # [*, out]
        if self.bias is None:
            return y
        # On sequence chunks each rank sees its own tokens: sum the bias gradient over them.
        return y + (sequence_parallel_param(self.bias, self.state) if self.sequence_parallel else self.bias)


class VocabParallelEmbedding(nn.Module):
    """Embedding with the (padded) vocabulary split in contiguous row ranges across ranks."""

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        state: ParallelState,
        *,
        init_std: float = 0.02,
        seed: int = 0,
        name: str = "embedding",
    ) -> None:
        super().__init__()
        if num_embeddings % state.tp_size:
            raise ValueError(f"vocabulary {num_embeddings} not divisible by tp {state.tp_size}")
        self.state = state
        per_rank = num_embeddings // state.tp_size
        self.vocab_start, self.vocab_end = state.tp_rank * per_rank, (state.tp_rank + 1) * per_rank
        master = master_normal((num_embeddings, embedding_dim), init_std, seed, name)
        self.weight = nn.Parameter(master[self.vocab_start : self.vocab_end].clone())  # [v/tp, h]
        mark_tensor_parallel(self.weight)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.state.tp_size == 1:
            return F.embedding(tokens, self.weight)
        # Ids owned by other ranks look up row 0 and are zeroed; the all-reduce fills them in.
        outside = (tokens < self.vocab_start) | (tokens >= self.vocab_end)
        local = (tokens - self.vocab_start).masked_fill(outside, 0)
        out = F.embedding(local, self.weight).masked_fill(outside.unsqueeze(-1), 0.0)
        return reduce_from_region(out, self.state)  # [b, s, h]
