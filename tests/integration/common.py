"""Helpers shared by the integration tests: run deepy.py, write a small run config."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.distributed.spawn import free_port

REPO = Path(__file__).resolve().parents[2]


def deepy(script: str, *configs: str, cwd: Path, extra: list[str] = (), stdin: str | None = None,
          timeout: int = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "deepy.py"), str(REPO / script), *configs, *extra],
                          capture_output=True, text=True, cwd=cwd, timeout=timeout, input=stdin,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


def gen_config(tmp_path: Path, ckpt: Path, **keys) -> str:
    path = tmp_path / "gen.yml"
    path.write_text(json.dumps({"maximum_tokens": 12, "temperature": 0.0, "log_dir": str(tmp_path / "logs"),
                                "master_port": free_port(), "num_gpus": 1, **keys}))
    return str(path)


def resolved_config_of(dry_run_stdout: str) -> str:
    """The resolved config (YAML text) that ``deepy.py --dry_run``'s command hands every worker."""
    import base64
    import shlex

    first = dry_run_stdout.strip().splitlines()[0]
    arg = next(a for a in shlex.split(first) if a.startswith("--megatron_lite_config="))
    return base64.urlsafe_b64decode(arg.split("=", 1)[1]).decode("utf-8")
