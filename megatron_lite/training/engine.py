"""The model module and the DeepSpeed engine that trains it, as ``train.py`` builds them (and
``tools/bench/train.py`` times them).

    module = build_module(cfg, state)                # GPTModel, or a PipelineModule for pp >= 1
    engine, optimizer, schedule = build_engine(cfg, state, module, lr_decay_iters, on_gpu)
"""

from __future__ import annotations

from typing import Any

import torch

from megatron_lite.config import Config
from megatron_lite.config.deepspeed_config import build_deepspeed_config
from megatron_lite.model.gpt import GPTModel
from megatron_lite.model.reward import RewardModel
from megatron_lite.parallel.state import ParallelState
from megatron_lite.training.deepspeed_patches import (
    skip_allreduce_for_one_replica,
    use_model_parallel_clipping,
)
from megatron_lite.training.lr_schedule import AnnealingLR
from megatron_lite.training.optimizer import param_groups


def is_pipelined(cfg: Config) -> bool:
    """``pipe_parallel_size >= 1`` builds a DeepSpeed ``PipelineModule`` (driven by
    ``engine.train_batch``); 0 a plain ``GPTModel`` under the ordinary engine."""
    return cfg.parallel.pipe_parallel_size >= 1


def build_module(cfg: Config, state: ParallelState) -> torch.nn.Module:
    """This rank's part of the model: the whole ``GPTModel`` (``RewardModel`` for
    ``train_impl: rm``), or its pipeline stage."""
    reward = cfg.post_training.train_impl == "rm"
    if not is_pipelined(cfg):
        return (RewardModel if reward else GPTModel)(cfg.model, state, seed=cfg.training.seed)
    from deepspeed.pipe import PipelineModule

    from megatron_lite.model.pipeline import layer_specs
    from megatron_lite.parallel.cross_entropy import masked_mean_loss
    from megatron_lite.parallel.random import checkpoint

    def loss_fn(logits, labels_and_mask):
        labels, loss_mask = labels_and_mask
        return masked_mean_loss(logits, labels, loss_mask, state)

    interval = cfg.model.checkpoint_num_layers if cfg.model.checkpoint_activations else 0
    return PipelineModule(
        layers=layer_specs(cfg.model, state, cfg.training.seed, reward_head=reward), loss_fn=loss_fn,
        topology=state.topology, partition_method=cfg.parallel.pipe_partition_method,
        activation_checkpoint_interval=interval, activation_checkpoint_func=checkpoint,
        checkpointable_layers=["TransformerLayerPipe"],
    )


def build_engine(cfg: Config, state: ParallelState, module: torch.nn.Module, lr_decay_iters: int,
                 on_gpu: bool) -> tuple[Any, Any, AnnealingLR]:
    """The DeepSpeed engine, optimizer and LR schedule over ``module``: our weight-decay
    groups, our warmup + decay schedule, model-parallel gradient clipping, optional
    ``torch.compile`` (the DeepSpeed patches: ``training/deepspeed_patches.py``)."""
    import deepspeed

    if cfg.training.compile:
        module.compile()  # compiles forward in place: state-dict names stay unprefixed
    warmup = int(cfg.lr_schedule.warmup * lr_decay_iters)
    schedule = lambda opt: AnnealingLR(  # noqa: E731 - DeepSpeed calls it with its optimizer
        opt, cfg.optimizer.lr, warmup, lr_decay_iters, cfg.lr_schedule.lr_decay_style,
        cfg.lr_schedule.min_lr)
    pipelined = is_pipelined(cfg)
    engine, optimizer, _, lr_scheduler = deepspeed.initialize(
        model=module, model_parameters=param_groups(module, cfg.optimizer.weight_decay),
        lr_scheduler=schedule, config=build_deepspeed_config(cfg, on_gpu=on_gpu),
        mpu=None if pipelined else state,
    )
    use_model_parallel_clipping(engine, state)
    skip_allreduce_for_one_replica(engine, state, pipelined,
                                   cfg.parallel.zero_optimization.get("stage", 0))
    return engine, optimizer, lr_scheduler
