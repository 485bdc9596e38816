"""The on-disk checkpoint layout, and reading/writing model weights without a DeepSpeed engine.

A checkpoint directory (``save``/``load``) is DeepSpeed's layout plus our metadata:

    <dir>/latest                                   "global_step<N>" (moved last, atomically)
    <dir>/global_step<N>/
        mp_rank_<tp>_model_states.pt               pipe_parallel_size 0: {"module": state dict}
        layer_<idx>-model_<tp>-model_states.pt     pipe_parallel_size >= 1: one per pipeline layer
        *optim_states.pt                           optimizer (DeepSpeed; resume only)
        config.yml                                 the resolved config of the run
        tokenizer/                                 copies of the tokenizer files
        megatron_lite.json                         iteration, consumed samples, layout, format

Weights are read with ``torch.load(weights_only=True)`` only (no arbitrary unpickling), merged
across tensor-parallel shards and pipeline layers into one full ``GPTModel`` state dict (the
tp = 1 names), so any layout loads into any other.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import torch

from megatron_lite.model.pipeline import pipeline_index_to_prefix
from megatron_lite.model.sharding import cut_shard, merge_shards

FORMAT_VERSION = 1
META_FILE = "megatron_lite.json"
CONFIG_FILE = "config.yml"
TOKENIZER_DIR = "tokenizer"
_LAYER_FILE = re.compile(r"^layer_(\d+)-model_(\d+)-model_states\.pt$")
_MP_FILE = re.compile(r"^mp_rank_(\d+)_model_states\.pt$")


class CheckpointError(RuntimeError):
    """A missing, incomplete or inconsistent checkpoint (the message names the path)."""


@dataclass(frozen=True)
class CheckpointMeta:
    iteration: int
    consumed_train_samples: int
    model_parallel_size: int
    pipe_parallel_size: int
    format: int = FORMAT_VERSION
    vocab_size: int | None = None  # the real vocabulary (rows past it are padding)

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=2)


def step_dir_name(iteration: int) -> str:
    return f"global_step{iteration}"


def resolve_step_dir(path: str, iteration: int | None = None) -> str:
    """``path`` itself if it is a step directory, else ``path/<latest or global_step<iteration>>``."""
    if not os.path.isdir(path):
        raise CheckpointError(f"checkpoint directory not found: {path}")
    if os.path.isfile(os.path.join(path, META_FILE)):
        return path
    if iteration is not None:
        step = os.path.join(path, step_dir_name(iteration))
    else:
        latest = os.path.join(path, "latest")
        if not os.path.isfile(latest):
            raise CheckpointError(f"{path} holds no checkpoint (no 'latest' file, no {META_FILE})")
        with open(latest, encoding="utf-8") as handle:
            step = os.path.join(path, handle.read().strip())
    if not os.path.isfile(os.path.join(step, META_FILE)):
        raise CheckpointError(f"incomplete or missing checkpoint: {step} has no {META_FILE}")
    return step


def read_meta(step_dir: str) -> CheckpointMeta:
    with open(os.path.join(step_dir, META_FILE), encoding="utf-8") as handle:
        return CheckpointMeta(**json.load(handle))


def _load(path: str) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def read_full_state_dict(step_dir: str, glu: bool) -> dict[str, torch.Tensor]:
    """All weights as one tp = 1 ``GPTModel`` state dict, whatever the saved layout."""
    shards: dict[str, dict[int, torch.Tensor]] = defaultdict(dict)
    files = os.listdir(step_dir)
    layer_files = [(f, _LAYER_FILE.match(f)) for f in files if _LAYER_FILE.match(f)]
    if layer_files:
        num_layers = read_num_layers(step_dir)
        for name, match in layer_files:
            index, tp_rank = int(match[1]), int(match[2])
            prefix = pipeline_index_to_prefix(index, num_layers)
            for key, tensor in _load(os.path.join(step_dir, name)).items():
                shards[prefix + key][tp_rank] = tensor
    else:
        for name in files:
            match = _MP_FILE.match(name)
            if match is None:
                continue
            module = _load(os.path.join(step_dir, name)).get("module")
            if module is None:
                continue
            for key, tensor in module.items():
                shards[key][int(match[1])] = tensor
    if not shards:
        raise CheckpointError(f"no model weights found in {step_dir}")
    _check_complete(step_dir, shards)
    return {key: merge_shards(key, [by_rank[r] for r in sorted(by_rank)], glu=glu)
            for key, by_rank in shards.items()}


def _check_complete(step_dir: str, shards: dict[str, dict[int, torch.Tensor]]) -> None:
    """Every tensor-parallel rank's file must be there: merging a partial set would silently
    give half-size tensors."""
    expected = read_meta(step_dir).model_parallel_size if os.path.isfile(
        os.path.join(step_dir, META_FILE)) else max(max(r) for r in shards.values()) + 1
    for key, by_rank in shards.items():
        if sorted(by_rank) != list(range(expected)):
            missing = sorted(set(range(expected)) - set(by_rank))
            raise CheckpointError(
                f"{step_dir} is incomplete: {key} lacks tensor-parallel rank(s) {missing} "
                f"of {expected}")


def read_num_layers(step_dir: str) -> int:
    """num_layers from the checkpoint's config.yml (needed to name pipeline layer files)."""
    import yaml

    path = os.path.join(step_dir, CONFIG_FILE)
    if not os.path.isfile(path):
        raise CheckpointError(f"{step_dir} has no {CONFIG_FILE}: cannot map its pipeline layer files")
    with open(path, encoding="utf-8") as handle:
        return int(yaml.safe_load(handle)["num_layers"])


def shard_state_dict(full: dict[str, torch.Tensor], tp: int, tp_rank: int, glu: bool) -> dict[str, torch.Tensor]:
    """One tensor-parallel rank's share of a full state dict."""
    return {key: cut_shard(key, value, tp, tp_rank, glu=glu) for key, value in full.items()}


def write_weights_checkpoint(
    full: dict[str, torch.Tensor],
    save_dir: str,
    config_yaml: str,
    model_parallel_size: int,
    glu: bool,
    iteration: int = 0,
    tokenizer_files: list[str] | None = None,
    vocab_size: int | None = None,
) -> str:
    """A weights-only checkpoint (pipe_parallel_size 0 layout) that ``finetune``/``load_model``
    read; written to a temporary directory and renamed, then ``latest`` moved atomically."""
    step = os.path.join(save_dir, step_dir_name(iteration))
    tmp = step + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    for rank in range(model_parallel_size):
        shard = shard_state_dict(full, model_parallel_size, rank, glu)
        torch.save({"module": shard, "mp_world_size": model_parallel_size, "iteration": iteration},
                   os.path.join(tmp, f"mp_rank_{rank:02d}_model_states.pt"))
    finish_step_dir(tmp, config_yaml, tokenizer_files,
                    CheckpointMeta(iteration, 0, model_parallel_size, 0, vocab_size=vocab_size))
    if os.path.exists(step):
        shutil.rmtree(step)
    os.replace(tmp, step)
    write_latest(save_dir, iteration)
    return step


def finish_step_dir(step_dir: str, config_yaml: str, tokenizer_files: list[str] | None,
                    meta: CheckpointMeta) -> None:
    """Config, tokenizer copies, then the metadata file last: its presence marks completeness."""
    with open(os.path.join(step_dir, CONFIG_FILE), "w", encoding="utf-8") as handle:
        handle.write(config_yaml)
    if tokenizer_files:
        os.makedirs(os.path.join(step_dir, TOKENIZER_DIR), exist_ok=True)
        for path in tokenizer_files:
            shutil.copy2(path, os.path.join(step_dir, TOKENIZER_DIR, os.path.basename(path)))
    tmp = os.path.join(step_dir, META_FILE + ".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(meta.to_json())
    os.replace(tmp, os.path.join(step_dir, META_FILE))


def write_latest(save_dir: str, iteration: int) -> None:
    """Point ``latest`` at a finished step, atomically (write + rename, never a partial file)."""
    tmp = os.path.join(save_dir, "latest.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(step_dir_name(iteration))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, os.path.join(save_dir, "latest"))
