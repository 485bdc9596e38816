"""Checkpoints: the one place that knows them. Read these modules in this order:

- ``layout``: the directory layout (``docs/checkpoints.md``), ``latest``, completeness, errors;
- ``sharding``: how each parameter splits across tensor-parallel ranks;
- ``weights``: any layout <-> one full state dict on disk, without an engine;
- ``engine``: crash-safe save and resume through the DeepSpeed engine (training);
- ``hf``: Hugging Face GPTNeoX configs and weights;
- ``hf_reward``: reward models (``train_impl: rm``) as ``...ForSequenceClassification``;
- ``loader``: the one loader every reader uses (API, generation, evaluation, tools).
"""

from megatron_lite.checkpoint.layout import CheckpointError, CheckpointMeta
from megatron_lite.checkpoint.loader import (
    load_model,
    load_model_weights,
    load_reward_model,
    load_weights,
)

__all__ = ["CheckpointError", "CheckpointMeta", "load_model", "load_model_weights", "load_reward_model",
           "load_weights"]
