"""Every place where megatron_lite changes DeepSpeed's own behaviour, and why.

Written against DeepSpeed 0.16-0.19 (requirements: ``deepspeed>=0.16,<0.20``); each patch names
the DeepSpeed code it replaces, so that a DeepSpeed upgrade knows what to re-check. Both are
applied by ``training/engine.build_engine`` right after ``deepspeed.initialize``.
"""

from __future__ import annotations

from typing import Any

from megatron_lite.parallel.state import ParallelState
from megatron_lite.training.optimizer import clip_grad_norm


def use_model_parallel_clipping(engine: Any, state: ParallelState) -> None:
    """Clip fp32 (ZeRO-0) gradients by the norm over the whole model replica, and keep it.

    Replaces ``DeepSpeedEngine.clip_fp32_gradients`` (called from ``_take_model_step`` when
    neither fp16, bf16 nor ZeRO is on). DeepSpeed's version counts untagged (tensor-replicated)
    parameters only where its ``get_model_parallel_rank()`` is 0, which under pipeline
    parallelism is the first stage only, and it does not keep the norm it computed
    (``get_global_grad_norm()`` returns None). Ours counts replicated parameters once per
    pipeline stage (on tensor rank 0), skips DeepSpeed's pipeline copies of tied weights, sums
    over all tensor and pipeline ranks of the replica, and records the norm.
    """

    def clip_and_record() -> None:
        params = [p for p in engine.module.parameters() if p.grad is not None]
        engine._global_grad_norm = clip_grad_norm(params, engine.gradient_clipping(), state)

    engine.clip_fp32_gradients = clip_and_record


def skip_allreduce_for_one_replica(engine: Any, state: ParallelState, pipelined: bool,
                                   zero_stage: int) -> None:
    """With one data-parallel replica and no ZeRO, turn off DeepSpeed's gradient all-reduce.

    ``DeepSpeedEngine.allreduce_gradients`` (run after every backward at a gradient
    accumulation boundary while ``enable_backward_allreduce`` is set) still flattens every
    gradient into buckets and all-reduces them over a group of one: pure copying, several
    percent of a CPU step. The pipeline engine reduces by its own path, and ZeRO's optimizer
    owns the reduction, so both are left alone.
    """
    if not pipelined and state.dp_size == 1 and zero_stage == 0:
        engine.enable_backward_allreduce = False
