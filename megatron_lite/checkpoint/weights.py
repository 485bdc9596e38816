"""Model weights on disk, without a DeepSpeed engine: read any layout as one full state dict,
write a weights-only checkpoint for any layout, fit the vocabulary rows.

Weights are read with ``torch.load(weights_only=True)`` only (no arbitrary unpickling), merged
across tensor-parallel shards and pipeline layer files into one full ``GPTModel`` state dict
(the tp = 1 names), so any layout loads into any other.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from typing import Any

import torch

from megatron_lite.checkpoint.layout import (
    META_FILE,
    CheckpointError,
    CheckpointMeta,
    finish_step_dir,
    read_meta,
    read_num_layers,
    replace_dir_when_done,
    step_dir_name,
    write_latest,
)
from megatron_lite.checkpoint.safe_load import safe_torch_load
from megatron_lite.checkpoint.sharding import cut_shard, merge_shards
from megatron_lite.model.pipeline import pipeline_index_to_prefix
from megatron_lite.utils.files import fsync_tree

_LAYER_FILE = re.compile(r"^layer_(\d+)-model_(\d+)-model_states\.pt$")
_MP_FILE = re.compile(r"^mp_rank_(\d+)_model_states\.pt$")
_VOCAB_ROWS = ("embedding.word_embeddings.weight", "lm_head.embed_out.weight")


def _load(path: str) -> dict[str, Any]:
    return safe_torch_load(path)


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
        fsync_tree(tmp)  # the weights are on disk before the completeness mark and `latest`
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


def fit_vocab_rows(full: dict[str, torch.Tensor], rows: int) -> dict[str, torch.Tensor]:
    """Re-pad the embedding and head to ``rows`` (padding depends on the tp size; the extra
    rows are never a real token's, so they are added as zeros or dropped)."""
    out = dict(full)
    for key in _VOCAB_ROWS:
        if key in out and out[key].shape[0] != rows:
            t = out[key]
            out[key] = t[:rows] if t.shape[0] > rows else torch.cat([t, t.new_zeros(rows - t.shape[0], t.shape[1])])
    return out


def pipeline_key_to_model(key: str, num_layers: int) -> str:
    """PipelineModule state-dict key ('3.mlp...' / 'tied_modules.embed...') -> GPTModel key."""
    if key.startswith("tied_modules.embed."):
        return "embedding." + key[len("tied_modules.embed."):]
    index, rest = key.split(".", 1)
    return pipeline_index_to_prefix(int(index), num_layers) + rest
