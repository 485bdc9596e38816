"""What deepy.py hands every worker, both directions: the resolved config and the run directory.

deepy.py passes ``--megatron_lite_config=<base64 YAML>`` (inline, so nodes need no shared
file system) and ``--run_dir=PATH``; the DeepSpeed launcher adds ``--local_rank=N``.
"""

from __future__ import annotations

import argparse
import base64
import os
import tempfile
from dataclasses import dataclass

import yaml

from megatron_lite.config import Config, dump_yaml, load_resolved
from megatron_lite.launcher.scheduler_env import apply_scheduler_ranks

CONFIG_ARG = "--megatron_lite_config"
RUN_DIR_ARG = "--run_dir"


@dataclass(frozen=True)
class WorkerArgs:
    cfg: Config
    run_dir: str
    rank: int
    local_rank: int
    world_size: int


def encode_worker_args(cfg: Config, run_dir: str) -> list[str]:
    """The arguments every worker receives: the resolved config inline (no shared FS needed)."""
    encoded = base64.urlsafe_b64encode(dump_yaml(cfg).encode("utf-8")).decode("ascii")
    return [f"{CONFIG_ARG}={encoded}", f"{RUN_DIR_ARG}={run_dir}"]


def _ranks_from_scheduler(config_text: str) -> None:
    """RANK/WORLD_SIZE/LOCAL_RANK from mpirun's or srun's variables when they started this rank
    (``scheduler_env.py``); the world size must be known before the config is derived."""
    keys = yaml.safe_load(config_text) or {}
    apply_scheduler_ranks(os.environ, keys.get("master_addr"), keys.get("master_port"),
                          mpi=bool(keys.get("deepspeed_mpi")), slurm=bool(keys.get("deepspeed_slurm")))


def parse_worker_args(argv: list[str] | None = None) -> WorkerArgs:
    """Decode the config for this rank and re-derive it for the real world size."""
    parser = argparse.ArgumentParser(description="megatron_lite worker (started by deepy.py)")
    parser.add_argument(CONFIG_ARG, dest="config", required=True,
                        help="base64 resolved config (from deepy.py), or a YAML path")
    parser.add_argument(RUN_DIR_ARG, dest="run_dir", default=None)
    parser.add_argument("--local_rank", type=int, default=None)
    args, _unknown = parser.parse_known_args(argv)
    if os.path.isfile(args.config):
        with open(args.config, encoding="utf-8") as handle:
            text = handle.read()
    else:
        text = base64.urlsafe_b64decode(args.config.encode("ascii")).decode("utf-8")
    _ranks_from_scheduler(text)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = args.local_rank if args.local_rank is not None else int(os.environ.get("LOCAL_RANK", "0"))
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as handle:
        handle.write(text)
    try:
        cfg = load_resolved(handle.name, world)
    finally:
        os.unlink(handle.name)
    run_dir = args.run_dir or os.getcwd()
    return WorkerArgs(cfg=cfg, run_dir=run_dir, rank=rank, local_rank=local_rank, world_size=world)
