"""Tensor-parallel region mappings, named for what they do to the region (Megatron's four).

    copy_to_region      forward: identity            backward: all-reduce
    reduce_from_region  forward: all-reduce           backward: identity
    scatter_to_region   forward: keep my last-dim chunk   backward: all-gather
    gather_from_region  forward: all-gather last dim  backward: keep my chunk

All take the ``ParallelState``; with ``tp_size == 1`` they return the input untouched, so
there is one code path for every layout (and no copy at all at tp = 1).
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from megatron_lite.parallel.state import ParallelState


def _all_reduce(x: torch.Tensor, state: ParallelState) -> torch.Tensor:
    x = x.contiguous()
    dist.all_reduce(x, group=state.tp_group)
    return x


def _split_last(x: torch.Tensor, state: ParallelState) -> torch.Tensor:
    # A view: its consumers (a matmul, or autograd accumulating a gradient) take strided input.
    chunk = x.shape[-1] // state.tp_size
    return x[..., state.tp_rank * chunk : (state.tp_rank + 1) * chunk]


def _gather_last(x: torch.Tensor, state: ParallelState) -> torch.Tensor:
    # [..., n] on every rank -> [..., tp * n], rank order along the last dim
    x = x.contiguous()
    parts = [torch.empty_like(x) for _ in range(state.tp_size)]
    dist.all_gather(parts, x, group=state.tp_group)
    return torch.cat(parts, dim=-1)


class _CopyToRegion(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, state):
        ctx.state = state
        return x

    @staticmethod
    def backward(ctx, grad):
        # Autograd may hand the same gradient buffer to other functions: reduce a copy.
        return _all_reduce(grad.clone(), ctx.state), None


class _ReduceFromRegion(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, state):
        if not x.is_contiguous():
            return _all_reduce(x, state)  # .contiguous() inside makes the copy to reduce
        # x is a fresh partial sum (a matmul or masked embedding output): reduce it in place
        # instead of copying it first. mark_dirty lets autograd refuse if anything saved x.
        ctx.mark_dirty(x)
        dist.all_reduce(x, group=state.tp_group)
        return x

    @staticmethod
    def backward(ctx, grad):
        return grad, None


class _ScatterToRegion(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, state):
        ctx.state = state
        return _split_last(x, state)

    @staticmethod
    def backward(ctx, grad):
        return _gather_last(grad, ctx.state), None


class _GatherFromRegion(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, state):
        ctx.state = state
        return _gather_last(x, state)

    @staticmethod
    def backward(ctx, grad):
        return _split_last(grad, ctx.state), None


def copy_to_region(x: torch.Tensor, state: ParallelState) -> torch.Tensor:
    """Enter a tensor-parallel region: gradients from all ranks are summed on the way back."""
    return x if state.tp_size == 1 else _CopyToRegion.apply(x, state)


def reduce_from_region(x: torch.Tensor, state: ParallelState) -> torch.Tensor:
    """Leave a region by summing the ranks' partial results."""
    return x if state.tp_size == 1 else _ReduceFromRegion.apply(x, state)


def scatter_to_region(x: torch.Tensor, state: ParallelState) -> torch.Tensor:
    """Keep this rank's chunk of the last dimension."""
    return x if state.tp_size == 1 else _ScatterToRegion.apply(x, state)


def gather_from_region(x: torch.Tensor, state: ParallelState) -> torch.Tensor:
    """Concatenate the ranks' chunks of the last dimension."""
    return x if state.tp_size == 1 else _GatherFromRegion.apply(x, state)
