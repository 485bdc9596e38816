"""LoRA on a model (``GPTModel``, ``RewardModel`` or this rank's pipeline stage), through peft.

    module = apply_lora(module, LoraSettings.of(cfg.post_training.lora))
    reference = BaseModelView(module)     # the same module with its adapters off (DPO's reference)

peft (``inject_adapter_in_model``) finds the ``targets`` layers by name, puts our tensor-parallel
LoRA layers (``parallel/lora_layers.py``, registered as peft custom modules) in their place and freezes
every other parameter, so the optimizer (``training/optimizer.param_groups``) holds the adapters
only. Names follow peft: a targeted layer's weight becomes ``<layer>.base_layer.weight`` and its
adapters ``<layer>.lora_A.default.weight`` / ``<layer>.lora_B.default.weight``. Base weights are
loaded before the adapters are added (under the plain names); checkpoints hold the adapters.
"""

from __future__ import annotations

from typing import Any

from peft import LoraConfig, inject_adapter_in_model
from torch import nn

from megatron_lite.config.lora import LoraSettings
from megatron_lite.parallel.layers import ColumnParallelLinear, RowParallelLinear
from megatron_lite.parallel.lora import adapters_disabled
from megatron_lite.parallel.lora_layers import LoraColumnParallelLinear, LoraRowParallelLinear


def peft_config(settings: LoraSettings) -> LoraConfig:
    """peft's ``LoraConfig`` for ``settings``, with our parallel layers registered."""
    config = LoraConfig(r=settings.rank, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                        target_modules=list(settings.targets), bias="none")
    # peft's experimental custom-module API: our layer types -> our LoRA layers.
    config._register_custom_module({ColumnParallelLinear: LoraColumnParallelLinear,
                                    RowParallelLinear: LoraRowParallelLinear})
    return config


def apply_lora(module: nn.Module, settings: LoraSettings, also_train: tuple[str, ...] = ()) -> nn.Module:
    """Add adapters to ``module`` in place and freeze everything else; parameters whose names end
    with one of ``also_train`` (a reward model's new head) stay trainable. Returns ``module``."""
    inject_adapter_in_model(peft_config(settings), module)
    for name, param in module.named_parameters():
        if also_train and name.endswith(also_train):
            param.requires_grad_(True)
    return module


class BaseModelView:
    """A LoRA module as its base model, without a copy: calls run in eval mode (no dropout) with
    every adapter off, then the module's mode is restored. Used as the frozen DPO/KTO reference
    (``training/preference_steps.Reference`` calls it and reads ``parameters()``)."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        was_training = self.module.training
        self.module.eval()
        try:
            with adapters_disabled():
                return self.module(*args, **kwargs)
        finally:
            self.module.train(was_training)

    def parameters(self) -> Any:
        return self.module.parameters()
