"""Tensor-parallel region mappings, named for what they do to the region (Megatron's four).

    copy_to_region      forward: identity            backward: all-reduce
    reduce_from_region  forward: all-reduce           backward: identity
    scatter_to_region   forward: keep my last-dim chunk   backward: all-gather
    gather_from_region  forward: all-gather last dim  backward: keep my chunk

and, for sequence parallelism (Megatron-LM's, arXiv 2205.05198: outside the tensor-parallel
regions, activations [b, s, h] are split along s across the tensor-parallel ranks), four more
on the sequence dimension (dim 1):

    scatter_to_sequence         forward: keep my s chunk            backward: all-gather s
    gather_sequence_to_region   forward: all-gather s               backward: reduce-scatter s
    gather_from_sequence        forward: all-gather s               backward: keep my s chunk
    reduce_scatter_to_sequence  forward: reduce-scatter s           backward: all-gather s

``gather_sequence_to_region`` enters a region whose ranks each send back a partial gradient
(a column-parallel product); ``gather_from_sequence`` leaves sequence parallelism for good (the
final norm and LM head, whose incoming gradient is already whole on every rank).

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


LAST, SEQ = -1, 1  # the dimensions split: hidden/vocab (tensor parallel), sequence (of [b, s, h])


def _split(x: torch.Tensor, state: ParallelState, dim: int) -> torch.Tensor:
    # [.., n, ..] -> this rank's chunk [.., n/tp, ..] of dim. A view: its consumers (a matmul,
    # or autograd accumulating a gradient) take strided input.
    chunk = _chunk(x.shape[dim], state)
    return x.narrow(dim, state.tp_rank * chunk, chunk)


def _gather(x: torch.Tensor, state: ParallelState, dim: int) -> torch.Tensor:
    # [.., n, ..] on every rank -> [.., tp * n, ..], rank order along dim
    x = x.contiguous()
    parts = [torch.empty_like(x) for _ in range(state.tp_size)]
    dist.all_gather(parts, x, group=state.tp_group)
    return torch.cat(parts, dim=dim)


def _reduce_scatter_seq(x: torch.Tensor, state: ParallelState) -> torch.Tensor:
    # [b, s, ...] partial sums on every rank -> this rank's s chunk of their sum [b, s/tp, ...]
    chunk = _chunk(x.shape[SEQ], state)
    parts = [part.contiguous() for part in x.split(chunk, dim=SEQ)]
    out = torch.empty_like(parts[state.tp_rank])
    dist.reduce_scatter(out, parts, group=state.tp_group)
    return out


def _chunk(length: int, state: ParallelState) -> int:
    if length % state.tp_size:  # the layers and the config check this first (seq_length, widths)
        raise ValueError(f"a dimension of {length} does not split over model_parallel_size "
                         f"{state.tp_size} ranks")
    return length // state.tp_size


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


class _Scatter(torch.autograd.Function):
    """Keep this rank's chunk of ``dim``; backward: all-gather it."""

    @staticmethod
    def forward(ctx, x, state, dim):
        ctx.state, ctx.dim = state, dim
        return _split(x, state, dim)

    @staticmethod
    def backward(ctx, grad):
        return _gather(grad, ctx.state, ctx.dim), None, None


class _Gather(torch.autograd.Function):
    """All-gather ``dim``; backward: keep this rank's chunk of the gradient or, when each rank's
    gradient is a partial sum (``grad_is_partial``, sequence only), reduce-scatter them."""

    @staticmethod
    def forward(ctx, x, state, dim, grad_is_partial):
        ctx.state, ctx.dim, ctx.grad_is_partial = state, dim, grad_is_partial
        return _gather(x, state, dim)

    @staticmethod
    def backward(ctx, grad):
        if ctx.grad_is_partial:
            return _reduce_scatter_seq(grad, ctx.state), None, None, None
        return _split(grad, ctx.state, ctx.dim), None, None, None


class _ReduceScatterToSequence(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, state):
        ctx.state = state
        return _reduce_scatter_seq(x, state)

    @staticmethod
    def backward(ctx, grad):
        return _gather(grad, ctx.state, SEQ), None


def copy_to_region(x: torch.Tensor, state: ParallelState) -> torch.Tensor:
    """Enter a tensor-parallel region: gradients from all ranks are summed on the way back."""
    return x if state.tp_size == 1 else _CopyToRegion.apply(x, state)


def reduce_from_region(x: torch.Tensor, state: ParallelState) -> torch.Tensor:
    """Leave a region by summing the ranks' partial results."""
    return x if state.tp_size == 1 else _ReduceFromRegion.apply(x, state)


def scatter_to_region(x: torch.Tensor, state: ParallelState) -> torch.Tensor:
    """Keep this rank's chunk of the last dimension."""
    return x if state.tp_size == 1 else _Scatter.apply(x, state, LAST)


def gather_from_region(x: torch.Tensor, state: ParallelState) -> torch.Tensor:
    """Concatenate the ranks' chunks of the last dimension."""
    return x if state.tp_size == 1 else _Gather.apply(x, state, LAST, False)


def scatter_to_sequence(x: torch.Tensor, state: ParallelState) -> torch.Tensor:
    """Replicated [b, s, ...] -> this rank's sequence chunk [b, s/tp, ...]."""
    return x if state.tp_size == 1 else _Scatter.apply(x, state, SEQ)


def gather_sequence_to_region(x: torch.Tensor, state: ParallelState) -> torch.Tensor:
    """Sequence chunks [b, s/tp, ...] -> the whole [b, s, ...], entering a tensor-parallel
    region (its backward reduce-scatters the ranks' partial gradients)."""
    return x if state.tp_size == 1 else _Gather.apply(x, state, SEQ, True)


def gather_from_sequence(x: torch.Tensor, state: ParallelState) -> torch.Tensor:
    """Sequence chunks [b, s/tp, ...] -> the whole [b, s, ...], replicated from here on."""
    return x if state.tp_size == 1 else _Gather.apply(x, state, SEQ, False)


def reduce_scatter_to_sequence(x: torch.Tensor, state: ParallelState) -> torch.Tensor:
    """Leave a tensor-parallel region: sum the ranks' partial [b, s, ...] and keep this
    rank's sequence chunk [b, s/tp, ...] (half the traffic of an all-reduce)."""
    return x if state.tp_size == 1 else _ReduceScatterToSequence.apply(x, state)
