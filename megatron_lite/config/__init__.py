"""Configuration: typed frozen groups, GPT-NeoX YAML loading, derived values, DeepSpeed JSON.

    cfg = load_config(["125M.yml", "local_setup.yml"], config_dir="configs")
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
    "load_resolved",
    "pad_vocab_size",
    "pipe_stages",
]


def load_config(
    names: list[str],
    config_dir: str | None = None,
    overrides: dict[str, Any] | None = None,
    world_size: int | None = None,
) -> Config:
    """Merge YAML files (left to right, then ``overrides``), derive and validate.

    ``world_size`` defaults to what the launcher settings (hostfile, num_nodes, num_gpus) give.
    """
    from megatron_lite.launcher.resources import HostfileError, plan_world

    raw = merge_files(resolve_config_paths(names, config_dir), overrides)
    if raw.ignored:
        logger.info(
            "GPT-NeoX keys accepted but not needed by megatron_lite (ignored): %s",
            ", ".join(sorted(raw.ignored)),
        )
    cfg = build_config(raw)
    if world_size is None and cfg.parallel.global_num_gpus is not None:
        world_size = cfg.parallel.global_num_gpus
    if world_size is None:
        la = cfg.launcher
        try:
            _, world_size = plan_world(la.hostfile, la.num_nodes, la.num_gpus, la.include, la.exclude)
        except (HostfileError, OSError) as exc:
            raise ConfigError(str(exc)) from None
    return resolve(cfg, world_size)


def layout_world_size(names: list[str], config_dir: str | None = None) -> int:
    """tp x pipeline stages of the merged files: the smallest world their layout fits."""
    values = merge_files(resolve_config_paths(names, config_dir)).values
    tp = int(values.get("model_parallel_size", 1))
    return tp * pipe_stages(int(values.get("pipe_parallel_size", 0)))


def load_resolved(path: str, world_size: int) -> Config:
    """A resolved YAML written by deepy.py, re-derived for the actual world size."""
    raw = merge_files([path])
    return resolve(build_config(raw), world_size)
