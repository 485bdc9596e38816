"""Configuration: typed frozen groups, GPT-NeoX YAML loading, derived values, DeepSpeed JSON.

    cfg = load_config(["125M.yml", "local_setup.yml"], config_dir="configs", world_size=8)
    cfg.model.hidden_size, cfg.training.train_batch_size, cfg.parallel.data_parallel_size
"""

from __future__ import annotations

from typing import Any

from megatron_lite.config.derived import pad_vocab_size, pipe_stages, resolve
from megatron_lite.config.loader import (
    ConfigError,
    build_config,
    config_from_flat,
    dump_yaml,
    merge_files,
    resolve_config_paths,
)
from megatron_lite.config.schema import Config
from megatron_lite.utils.logging import get_logger

logger = get_logger(__name__)

__all__ = [
    "Config",
    "ConfigError",
    "config_from_flat",
    "dump_yaml",
    "layout_world_size",
    "load_config",
    "load_unresolved",
    "load_resolved",
    "pad_vocab_size",
    "pipe_stages",
    "resolve",
]


def load_unresolved(
    names: list[str], config_dir: str | None = None, overrides: dict[str, Any] | None = None
) -> Config:
    """Merge YAML files (left to right, then ``overrides``) into a typed, not yet derived config
    (the launcher reads its ``launcher`` section to find the world size)."""
    raw = merge_files(resolve_config_paths(names, config_dir), overrides)
    if raw.ignored:
        logger.info(
            "GPT-NeoX keys accepted but not needed by megatron_lite (ignored): %s",
            ", ".join(sorted(raw.ignored)),
        )
    return build_config(raw)


def load_config(
    names: list[str],
    config_dir: str | None = None,
    overrides: dict[str, Any] | None = None,
    *,
    world_size: int,
) -> Config:
    """Merge YAML files (left to right, then ``overrides``), derive for ``world_size`` ranks and
    validate. The caller knows the world (deepy.py: from hostfile / num_gpus)."""
    return resolve(load_unresolved(names, config_dir, overrides), world_size)


def layout_world_size(names: list[str], config_dir: str | None = None) -> int:
    """tp x pipeline stages of the merged files: the smallest world their layout fits."""
    values = merge_files(resolve_config_paths(names, config_dir)).values
    tp = int(values.get("model_parallel_size", 1))
    return tp * pipe_stages(int(values.get("pipe_parallel_size", 0)))


def load_resolved(path: str, world_size: int) -> Config:
    """A resolved YAML written by deepy.py, re-derived for the actual world size."""
    raw = merge_files([path])
    return resolve(build_config(raw), world_size)
