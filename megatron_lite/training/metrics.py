"""Where training and evaluation records go: console, metrics.jsonl, TensorBoard, wandb.

Only global rank 0 writes. Records are flat dicts; training records carry ``iteration`` and
``loss``, evaluation records also ``split``.
"""

from __future__ import annotations

import json
import os
from typing import Any

from megatron_lite.config import Config
from megatron_lite.utils.logging import get_logger

logger = get_logger(__name__)


class MetricsWriter:
    """Fan records out to the enabled sinks (rank 0 only; other ranks get a no-op writer)."""

    def __init__(self, cfg: Config, run_dir: str, rank: int) -> None:
        self.enabled = rank == 0
        self.jsonl = None
        self.tensorboard = None
        self.wandb = None
        if not self.enabled:
            return
        self.jsonl = open(os.path.join(run_dir, "metrics.jsonl"), "a", encoding="utf-8")
        if cfg.logging.tensorboard_dir:
            from torch.utils.tensorboard import SummaryWriter

            self.tensorboard = SummaryWriter(log_dir=os.path.join(
                cfg.logging.tensorboard_dir, os.path.basename(run_dir)))
        if cfg.logging.use_wandb:
            self.wandb = _init_wandb(cfg, run_dir)

    def write(self, record: dict[str, Any], step: int) -> None:
        if not self.enabled:
            return
        self.jsonl.write(json.dumps(record) + "\n")
        self.jsonl.flush()
        prefix = f"{record['split']}/" if "split" in record else "train/"
        scalars = {prefix + k: v for k, v in record.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "iteration"}
        if self.tensorboard is not None:
            for key, value in scalars.items():
                self.tensorboard.add_scalar(key, value, step)
            self.tensorboard.flush()
        if self.wandb is not None:
            self.wandb.log(scalars, step=step)

    def close(self) -> None:
        if self.jsonl is not None:
            self.jsonl.close()
        if self.tensorboard is not None:
            self.tensorboard.close()
        if self.wandb is not None:
            self.wandb.finish()


def _init_wandb(cfg: Config, run_dir: str) -> Any:
    """wandb run; with WANDB_MODE=offline (or no login) it writes locally and never blocks."""
    import wandb

    lg = cfg.logging
    os.environ.setdefault("WANDB_DIR", run_dir)
    if not os.environ.get("WANDB_API_KEY") and os.environ.get("WANDB_MODE") is None:
        logger.warning("use_wandb: no WANDB_API_KEY; logging to wandb in offline mode (sync later)")
        os.environ["WANDB_MODE"] = "offline"
    return wandb.init(
        project=lg.wandb_project, group=lg.wandb_group, name=lg.wandb_run_name,
        entity=lg.wandb_team, dir=run_dir, config=cfg.to_flat_dict(), reinit=True,
    )
