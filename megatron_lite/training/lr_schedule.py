"""GPT-NeoX's learning-rate schedule: linear warmup, then decay to ``min_lr``.

DeepSpeed calls ``step()`` once per optimizer step (after gradient accumulation) and saves
``state_dict()`` in its checkpoints, so a resumed run continues the same curve.
"""

from __future__ import annotations

import math
from typing import Any


class AnnealingLR:
    """lr(t): ``t / warmup * lr`` while warming up, then ``decay_style`` down to ``min_lr``.

    - linear:      lr * (1 - t' / T')                     (t', T' counted after warmup)
    - cosine:      min_lr + (lr - min_lr) * (1 + cos(pi t' / T')) / 2
    - exponential: lr * 2 ** (-t' / T')  (GPT-NeoX: exp(-0.693 t'/T'))
    - constant:    lr
    always clamped below by ``min_lr``; after ``decay_iters`` it stays at ``min_lr``.
    """

    def __init__(self, optimizer: Any, start_lr: float, warmup_iters: int, decay_iters: int,
                 decay_style: str, min_lr: float = 0.0) -> None:
        self.optimizer = optimizer
        self.start_lr, self.min_lr = start_lr, min_lr
        self.warmup_iters, self.decay_iters = warmup_iters, max(decay_iters, 1)
        self.decay_style = decay_style
        self.num_iters = 0
        self._apply()

    def get_lr(self) -> float:
        t = self.num_iters
        if self.warmup_iters > 0 and t <= self.warmup_iters:
            return self.start_lr * t / self.warmup_iters
        span = max(self.decay_iters - self.warmup_iters, 1)
        progress = min((t - self.warmup_iters) / span, 1.0)
        if self.decay_style == "linear":
            lr = self.start_lr * (1.0 - progress)
        elif self.decay_style == "cosine":
            lr = self.min_lr + (self.start_lr - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
        elif self.decay_style == "exponential":
            lr = self.start_lr * math.exp(-0.693 * progress)
        else:
            lr = self.start_lr
        return max(lr, self.min_lr)

    def _apply(self) -> None:
        lr = self.get_lr()
        if self.optimizer is not None:
            for group in self.optimizer.param_groups:
                group["lr"] = lr

    def step(self, increment: int = 1) -> None:
        self.num_iters += increment
        self._apply()

    def get_last_lr(self) -> list[float]:
        return [self.get_lr()]

    def state_dict(self) -> dict[str, Any]:
        return {"num_iters": self.num_iters, "start_lr": self.start_lr, "min_lr": self.min_lr,
                "warmup_iters": self.warmup_iters, "decay_iters": self.decay_iters,
                "decay_style": self.decay_style}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # The schedule's shape comes from the current config; only the position is resumed.
        self.num_iters = int(state["num_iters"])
        self._apply()
