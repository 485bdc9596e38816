"""Saving and loading training checkpoints through the DeepSpeed engine, crash-safely.

Save: every rank writes its part into ``global_step<N>/`` (DeepSpeed), then its own RNG state;
after a barrier, rank 0 writes config, tokenizer copies and ``megatron_lite.json`` (the
completeness mark), and only then moves ``latest`` (atomically). A crash at any point leaves
``latest`` on the previous complete step. DeepSpeed's own ``latest`` is not used: it is
written before DeepSpeed's final barrier, with a plain write.

Resume (``load``): weights, optimizer, LR schedule (DeepSpeed), RNG states and consumed
samples (ours). A weights-only checkpoint (resharded or converted: no optimizer states for any
layout) resumes its weights (any layout), iteration, consumed samples and LR schedule position,
with a fresh optimizer. Fine-tune (``finetune: true``): weights only, read with
``torch.load(weights_only=True)`` from any layout, iteration 0, fresh optimizer.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from typing import Any

import torch
import torch.distributed as dist

from megatron_lite.config import Config, dump_yaml
from megatron_lite.model.pipeline import pipeline_index_to_prefix
from megatron_lite.parallel.random import get_rng_tracker
from megatron_lite.training.checkpoint_format import (
    CheckpointError,
    CheckpointMeta,
    finish_step_dir,
    read_meta,
    resolve_step_dir,
    shard_state_dict,
    step_dir_name,
    write_latest,
)
from megatron_lite.utils.logging import get_logger

logger = get_logger(__name__)
_STEP = re.compile(r"^global_step(\d+)$")


def _rng_file(step_dir: str, rank: int) -> str:
    return os.path.join(step_dir, f"rng_state_rank{rank}.pt")


def save_checkpoint(engine: Any, cfg: Config, iteration: int, consumed_samples: int,
                    tokenizer_files: list[str], vocab_size: int | None = None) -> str:
    """Save step ``iteration`` to ``cfg.checkpoint.save`` (collective: every rank calls it)."""
    save_dir = cfg.checkpoint.save
    tag = step_dir_name(iteration)
    step_dir = os.path.join(save_dir, tag)
    engine.save_checkpoint(save_dir, tag=tag, save_latest=False,
                           client_state={"iteration": iteration, "consumed_train_samples": consumed_samples})
    tracker = get_rng_tracker().snapshot()
    rng = {"torch": torch.get_rng_state(), "tracker": tracker[0]}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state()
        rng["tracker_cuda"] = tracker[1]
    torch.save(rng, _rng_file(step_dir, dist.get_rank()))
    _fault_injection_pause()
    dist.barrier()
    if dist.get_rank() == 0:
        meta = CheckpointMeta(iteration, consumed_samples, cfg.parallel.model_parallel_size,
                              cfg.parallel.pipe_parallel_size, vocab_size=vocab_size)
        finish_step_dir(step_dir, dump_yaml(cfg), tokenizer_files, meta)
        write_latest(save_dir, iteration)
        _rotate(save_dir, cfg.checkpoint.keep_last_n_checkpoints, keep=tag)
        logger.info("saved checkpoint %s", step_dir)
    dist.barrier()
    return step_dir


def _fault_injection_pause() -> None:
    """Tests set MEGATRON_LITE_TEST_SAVE_PAUSE=seconds to kill a run between DeepSpeed's files
    and the completeness mark, the window a crash-safe save must survive."""
    pause = float(os.environ.get("MEGATRON_LITE_TEST_SAVE_PAUSE", "0"))
    if pause > 0:
        time.sleep(pause)


def _rotate(save_dir: str, keep_last: int | None, keep: str) -> None:
    """Delete the oldest complete steps beyond ``keep_last`` (never the one just written)."""
    if not keep_last:
        return
    steps = sorted((int(m[1]), name) for name in os.listdir(save_dir) if (m := _STEP.match(name)))
    for _, name in steps[:-keep_last]:
        if name != keep:
            shutil.rmtree(os.path.join(save_dir, name), ignore_errors=True)


def resumes_weights_only(cfg: Config) -> bool:
    """True when ``load`` (not fine-tuning) points at a weights-only checkpoint: its weights
    must then go into the module before DeepSpeed wraps it, as for ``finetune``."""
    ck = cfg.checkpoint
    if not ck.load or ck.finetune:
        return False
    try:
        return read_meta(resolve_step_dir(ck.load, ck.iteration)).weights_only
    except CheckpointError:
        return False  # nothing to resume, or an error load_for_resume reports


def load_for_resume(engine: Any, cfg: Config) -> tuple[int, int]:
    """Resume from ``load``: returns (iteration, consumed samples); (0, 0) when nothing to load."""
    ck = cfg.checkpoint
    try:
        step_dir = resolve_step_dir(ck.load, ck.iteration)
    except CheckpointError as exc:
        if ck.iteration is None and (not os.path.isdir(ck.load) or "no 'latest'" in str(exc)):
            logger.info("no checkpoint in %s: starting from scratch", ck.load)
            return 0, 0
        raise
    meta = read_meta(step_dir)
    if meta.weights_only:
        return _resume_weights_only(engine, step_dir, meta)
    layout = (cfg.parallel.model_parallel_size, cfg.parallel.pipe_parallel_size)
    if (meta.model_parallel_size, meta.pipe_parallel_size) != layout:
        raise CheckpointError(
            f"{step_dir} was saved with model_parallel_size={meta.model_parallel_size}, "
            f"pipe_parallel_size={meta.pipe_parallel_size}; this run uses {layout[0]}, {layout[1]}. "
            "Reshard it (tools/reshard_checkpoint.py) or load weights only with finetune: true"
        )
    load_dir, tag = os.path.dirname(os.path.abspath(step_dir)), os.path.basename(step_dir)
    _, client = engine.load_checkpoint(
        load_dir, tag=tag, load_optimizer_states=not ck.no_load_optim,
        load_lr_scheduler_states=not ck.no_load_optim,
    )
    if client is None:
        raise CheckpointError(f"DeepSpeed could not load {step_dir}")
    if not ck.no_load_rng:
        _restore_rng(step_dir)
    logger.info("resumed from %s (iteration %d)", step_dir, meta.iteration)
    return int(client["iteration"]), int(client["consumed_train_samples"])


def _resume_weights_only(engine: Any, step_dir: str, meta: CheckpointMeta) -> tuple[int, int]:
    """The weights are already in (``load_model_weights``); carry on the iteration count, the
    data position and the LR schedule (a function of the iteration), not the optimizer."""
    logger.warning(
        "%s holds weights only (resharded or converted): resuming at iteration %d (%d samples "
        "consumed) with a FRESH optimizer state (Adam moments restart from zero) and fresh RNG "
        "states; the LR schedule continues from iteration %d", step_dir, meta.iteration,
        meta.consumed_train_samples, meta.iteration)
    if engine.lr_scheduler is not None:
        engine.lr_scheduler.step(meta.iteration)
    return meta.iteration, meta.consumed_train_samples


def _restore_rng(step_dir: str) -> None:
    path = _rng_file(step_dir, dist.get_rank())
    if not os.path.isfile(path):
        logger.warning("%s missing: RNG states not restored (world size changed?)", path)
        return
    rng = torch.load(path, weights_only=True)
    torch.set_rng_state(rng["torch"])
    if torch.cuda.is_available() and "cuda" in rng:
        torch.cuda.set_rng_state(rng["cuda"])
    get_rng_tracker().restore((rng["tracker"], rng.get("tracker_cuda", {})))


def load_model_weights(module: torch.nn.Module, cfg: Config, tp_rank: int, pipelined: bool) -> None:
    """Weights only, from ``load`` (our checkpoint of any layout, or a Hugging Face GPTNeoX
    directory), into this rank's (tensor/pipeline) part of the model."""
    from megatron_lite.api import load_weights
    from megatron_lite.model.hf_interop import (
        is_hf_dir,
        model_keys_from_hf,
        read_hf_dir,
        state_dict_from_hf,
    )

    source = cfg.checkpoint.load
    glu = cfg.model.activation in ("swiglu", "geglu")
    if is_hf_dir(source):
        hf_config, weights = read_hf_dir(source)
        _check_same_architecture(source, model_keys_from_hf(hf_config), cfg)
        full = state_dict_from_hf(weights, cfg.model.padded_vocab_size, tied=not cfg.model.no_weight_tying)
    else:
        _, full, _, _ = load_weights(source, cfg.checkpoint.iteration)
        full = fit_vocab_rows(full, cfg.model.padded_vocab_size)
    shard = shard_state_dict(full, cfg.parallel.model_parallel_size, tp_rank, glu)
    own = module.state_dict()
    names = {key: _pipeline_key_to_model(key, cfg.model.num_layers) if pipelined else key for key in own}
    missing = [name for name in names.values() if name not in shard]
    if missing:
        raise CheckpointError(f"{source} lacks weights for {', '.join(missing[:5])}")
    for key, name in names.items():
        if shard[name].shape != own[key].shape:
            raise CheckpointError(
                f"{source}: {name} has shape {tuple(shard[name].shape)}, the model expects "
                f"{tuple(own[key].shape)} (a different model shape in the config?)")
    module.load_state_dict({key: shard[name] for key, name in names.items()}, strict=True)
    logger.info("loaded model weights from %s", source)


_ARCHITECTURE_KEYS = ("num_layers", "hidden_size", "num_attention_heads", "intermediate_size",
                      "pos_emb", "rotary_pct", "rotary_emb_base", "gpt_j_residual", "no_weight_tying",
                      "activation", "norm")


def _check_same_architecture(source: str, hf_keys: dict[str, Any], cfg: Config) -> None:
    """Weights of matching shapes can still belong to another architecture (rotary fraction,
    residual style, activation): compare with the Hugging Face config.json first."""
    differ = [f"{k}: config {getattr(cfg.model, k)!r}, {source} {hf_keys[k]!r}"
              for k in _ARCHITECTURE_KEYS if k in hf_keys and getattr(cfg.model, k) != hf_keys[k]]
    if differ:
        raise CheckpointError("the run's model config differs from the Hugging Face model it loads: "
                              + "; ".join(differ) + " (tools/convert_from_hf.py writes a matching config.yml)")


def fit_vocab_rows(full: dict[str, torch.Tensor], rows: int) -> dict[str, torch.Tensor]:
    """Re-pad the embedding and head to ``rows`` (padding depends on the tp size; the extra
    rows are never a real token's, so they are added as zeros or dropped)."""
    out = dict(full)
    for key in ("embedding.word_embeddings.weight", "lm_head.embed_out.weight"):
        if key in out and out[key].shape[0] != rows:
            t = out[key]
            out[key] = t[:rows] if t.shape[0] > rows else torch.cat([t, t.new_zeros(rows - t.shape[0], t.shape[1])])
    return out


def _pipeline_key_to_model(key: str, num_layers: int) -> str:
    """PipelineModule state-dict key ('3.mlp...' / 'tied_modules.embed...') -> GPTModel key."""
    if key.startswith("tied_modules.embed."):
        return "embedding." + key[len("tied_modules.embed."):]
    index, rest = key.split(".", 1)
    return pipeline_index_to_prefix(int(index), num_layers) + rest
