"""The worker side of deepy.py: read the resolved config every rank receives.

deepy.py passes ``--megatron_lite_config=<base64 YAML>`` (inline, so nodes need no shared
file system) and ``--run_dir=PATH``; the DeepSpeed launcher adds ``--local_rank=N``.
"""

from __future__ import annotations

import argparse
import base64
import os
import tempfile
from dataclasses import dataclass

from megatron_lite.config import Config, load_resolved

CONFIG_ARG = "--megatron_lite_config"
RUN_DIR_ARG = "--run_dir"


@dataclass(frozen=True)
class WorkerArgs:
    cfg: Config
    run_dir: str
    rank: int
    local_rank: int
    world_size: int


def parse_worker_args(argv: list[str] | None = None) -> WorkerArgs:
    """Decode the config for this rank and re-derive it for the real world size."""
    parser = argparse.ArgumentParser(description="megatron_lite worker (started by deepy.py)")
    parser.add_argument(CONFIG_ARG, dest="config", required=True,
                        help="base64 resolved config (from deepy.py), or a YAML path")
    parser.add_argument(RUN_DIR_ARG, dest="run_dir", default=None)
    parser.add_argument("--local_rank", type=int, default=None)
    args, _unknown = parser.parse_known_args(argv)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = args.local_rank if args.local_rank is not None else int(os.environ.get("LOCAL_RANK", "0"))
    if os.path.isfile(args.config):
        cfg = load_resolved(args.config, world)
    else:
        text = base64.urlsafe_b64decode(args.config.encode("ascii")).decode("utf-8")
        with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as handle:
            handle.write(text)
        try:
            cfg = load_resolved(handle.name, world)
        finally:
            os.unlink(handle.name)
    run_dir = args.run_dir or os.getcwd()
    return WorkerArgs(cfg=cfg, run_dir=run_dir, rank=rank, local_rank=local_rank, world_size=world)
