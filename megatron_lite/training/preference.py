"""``train_impl`` dpo / kto / rm: the Trainer with the post-training step, data and reference.

training/main.py selects it when ``train_impl`` is not ``normal``. What differs from
pre-training:

- data: one document, or one chosen/rejected pair, per sample (``data/unpacked.py``), in the
  batches of ``training/preference_steps.py``;
- the model: ``rm`` puts a scalar head in the LM head's place (``model/reward.py``);
- the reference (dpo, kto): a frozen copy of the weights training starts from, built and loaded
  like the policy (same tensor/pipeline layout) but kept outside the DeepSpeed engine, so ZeRO
  never shards it; ``reference_load`` names other weights; ``precompute_model_name`` replaces
  it with log-probabilities read from disk; ``dpo_reference_free`` drops it;
- evaluation: loss, rewards and accuracy on the valid (``pos_/neg_valid_*``) and test data;
- every checkpoint records where the reference came from (``reference_load`` in its
  config.yml): a resumed run compares against the very same weights, not against the policy it
  resumes (GPT-NeoX reloads its reference from ``load``, i.e. from the resumed policy).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import replace

import torch

from megatron_lite.checkpoint.layout import CheckpointError, read_step_config, resolve_step_dir
from megatron_lite.checkpoint.loader import load_model_weights, pinned_source
from megatron_lite.config import Config
from megatron_lite.training import preference_steps
from megatron_lite.training.engine import build_module
from megatron_lite.training.preference_steps import (
    LossCollector,
    Objective,
    PreferenceBatch,
    Reference,
    preference_batches,
)
from megatron_lite.training.steps import StepResult
from megatron_lite.training.trainer import Trainer
from megatron_lite.utils.logging import get_logger

logger = get_logger(__name__)

_DTYPES = {"fp32": torch.float32, "bfloat16": torch.bfloat16, "fp16": torch.float16}


class PreferenceTrainer(Trainer):
    """The Trainer for ``train_impl`` dpo, kto and rm (module docstring)."""

    reference: Reference | None = None
    reference_source: str | None = None

    def _build_data(self) -> None:
        super()._build_data()
        if self.cfg.data.dataset_impl == "pairwise":
            self.tokens_per_step *= 2  # a sample is a chosen and a rejected sequence

    def _build_module(self) -> torch.nn.Module:
        module = super()._build_module()
        self.objective = Objective(self.cfg.post_training, self.state)
        if self.objective.uses_reference and not self.cfg.data.precompute_model_name:
            self.reference = self._build_reference(module)
        return module

    def _build_engine(self) -> None:
        super()._build_engine()
        if self.pipelined:  # the pipeline engine calls module.loss_fn on its last stage
            self.engine.module.loss_fn = LossCollector(self.objective)

    # ---- the reference model -------------------------------------------------------------------
    def _reference_plan(self) -> tuple[str | None, str]:
        """(source recorded in checkpoints, how to fill the reference: copy / load / init).

        ``copy``: the policy module holds the weights training starts from (fine-tuning, a
        weights-only checkpoint, the initialisation); ``load``: read ``source``; ``init``: the
        initialisation, which the seed reproduces (a resumed run that started from it).
        """
        pt, ck = self.cfg.post_training, self.cfg.checkpoint
        if pt.reference_load:
            return pinned_source(pt.reference_load), "load"
        step = None
        if ck.load and not ck.finetune:
            try:
                step = resolve_step_dir(ck.load, ck.iteration)
            except CheckpointError:
                step = None  # nothing to resume: a fresh run (load_for_resume says so)
        if step is not None:
            saved = read_step_config(step, "cannot tell where its reference model came from")
            if saved.get("train_impl") in ("dpo", "kto"):  # a post-training run: same reference
                recorded = saved.get("reference_load")
                return (recorded, "load") if recorded else (None, "init")
            # A language model's checkpoint: the reference is the model training starts from.
            return os.path.abspath(step), "copy" if self._resumes_weights_only() else "load"
        if ck.finetune and ck.load:
            return pinned_source(ck.load, ck.iteration), "copy"
        return None, "copy"

    def _resumes_weights_only(self) -> bool:
        from megatron_lite.checkpoint.engine import resumes_weights_only

        return resumes_weights_only(self.cfg)

    def _build_reference(self, policy: torch.nn.Module) -> Reference:
        cfg = self.cfg
        if cfg.post_training.lora and not cfg.post_training.reference_load:
            # LoRA: training starts from the frozen base, so the reference is the policy with its
            # adapters off (model/lora.py): no second copy of the weights.
            from megatron_lite.model.lora import BaseModelView

            self.reference_source = self.lora_base
            logger.info("reference model: the LoRA base (%s), the policy with its adapters off",
                        self.lora_base or "the initial weights")
            return Reference(BaseModelView(policy), self.state, self.pipelined, cfg.model.hidden_size)
        source, how = self._reference_plan()
        self.reference_source = source
        # The reference never trains: no activation checkpointing, no gradients.
        ref_cfg = replace(cfg, model=replace(cfg.model, checkpoint_activations=False))
        module = build_module(ref_cfg, self.state)
        if how == "copy":
            module.load_state_dict(policy.state_dict())
        elif how == "load":
            if not (os.path.isdir(source)):
                raise CheckpointError(f"reference model {source} not found (recorded as reference_load in "
                                      "the checkpoint): set reference_load to where it is now")
            load_cfg = replace(cfg, checkpoint=replace(cfg.checkpoint, load=source, iteration=None))
            load_model_weights(module, load_cfg, self.state.tp_rank, self.pipelined)
        logger.info("reference model: %s (%s)", source or "the initial weights", how)
        module.to(device=self.device, dtype=_DTYPES[cfg.training.precision]).eval().requires_grad_(False)
        return Reference(module, self.state, self.pipelined, cfg.model.hidden_size)

    def _config_to_save(self) -> Config:
        pt = self.cfg.post_training
        return replace(self.cfg, post_training=replace(pt, reference_load=self.reference_source))

    # ---- data, step, evaluation ----------------------------------------------------------------
    def _batches(self, split: str, consumed: int) -> Iterator[PreferenceBatch] | None:  # type: ignore[override]
        loader = self._loader(split, consumed)
        if loader is None:
            return None
        return preference_batches(iter(loader), self.engine.device, getattr(self.tokenizer, "eod", None),
                                  self.cfg.data.eod_mask_loss)

    def _train_step(self) -> StepResult:
        return preference_steps.train_step(self.engine, self.schedule, self.train_batches, self.state,
                                           self.pipelined, self.objective, self.reference)

    def evaluate(self, split: str) -> float | None:
        """Loss, rewards and accuracy over ``eval_iters`` global batches of ``split``."""
        batches = self._batches("test", 0) if split == "test" else self.valid_batches
        if batches is None or self.cfg.training.eval_iters == 0:
            return None
        values = preference_steps.evaluate(self.engine, batches, self.state, self.pipelined, self.objective,
                                           self.reference, self.cfg.training.eval_iters)
        it = self.progress.iteration
        self.metrics.write({"iteration": it, "split": split, **values}, it)
        logger.info("%s | iteration %d | %s", split, it,
                    " | ".join(f"{k.replace('_', ' ')} {v:.4f}" for k, v in values.items()))
        return values["loss"]
