"""The ``lora`` key, checked and put in one canonical form (issue #20: LoRA fine-tuning).

    lora: {rank: 8, alpha: 16, dropout: 0.05, targets: [query_key_value, dense, dense_h_to_4h, dense_4h_to_h]}

``targets`` name layers by GPT-NeoX's module names (the same names for every architecture we
build: Llama's q/k/v/o/up/gate/down projections are these four fused layers). ``base`` is where
the frozen weights come from: unset, the run's ``load`` (with ``finetune: true``); every LoRA
checkpoint records it (pinned to one step directory), so a resumed run, ``load_model`` and
``tools/merge_lora.py`` find the same base (docs/cli.md#lora-low-rank-adapters).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from megatron_lite.config.loader import ConfigError
from megatron_lite.config.schema import Config

# Layer name -> how the layer is split across tensor-parallel ranks.
LORA_TARGETS = {"query_key_value": "column", "dense": "row", "dense_h_to_4h": "column", "dense_4h_to_h": "row"}
_DEFAULTS: dict[str, Any] = {"rank": 8, "alpha": 16.0, "dropout": 0.0, "targets": list(LORA_TARGETS), "base": None}


@dataclass(frozen=True)
class LoraSettings:
    """What the model needs of the ``lora`` key: adapters ``B A`` of rank ``rank`` on the
    ``targets`` layers, added as ``(alpha / rank) * B A x``, with dropout on their input."""

    rank: int
    alpha: float
    dropout: float
    targets: tuple[str, ...]

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank

    @classmethod
    def of(cls, lora: dict[str, Any]) -> LoraSettings:
        """From a canonical ``lora`` dict (``canonical_lora``)."""
        return cls(int(lora["rank"]), float(lora["alpha"]), float(lora["dropout"]), tuple(lora["targets"]))


def _number(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"lora.{key} must be a finite number, got {value!r}")
    return float(value)


def canonical_lora(value: dict[str, Any] | None) -> dict[str, Any] | None:
    """``{rank, alpha, dropout, targets, base}`` with defaults filled in, or None when unset.
    Every problem is one ConfigError naming the key and what is allowed."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ConfigError(f"lora must be a mapping {{rank, alpha, dropout, targets}}, got {value!r}")
    unknown = sorted(set(value) - set(_DEFAULTS))
    if unknown:
        raise ConfigError(f"lora.{unknown[0]} is not a LoRA key: the keys are {', '.join(_DEFAULTS)}")
    out = {**_DEFAULTS, **value}
    rank = out["rank"]
    if isinstance(rank, bool) or not isinstance(rank, int) or rank <= 0:
        raise ConfigError(f"lora.rank must be an integer > 0, got {rank!r}")
    if _number("alpha", out["alpha"]) <= 0:
        raise ConfigError(f"lora.alpha must be > 0, got {out['alpha']!r}")
    if not 0.0 <= _number("dropout", out["dropout"]) < 1.0:
        raise ConfigError(f"lora.dropout must be in [0, 1), got {out['dropout']!r}")
    targets = out["targets"]
    if isinstance(targets, str):
        targets = [targets]
    if not isinstance(targets, list) or not targets:
        raise ConfigError(f"lora.targets must be a non-empty list of layer names ({', '.join(LORA_TARGETS)})")
    for name in targets:
        if name not in LORA_TARGETS:
            raise ConfigError(f"lora.targets: {name!r} names no layer; the layers are {', '.join(LORA_TARGETS)}")
    if out["base"] is not None and not isinstance(out["base"], str):
        raise ConfigError(f"lora.base must be a checkpoint or Hugging Face directory, got {out['base']!r}")
    # Duplicates dropped, in the layers' order: two spellings of one choice compare equal.
    return {**out, "rank": rank, "alpha": float(out["alpha"]), "dropout": float(out["dropout"]),
            "targets": [name for name in LORA_TARGETS if name in targets]}


def derive_lora(cfg: Config) -> Config:
    """``resolve``'s step for the ``lora`` key: canonical, or an error naming the key."""
    pt = cfg.post_training
    return replace(cfg, post_training=replace(pt, lora=canonical_lora(pt.lora)))


def with_lora_base(cfg: Config, base: str | None) -> Config:
    """``cfg`` with ``lora.base`` set to ``base`` (what each LoRA checkpoint records)."""
    pt = cfg.post_training
    if pt.lora is None:
        return cfg
    return replace(cfg, post_training=replace(pt, lora={**pt.lora, "base": base}))
