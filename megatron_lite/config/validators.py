"""Validators of single keys: one function (or table row) per key, used by the pre-launch check
(``derived.resolve``) and, for data keys, by the data layer itself at run time, so the two can
never disagree (``split: "969/30/1"`` is accepted by both, as GPT-NeoX accepts it)."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from megatron_lite.config.loader import ConfigError, short
from megatron_lite.config.schema import Config, DataConfig

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


def _positive(v: Any) -> bool:
    return v > 0


def _non_negative(v: Any) -> bool:
    return v >= 0


def _finite_non_negative(v: Any) -> bool:
    return math.isfinite(v) and v >= 0


def _finite_positive(v: Any) -> bool:
    return math.isfinite(v) and v > 0


# (section, key, check, what it must be); a None value (unset, derived later) is not checked.
_RANGES: tuple[tuple[str, str, Callable[[Any], bool], str], ...] = (
    *(("model", k, _positive, "> 0") for k in (
        "num_layers", "hidden_size", "num_attention_heads", "seq_length", "max_position_embeddings",
        "make_vocab_size_divisible_by", "checkpoint_num_layers", "padded_vocab_size")),
    *(("training", k, _positive, "> 0") for k in (
        "train_iters", "train_epochs", "train_batch_size", "train_micro_batch_size_per_gpu",
        "gradient_accumulation_steps")),
    ("training", "exit_interval", _positive, "> 0"),
    ("launcher", "num_gpus", lambda v: v >= 1, ">= 1"),
    ("launcher", "master_port", lambda v: 1 <= v <= 65535, "a port in 1-65535"),
    ("launcher", "num_nodes", lambda v: v == -1 or v >= 1, "-1 (all) or >= 1"),
    ("launcher", "stop_grace_period", _finite_positive, "finite and > 0 (or unset: no limit)"),
    ("launcher", "rendezvous_timeout", _positive, "> 0"),
    ("optimizer", "gradient_clipping", _finite_non_negative, "finite and >= 0"),
    ("lr_schedule", "min_lr", _finite_non_negative, "finite and >= 0"),
    ("generation", "maximum_tokens", _positive, "> 0"),
    ("generation", "generation_batch_size", _positive, "> 0"),
    ("generation", "num_samples", _positive, "> 0"),
    ("generation", "temperature", _finite_non_negative, "finite and >= 0 (0 = greedy)"),
    ("generation", "top_k", _non_negative, ">= 0 (0 = off)"),
    ("generation", "top_p", lambda v: 0 <= v <= 1, "in (0, 1], or 0 (off)"),
    ("evaluation", "eval_limit", _positive, "> 0"),
    ("evaluation", "eval_batch_size", _positive, "> 0"),
)


def check_ranges(cfg: Config) -> None:
    """Numbers outside their range fail here, before anything divides by them or starts."""
    for section, key, ok, what in _RANGES:
        value = getattr(getattr(cfg, section), key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not ok(value):
            raise ConfigError(f"{key} must be {what}, got {short(value)}")


def check_learning_rate(lr: Any) -> None:
    """The peak learning rate (``optimizer.params.lr`` or ``lr``): a finite number >= 0."""
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not _finite_non_negative(lr):
        raise ConfigError(f"lr (optimizer.params.lr) must be finite and >= 0, got {short(lr)}")

