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


def _split_seq(x: torch.Tensor, state: ParallelState) -> torch.Tensor:
    # [b, s, ...] -> [b, s/tp, ...], a view (as _split_last)
    chunk = _seq_chunk(x.shape[1], state)
    return x[:, state.tp_rank * chunk : (state.tp_rank + 1) * chunk]


def _gather_seq(x: torch.Tensor, state: ParallelState) -> torch.Tensor:
    # [b, s/tp, ...] on every rank -> [b, s, ...], rank order along s
    x = x.contiguous()
    parts = [torch.empty_like(x) for _ in range(state.tp_size)]
    dist.all_gather(parts, x, group=state.tp_group)
    return torch.cat(parts, dim=1)


def _reduce_scatter_seq(x: torch.Tensor, state: ParallelState) -> torch.Tensor:
    # [b, s, ...] partial sums on every rank -> this rank's s chunk of their sum [b, s/tp, ...]
    chunk = _seq_chunk(x.shape[1], state)
    parts = [part.contiguous() for part in x.split(chunk, dim=1)]
    out = torch.empty_like(parts[state.tp_rank])
    dist.reduce_scatter(out, parts, group=state.tp_group)
    return out


def _seq_chunk(length: int, state: ParallelState) -> int:
    if length % state.tp_size:
        raise ValueError(f"sequence_parallel: a sequence of {length} tokens does not split over "
                         f"model_parallel_size {state.tp_size} ranks")
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


class _ScatterToSequence(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, state):
        ctx.state = state
        return _split_seq(x, state)

    @staticmethod
    def backward(ctx, grad):
        return _gather_seq(grad, ctx.state), None


class _GatherFromSequence(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, state, grad_is_partial):
        ctx.state, ctx.grad_is_partial = state, grad_is_partial
        return _gather_seq(x, state)

    @staticmethod
    def backward(ctx, grad):
        if ctx.grad_is_partial:
            return _reduce_scatter_seq(grad, ctx.state), None, None
        return _split_seq(grad, ctx.state), None, None


class _ReduceScatterToSequence(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, state):
        ctx.state = state
        return _reduce_scatter_seq(x, state)

    @staticmethod
    def backward(ctx, grad):
        return _gather_seq(grad, ctx.state), None


def scatter_to_sequence(x: torch.Tensor, state: ParallelState) -> torch.Tensor:
    """Replicated [b, s, ...] -> this rank's sequence chunk [b, s/tp, ...]."""
    return x if state.tp_size == 1 else _ScatterToSequence.apply(x, state)


def gather_sequence_to_region(x: torch.Tensor, state: ParallelState) -> torch.Tensor:
    """Sequence chunks [b, s/tp, ...] -> the whole [b, s, ...], entering a tensor-parallel
    region (its backward reduce-scatters the ranks' partial gradients)."""
    return x if state.tp_size == 1 else _GatherFromSequence.apply(x, state, True)


def gather_from_sequence(x: torch.Tensor, state: ParallelState) -> torch.Tensor:
    """Sequence chunks [b, s/tp, ...] -> the whole [b, s, ...], replicated from here on."""
    return x if state.tp_size == 1 else _GatherFromSequence.apply(x, state, False)


def reduce_scatter_to_sequence(x: torch.Tensor, state: ParallelState) -> torch.Tensor:
    """Leave a tensor-parallel region: sum the ranks' partial [b, s, ...] and keep this
    rank's sequence chunk [b, s/tp, ...] (half the traffic of an all-reduce)."""
    return x if state.tp_size == 1 else _ReduceScatterToSequence.apply(x, state)
