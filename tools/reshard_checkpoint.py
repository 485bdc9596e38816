#!/usr/bin/env python
"""Rewrite a megatron_lite checkpoint for another tensor/pipeline-parallel layout.

    python tools/reshard_checkpoint.py --input_dir ckpt --output_dir ckpt_tp4 \\
        --model_parallel_size 4 --pipe_parallel_size 0 [--iteration N]

Reads any layout (tensor-parallel shards and pipeline layer files merged into the full model)
and writes ``<output_dir>/latest`` and ``<output_dir>/global_step<N>/`` in the layout the
trainer writes for the new sizes (``mp_rank_XX_model_states.pt`` for pipe_parallel_size 0,
``layer_XX-model_YY-model_states.pt`` for a pipeline), with config.yml (new layout, ``load`` and
``save`` = the output), the tokenizer copies, and the iteration and consumed samples kept.
Optimizer states cannot follow a change of layout: the result is marked weights-only, and a
run with ``load`` at it resumes at that iteration with a fresh optimizer (logged as a warning).
The output is written as ``<output_dir>.tmp`` and renamed when complete.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from megatron_lite.checkpoint.layout import (
    CONFIG_FILE,
    TOKENIZER_DIR,
    CheckpointError,
    CheckpointMeta,
    check_output_dir,
    read_meta,
    read_step_config,
    replace_dir_when_done,
    resolve_step_dir,
    step_dir_name,
)
from megatron_lite.checkpoint.loader import load_weights
from megatron_lite.checkpoint.weights import fit_vocab_rows, write_weights_checkpoint
from megatron_lite.config import ConfigError, config_from_flat, dump_yaml, pad_vocab_size
from megatron_lite.config.derived import GLU_ACTIVATIONS, pipe_stages, resolve
from megatron_lite.config.schema import Config
from megatron_lite.utils.cli import run_reporting_errors

# Values derived from the old run's world size: re-derived for the new layout.
_WORLD_DERIVED = ("global_num_gpus", "data_parallel_size", "padded_vocab_size")


def new_config(flat: dict[str, Any], meta: CheckpointMeta, output_dir: str, tp: int, pp: int) -> Config:
    """The checkpoint's config for the new layout, resolved (and so validated: heads and kv
    heads divisible by tp, ...) for the same data-parallel size as the saved run."""
    # `load` now means "resume from here": not a fine-tuning source, nor a step of the old run.
    # A LoRA checkpoint is written merged (full weights): no adapters, no base.
    out = {**flat, "model_parallel_size": tp, "pipe_parallel_size": pp, "finetune": False, "iteration": None,
           "load": os.path.abspath(output_dir), "save": os.path.abspath(output_dir), "lora": None}
    for key in _WORLD_DERIVED:
        out[key] = None
    dp = int(flat.get("data_parallel_size") or 1)
    world = tp * pipe_stages(pp) * dp
    if flat.get("num_gpus") is not None and flat.get("num_gpus") == flat.get("global_num_gpus"):
        out["num_gpus"] = world  # a one-node run: the same run on the new layout
    cfg = resolve(config_from_flat(out, source=CONFIG_FILE), world)
    if cfg.model.padded_vocab_size is None:
        # The tokenizer files are gone: pad the recorded vocabulary as the tokenizer would be.
        rows = meta.vocab_size or int(flat["padded_vocab_size"])
        out["padded_vocab_size"] = pad_vocab_size(rows, cfg.model.make_vocab_size_divisible_by, tp)
        cfg = resolve(config_from_flat(out, source=CONFIG_FILE), world)
    return cfg


def check_layout(cfg: Config, meta: CheckpointMeta, pp: int) -> None:
    """What resolve() cannot see: pipeline stages vs layers, and the vocabulary vs padding."""
    m = cfg.model
    if pp > m.num_layers:
        raise ValueError(f"pipe_parallel_size ({pp}) exceeds num_layers ({m.num_layers}): every "
                         "pipeline stage needs at least one transformer layer")
    if meta.vocab_size and m.padded_vocab_size < meta.vocab_size:
        raise ValueError(
            f"the model's vocabulary ({meta.vocab_size} rows) does not fit padded_vocab_size "
            f"{m.padded_vocab_size} for model_parallel_size {cfg.parallel.model_parallel_size}: "
            "raise make_vocab_size_divisible_by in the checkpoint's config.yml")


def reshard(input_dir: str, output_dir: str, tp: int, pp: int, iteration: int | None = None,
            force: bool = False) -> str:
    """Write the resharded checkpoint; returns its step directory (under ``output_dir``)."""
    step = resolve_step_dir(input_dir, iteration)
    check_output_dir(input_dir, output_dir, force)
    meta, flat = read_meta(step), read_step_config(step)
    cfg = new_config(flat, meta, output_dir, tp, pp)
    check_layout(cfg, meta, pp)  # everything validated before anything is read or written
    glu = cfg.model.activation in GLU_ACTIVATIONS
    # Rows past the real vocabulary are padding, whose count depends on tp: re-pad. A LoRA
    # step's weights are its base with the adapters merged in (load_weights).
    full = fit_vocab_rows(load_weights(step)[1], cfg.model.padded_vocab_size)
    tok_dir = os.path.join(step, TOKENIZER_DIR)
    tokenizer_files = sorted(os.path.join(tok_dir, f) for f in os.listdir(tok_dir)) if os.path.isdir(tok_dir) else None
    with replace_dir_when_done(output_dir) as tmp:
        write_weights_checkpoint(full, tmp, dump_yaml(cfg), tp, glu, iteration=meta.iteration,
                                 tokenizer_files=tokenizer_files, vocab_size=meta.vocab_size,
                                 pipe_parallel_size=pp, consumed_train_samples=meta.consumed_train_samples)
    return os.path.join(output_dir, step_dir_name(meta.iteration))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="reshard_checkpoint.py", description=__doc__.split("\n\n")[0],
                                epilog="example: python tools/reshard_checkpoint.py --input_dir checkpoints "
                                       "--output_dir ckpt_tp1 --model_parallel_size 1 --pipe_parallel_size 0")
    p.add_argument("--input_dir", required=True, help="checkpoint directory (save/load) or one global_step<N> dir")
    p.add_argument("--output_dir", required=True, help="checkpoint directory to write (must be new or empty)")
    p.add_argument("--model_parallel_size", type=int, required=True, help="new tensor-parallel size (>= 1)")
    p.add_argument("--pipe_parallel_size", type=int, required=True,
                   help="new pipeline size (0: no pipeline module, >= 1: pipeline layer files)")
    p.add_argument("--iteration", type=int, default=None, help="step to reshard (default: latest)")
    p.add_argument("--force", action="store_true", help="replace an existing, non-empty --output_dir")
    args = p.parse_args(argv)
    if args.model_parallel_size < 1:
        p.error(f"--model_parallel_size must be >= 1, got {args.model_parallel_size}")
    if args.pipe_parallel_size < 0:
        p.error(f"--pipe_parallel_size must be >= 0, got {args.pipe_parallel_size}")
    ok, step = run_reporting_errors(
        "reshard_checkpoint.py", "the checkpoint's config",
        lambda: reshard(args.input_dir, args.output_dir, args.model_parallel_size, args.pipe_parallel_size,
                        args.iteration, args.force),
        (CheckpointError, ConfigError))
    if not ok:
        return 1
    meta = read_meta(step)
    print(f"wrote {step}: model_parallel_size {meta.model_parallel_size}, pipe_parallel_size "
          f"{meta.pipe_parallel_size}, iteration {meta.iteration}, {meta.consumed_train_samples} samples "
          "consumed; weights only (a run with `load` here resumes with a fresh optimizer)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
