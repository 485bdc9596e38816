"""train.py's body: start the worker, train, turn expected failures into one clear line."""

from __future__ import annotations

from megatron_lite.launcher.worker import finish_worker, start_worker
from megatron_lite.utils.logging import get_logger

logger = get_logger(__name__)


def main(argv: list[str] | None = None) -> int:
    from megatron_lite.checkpoint.layout import CheckpointError
    from megatron_lite.training.preference import PreferenceTrainer
    from megatron_lite.training.trainer import Trainer, TrainingError

    args, state = start_worker(argv)
    try:
        # train_impl dpo / kto / rm: the post-training step (training/preference.py).
        trainer = Trainer if args.cfg.post_training.train_impl == "normal" else PreferenceTrainer
        code = trainer(args, state).train()
    except (TrainingError, CheckpointError, ValueError, FileNotFoundError) as exc:
        logger.error("%s", exc)
        code = 1
    finish_worker(code)
    return code  # not reached
