"""GPT-NeoX's weight-init methods, as the standard deviation of a normal distribution."""

from __future__ import annotations

import math


def init_std(method: str, base_std: float, hidden_size: int, num_layers: int) -> float:
    """``normal``: base std; ``scaled_normal``: base / sqrt(2 L) (GPT-2's residual scaling);
    ``small_init``: sqrt(2 / (5 h)) (Nguyen & Salazar); ``wang_init``: 2 / (L sqrt(h))."""
    if method == "normal":
        return base_std
    if method == "scaled_normal":
        return base_std / math.sqrt(2.0 * num_layers)
    if method == "small_init":
        return math.sqrt(2.0 / (5.0 * hidden_size))
    if method == "wang_init":
        return 2.0 / (num_layers * math.sqrt(hidden_size))
    raise ValueError(f"unknown init method {method!r}")
