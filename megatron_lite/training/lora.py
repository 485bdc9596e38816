"""LoRA training (the ``lora`` key): the frozen base weights, then adapters on them.

    base = lora_base(cfg)                                  # where the frozen weights come from
    module = add_lora(module, cfg, tp_rank, pipelined, base)

The base is, in this order: ``lora.base`` when set; for a resumed LoRA run, the base its
checkpoint recorded; with ``finetune: true``, ``load``; else the initialisation of the seed (a
LoRA run from scratch, which a resume reproduces). It is pinned to one directory (``latest``
resolved), recorded as ``lora.base`` in every checkpoint (``with_lora_base``), and loaded into
the module under the plain names before peft wraps the targeted layers (``model/lora.py``);
DeepSpeed then optimizes and saves only the adapters (``checkpoint/engine.py``,
``checkpoint/lora.py``). A DPO/KTO reference is the same module with its adapters off
(``training/preference.py``).
"""

from __future__ import annotations

import os
from dataclasses import replace

import torch

from megatron_lite.checkpoint.layout import CheckpointError, read_step_config, resolve_step_dir
from megatron_lite.checkpoint.loader import load_model_weights, pinned_source
from megatron_lite.checkpoint.lora import check_resumable, lora_base_dir
from megatron_lite.config import Config
from megatron_lite.config.lora import LoraSettings
from megatron_lite.model.reward import REWARD_HEAD_KEY
from megatron_lite.utils.logging import get_logger

logger = get_logger(__name__)


def _resumed_step(cfg: Config) -> str | None:
    """The step ``load`` resumes (not fine-tuning), or None: nothing to resume."""
    ck = cfg.checkpoint
    if not ck.load or ck.finetune:
        return None
    try:
        return resolve_step_dir(ck.load, ck.iteration)
    except CheckpointError:
        return None  # a fresh run (load_for_resume says so), or an error it reports


def lora_base(cfg: Config) -> str | None:
    """The directory of the frozen base weights (module docstring), None for the seed's init."""
    lora, ck = cfg.post_training.lora, cfg.checkpoint
    if lora.get("base"):
        if not os.path.isdir(lora["base"]):
            raise CheckpointError(f"lora.base: {lora['base']} not found")
        return pinned_source(lora["base"])
    step = _resumed_step(cfg)
    if step is not None:
        check_resumable(step, lora)
        return lora_base_dir(step, read_step_config(step)["lora"])
    if ck.load and ck.finetune:
        return pinned_source(ck.load, ck.iteration)
    return None


def add_lora(module: torch.nn.Module, cfg: Config, tp_rank: int, pipelined: bool,
             base: str | None) -> torch.nn.Module:
    """``module`` with the base weights of ``base`` (None: as initialised) and adapters from
    ``cfg.post_training.lora``; only the adapters (and a reward model's new head) train."""
    from megatron_lite.model.lora import apply_lora  # imports peft (seconds): LoRA runs only

    if base is not None:
        base_cfg = replace(cfg, checkpoint=replace(cfg.checkpoint, load=base, iteration=None))
        load_model_weights(module, base_cfg, tp_rank, pipelined, new_heads=(REWARD_HEAD_KEY,))
    reward_head = (REWARD_HEAD_KEY.split(".", 1)[1],) if cfg.post_training.train_impl == "rm" else ()
    module = apply_lora(module, LoraSettings.of(cfg.post_training.lora), also_train=reward_head)
    trained = sum(p.numel() for p in module.parameters() if p.requires_grad)
    total = sum(p.numel() for p in module.parameters())
    logger.info("LoRA on %s (base: %s): %d of %d parameters train (%.2f%%)",
                ", ".join(cfg.post_training.lora["targets"]), base or "the initialisation", trained, total,
                100.0 * trained / max(total, 1))
    return module
