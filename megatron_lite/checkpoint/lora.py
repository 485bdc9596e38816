"""LoRA checkpoints: adapters only, naming their base (issue #20).

A LoRA run's ``global_step<N>/`` is the usual layout (``docs/checkpoints.md``), but DeepSpeed
writes only the parameters that train (``exclude_frozen_parameters``): the adapter factors
``<layer>.lora_A.default.weight`` [r, in] / ``<layer>.lora_B.default.weight`` [out, r], split
across tensor ranks like their layer (``sharding.py``), and their optimizer states. Its
``config.yml`` carries ``lora: {rank, alpha, dropout, targets, base}``; ``base`` is the pinned
directory of the frozen weights (a step directory or a Hugging Face directory; null: the
initialisation of the run's seed). Readers (``loader.load_weights``) merge the adapters into the
base: ``W + (alpha / rank) B A``.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from megatron_lite.checkpoint.layout import CONFIG_FILE, CheckpointError, read_step_config
from megatron_lite.checkpoint.weights import read_full_state_dict
from megatron_lite.parallel.lora import delta_weight

LORA_A, LORA_B = ".lora_A.weight", ".lora_B.weight"


def adapter_key(name: str) -> str:
    """A trained parameter's name as peft's adapter files spell it (no adapter name)."""
    return name.replace(".lora_A.default.", ".lora_A.").replace(".lora_B.default.", ".lora_B.")


def read_adapters(step_dir: str, glu: bool) -> dict[str, torch.Tensor]:
    """The trained parameters of a LoRA step, full (tp = 1) and under peft's file names:
    ``<layer>.lora_A.weight``, ``<layer>.lora_B.weight`` (and, for a reward model, its head)."""
    return {adapter_key(k): v for k, v in read_full_state_dict(step_dir, glu=glu).items()}


def merge_adapters(full: dict[str, torch.Tensor], adapters: dict[str, torch.Tensor],
                   scaling: float) -> dict[str, torch.Tensor]:
    """``full`` (the base, tp = 1 names) with every adapter pair merged, ``W + scaling B A``,
    and any other trained parameter (a reward head) in place of the base's."""
    out = dict(full)
    for key, value in adapters.items():
        if key.endswith(LORA_B):
            continue
        if not key.endswith(LORA_A):
            out[key] = value
            continue
        layer = key.removesuffix(LORA_A)
        weight = layer + ".weight"
        if weight not in out or layer + LORA_B not in adapters:
            raise CheckpointError(f"adapter {key}: the base has no {weight}, or the checkpoint no {layer}{LORA_B}")
        out[weight] = out[weight] + delta_weight(value, adapters[layer + LORA_B], scaling).to(out[weight].dtype)
    return out


def lora_base_dir(step_dir: str, lora: dict[str, Any]) -> str | None:
    """The recorded base of a LoRA step (None: the seed's initialisation); a base that is gone
    is one error naming it and how to point at where it is now."""
    base = lora.get("base")
    if base is not None and not os.path.isdir(base):
        raise CheckpointError(f"{step_dir}: its LoRA base {base} (lora.base in its config.yml) is not "
                              "there: set lora.base to where it is now")
    return base


def check_resumable(step_dir: str, lora: dict[str, Any] | None) -> None:
    """A run resumes a step of its own kind: adapters into a LoRA run of the same shape, full
    weights into a run without LoRA; otherwise one error saying what to do instead."""
    if not os.path.isfile(os.path.join(step_dir, CONFIG_FILE)):
        saved = None  # written before LoRA existed, or by hand: no adapters
    else:
        saved = read_step_config(step_dir).get("lora")
    if saved and not lora:
        raise CheckpointError(f"{step_dir} holds LoRA adapters only: resume it with its lora settings, fine-tune "
                              "on it with finetune: true, or merge it first (tools/merge_lora.py)")
    if lora and not saved:
        raise CheckpointError(f"{step_dir} holds no LoRA adapters: to train adapters on it, set finetune: true "
                              "(it becomes their base) or lora.base")
    if lora and saved:
        differ = [f"{key} {saved.get(key)} -> {lora[key]}" for key in ("rank", "targets") if saved.get(key) != lora[key]]
        if differ:
            raise CheckpointError(f"{step_dir} holds other adapters than this run's lora ({'; '.join(differ)}): "
                                  "resume with its settings, or start new adapters with finetune: true")
