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

A weights-only checkpoint (``write_weights_checkpoint``: converted, resharded) has no optimizer
or RNG files and says so in ``megatron_lite.json`` (``weights_only``); ``load`` resumes it with
its iteration and consumed samples but a fresh optimizer.

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
from collections.abc import Iterator
from contextlib import contextmanager
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
    # No optimizer/RNG states (converted or resharded): resuming it starts a fresh optimizer.
    weights_only: bool = False

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
    return int(read_step_config(step_dir, "cannot map its pipeline layer files")["num_layers"])


def read_step_config(step_dir: str, why: str = "cannot tell the model's shape") -> dict[str, Any]:
    """The flat config.yml saved with a step (the run's resolved config)."""
    import yaml

    path = os.path.join(step_dir, CONFIG_FILE)
    if not os.path.isfile(path):
        raise CheckpointError(f"{step_dir} has no {CONFIG_FILE}: {why}")
    with open(path, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


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
    pipe_parallel_size: int = 0,
    consumed_train_samples: int = 0,
) -> str:
    """A weights-only checkpoint in the layout the trainer writes for this tp/pp (mp_rank files
    for pipe_parallel_size 0, pipeline layer files otherwise), which ``finetune``, ``load_model``
    and a resuming ``load`` read; written to a temporary directory and renamed, then ``latest``
    moved atomically."""
    step = os.path.join(save_dir, step_dir_name(iteration))
    with replace_dir_when_done(step) as tmp:
        for rank in range(model_parallel_size):
            shard = shard_state_dict(full, model_parallel_size, rank, glu)
            if pipe_parallel_size >= 1:
                _write_layer_files(shard, tmp, rank)
            else:
                torch.save({"module": shard, "mp_world_size": model_parallel_size, "iteration": iteration},
                           os.path.join(tmp, f"mp_rank_{rank:02d}_model_states.pt"))
        meta = CheckpointMeta(iteration, consumed_train_samples, model_parallel_size, pipe_parallel_size,
                              vocab_size=vocab_size, weights_only=True)
        finish_step_dir(tmp, config_yaml, tokenizer_files, meta)
    write_latest(save_dir, iteration)
    return step


def _write_layer_files(shard: dict[str, torch.Tensor], step_dir: str, tp_rank: int) -> None:
    """One tp rank's weights as DeepSpeed's PipelineModule saves them: a file per layer index,
    keys relative to the layer. File names carry no stage, so they fit any pipeline size; a
    tied head has no file (it is the embedding)."""
    num_layers = 1 + max(int(m[1]) for key in shard if (m := re.match(r"layers\.(\d+)\.", key)))
    for index in range(num_layers + 3):
        prefix = pipeline_index_to_prefix(index, num_layers)
        part = {key[len(prefix):]: value for key, value in shard.items() if key.startswith(prefix)}
        if part:
            torch.save(part, os.path.join(step_dir, f"layer_{index:02d}-model_{tp_rank:02d}-model_states.pt"))


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


def check_output_outside(input_dir: str, output_dir: str) -> None:
    """A tool's output replaces whatever is at ``output_dir``: never the input, nor a directory
    inside it or around it."""
    src, dst = os.path.realpath(input_dir), os.path.realpath(output_dir)
    if dst == src or src.startswith(dst + os.sep) or dst.startswith(src + os.sep):
        raise ValueError(f"--output_dir {output_dir} must lie outside --input_dir {input_dir}")


@contextmanager
def replace_dir_when_done(output_dir: str) -> Iterator[str]:
    """Yield ``<output_dir>.tmp`` to write into; on success it replaces ``output_dir``, on any
    failure it is removed: a reader never sees a half-written output."""
    tmp = output_dir.rstrip("/") + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if os.path.exists(output_dir):
        shutil.rmtree(output_dir)
    os.replace(tmp, output_dir)
