"""Attention options beyond GPT-NeoX's basics, checked and put in one canonical form.

- ``rope_scaling`` is megatron_lite's own key (GPT-NeoX has no rotary scaling): transformers'
  ``linear`` and ``llama3`` types, with transformers' parameter names, so a Hugging Face
  ``rope_scaling`` / ``rope_parameters`` section can be copied as it is (``rope_type`` or
  ``type`` names the type; ``rope_theta`` is our ``rotary_emb_base`` and is not part of it).
- ``sliding_window_width`` is GPT-NeoX's key, with GPT-NeoX's meaning: flash-attention's
  ``window_size=(sliding_window_width, -1)``, i.e. a token attends to itself and the
  ``sliding_window_width`` tokens before it. Hugging Face Mistral's ``sliding_window`` counts
  the token itself: ``sliding_window = sliding_window_width + 1``.
"""

from __future__ import annotations

import math
from typing import Any

from megatron_lite.config.loader import ConfigError

# type -> its parameters (all required; transformers' names).
ROPE_SCALING_PARAMS: dict[str, tuple[str, ...]] = {
    "linear": ("factor",),
    "llama3": ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"),
}


def canonical_rope_scaling(value: dict[str, Any] | None, pos_emb: str) -> dict[str, Any] | None:
    """``{"type": ..., <its parameters>}`` (floats; an int context length), or None when unset.

    The canonical form is what the resolved config stores, so a config written next to a
    checkpoint reads back equal, and two spellings of one scaling compare equal."""
    if not value:
        return None
    params = dict(value)
    kind = params.pop("type", None) or params.pop("rope_type", None)
    params.pop("rope_type", None)
    if kind in (None, "default"):
        if params:
            raise ConfigError(f"rope_scaling: parameters {sorted(params)} without a type "
                              f"(types: {', '.join(ROPE_SCALING_PARAMS)})")
        return None
    if kind not in ROPE_SCALING_PARAMS:
        raise ConfigError(f"rope_scaling: type {kind!r} is not implemented "
                          f"(implemented: {', '.join(ROPE_SCALING_PARAMS)})")
    if pos_emb != "rotary":
        raise ConfigError(f"rope_scaling scales rotary frequencies: it needs pos_emb: rotary, not {pos_emb}")
    wanted = ROPE_SCALING_PARAMS[kind]
    if sorted(params) != sorted(wanted):
        raise ConfigError(f"rope_scaling type {kind} takes exactly {', '.join(wanted)}; got {', '.join(sorted(params))}")
    out: dict[str, Any] = {"type": kind}
    for key in wanted:
        number = params[key]
        if isinstance(number, bool) or not isinstance(number, (int, float)) or not math.isfinite(number) \
                or number <= 0:
            raise ConfigError(f"rope_scaling.{key} must be a finite number > 0, got {number!r}")
        out[key] = int(number) if key == "original_max_position_embeddings" else float(number)
    if kind == "llama3" and out["high_freq_factor"] <= out["low_freq_factor"]:
        # transformers divides by (high - low) to interpolate between the two bounds.
        raise ConfigError("rope_scaling: high_freq_factor must exceed low_freq_factor")
    return out


def check_sliding_window(width: int | None) -> None:
    """``sliding_window_width``: None (the whole context) or >= 0 (0: each token sees itself)."""
    if width is not None and width < 0:
        raise ConfigError(f"sliding_window_width must be >= 0 (or unset), got {width}")
