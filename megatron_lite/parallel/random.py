"""Per-rank random streams for dropout, and activation checkpointing that replays them.

Two streams, as in Megatron:
- the default torch generator, seeded identically on all tensor-parallel ranks of a replica:
  dropout on replicated activations (the residual stream) must match across TP ranks;
- the ``model-parallel`` stream, seeded per TP rank: dropout inside a TP region (attention
  probabilities of this rank's heads) must differ between ranks, or heads would share masks.

``checkpoint(fn, *args)`` recomputes ``fn`` in the backward pass with the same streams it saw
in the forward pass, so dropout masks (both streams) are identical on recompute.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.checkpoint import checkpoint as torch_checkpoint

MODEL_PARALLEL_RNG = "model-parallel"
_TP_SEED_OFFSET = 2718


class RNGStatesTracker:
    """Named generator states that can be swapped in around a block of code."""

    def __init__(self) -> None:
        self.states: dict[str, torch.Tensor] = {}
        self.cuda_states: dict[str, torch.Tensor] = {}

    def add(self, name: str, seed: int) -> None:
        with torch.random.fork_rng(devices=_cuda_devices()):
            torch.manual_seed(seed)
            self.states[name] = torch.get_rng_state()
            if torch.cuda.is_available():
                self.cuda_states[name] = torch.cuda.get_rng_state()

    @contextlib.contextmanager
    def fork(self, name: str = MODEL_PARALLEL_RNG) -> Iterator[None]:
        """Run the block with stream ``name``; it advances that stream, not the default one."""
        if name not in self.states:
            yield
            return
        saved = torch.get_rng_state()
        saved_cuda = torch.cuda.get_rng_state() if torch.cuda.is_available() else None
        torch.set_rng_state(self.states[name])
        if saved_cuda is not None:
            torch.cuda.set_rng_state(self.cuda_states[name])
        try:
            yield
        finally:
            self.states[name] = torch.get_rng_state()
            torch.set_rng_state(saved)
            if saved_cuda is not None:
                self.cuda_states[name] = torch.cuda.get_rng_state()
                torch.cuda.set_rng_state(saved_cuda)

    def snapshot(self) -> tuple[dict, dict]:
        return dict(self.states), dict(self.cuda_states)

    def restore(self, snap: tuple[dict, dict]) -> None:
        self.states, self.cuda_states = dict(snap[0]), dict(snap[1])


def _cuda_devices() -> list[int]:
    return list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []


_TRACKER = RNGStatesTracker()


def get_rng_tracker() -> RNGStatesTracker:
    """The process's tracker (one per process, like torch's own default generator)."""
    return _TRACKER


def seed_everything(seed: int, tp_rank: int, pp_rank: int = 0) -> None:
    """Default stream: same on every TP rank (offset per pipeline stage, as Megatron does);
    model-parallel stream: different per TP rank."""
    base = seed + 100 * pp_rank
    torch.manual_seed(base)
    _TRACKER.states.clear()
    _TRACKER.cuda_states.clear()
    _TRACKER.add(MODEL_PARALLEL_RNG, base + _TP_SEED_OFFSET + tp_rank)


def checkpoint(fn: Callable[..., Any], *args: Any) -> Any:
    """Activation checkpointing that also replays the tracker's streams on recompute."""
    snap = _TRACKER.snapshot()

    def contexts():
        @contextlib.contextmanager
        def recompute():
            current = _TRACKER.snapshot()
            _TRACKER.restore(snap)
            try:
                yield
            finally:
                _TRACKER.restore(current)

        return contextlib.nullcontext(), recompute()

    return torch_checkpoint(fn, *args, use_reentrant=False, context_fn=contexts)
