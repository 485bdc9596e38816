"""Validators for data keys whose values the data layer reads again at run time: one function
per key, used by the pre-launch check (``derived.validate``) and by the data layer itself, so the
two can never disagree (``split: "969/30/1"`` is accepted by both, as GPT-NeoX accepts it)."""

from __future__ import annotations

import re

from megatron_lite.config.loader import ConfigError
from megatron_lite.config.schema import DataConfig

_NUMBER = r"\s*\d+(?:\.\d*)?(?:[eE][+-]?\d+)?\s*"


def parse_split(split: str) -> list[float]:
    """``split``: ``"969,30,1"`` (or ``"969/30/1"``, or ``"100"``) as three proportions summing to 1."""
    text = str(split).strip()
    sep = "," if "," in text else "/"
    parts = text.split(sep) if text else []
    if not 1 <= len(parts) <= 3 or not all(re.fullmatch(_NUMBER, p) for p in parts):
        raise ConfigError(
            f"bad split {split!r}: expected up to three non-negative numbers separated by ',' "
            "or '/', e.g. '969,30,1'"
        )
    values = [float(p) for p in parts] + [0.0] * (3 - len(parts))
    total = sum(values)
    if total <= 0:
        raise ConfigError(f"bad split {split!r}: the proportions sum to zero")
    return [v / total for v in values]


def _as_list(value: object) -> list | None:
    if value is None:
        return None
    return [value] if isinstance(value, str) else list(value)  # type: ignore[call-overload]


def split_paths(data: DataConfig, which: str) -> tuple[list[str], list[str] | None, list[float]]:
    """``<which>_data_paths`` with their ``_label_data_paths`` and ``_data_weights`` (which is
    train, valid or test): (data prefixes, label prefixes or None, weights, default equal)."""
    paths = _as_list(getattr(data, f"{which}_data_paths")) or []
    labels = _as_list(getattr(data, f"{which}_label_data_paths"))
    weights = _as_list(getattr(data, f"{which}_data_weights"))
    if weights is None:
        weights = [1.0] * len(paths)
    if len(weights) != len(paths):
        raise ConfigError(
            f"{which}_data_weights has {len(weights)} entries but {which}_data_paths has "
            f"{len(paths)} ({paths}): give one weight per path"
        )
    if labels is not None and len(labels) != len(paths):
        raise ConfigError(
            f"{which}_label_data_paths has {len(labels)} entries but {which}_data_paths has "
            f"{len(paths)} ({paths}): give one label dataset per data path"
        )
    return paths, labels, [float(w) for w in weights]
