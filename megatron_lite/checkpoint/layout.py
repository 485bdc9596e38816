"""The checkpoint directory layout: names, the completeness mark, ``latest``, atomic outputs.

The layout itself (which file holds what) is described once, for users and developers alike,
in ``docs/checkpoints.md``. In short: DeepSpeed's ``<dir>/global_step<N>/`` files plus our
``config.yml``, ``tokenizer/`` and ``megatron_lite.json``, the last written last: a step
directory without it is incomplete. ``latest`` moves only after that, atomically.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

FORMAT_VERSION = 1
META_FILE = "megatron_lite.json"
CONFIG_FILE = "config.yml"
TOKENIZER_DIR = "tokenizer"


class CheckpointError(RuntimeError):
    """A missing, incomplete or inconsistent checkpoint (the message names the path)."""


@dataclass(frozen=True)
class CheckpointMeta:
    iteration: int
    consumed_train_samples: int
    model_parallel_size: int
    pipe_parallel_size: int
    format: int = FORMAT_VERSION
    vocab_size: int | None = None  # the real vocabulary (rows past it are padding)
    # No optimizer/RNG states (converted or resharded): resuming it starts a fresh optimizer.
    weights_only: bool = False

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=2)


def step_dir_name(iteration: int) -> str:
    return f"global_step{iteration}"


def resolve_step_dir(path: str, iteration: int | None = None) -> str:
    """``path`` itself if it is a step directory, else ``path/<latest or global_step<iteration>>``."""
    if not os.path.isdir(path):
        raise CheckpointError(f"checkpoint directory not found: {path}")
    if os.path.isfile(os.path.join(path, META_FILE)):
        return path
    if iteration is not None:
        step = os.path.join(path, step_dir_name(iteration))
    else:
        latest = os.path.join(path, "latest")
        if not os.path.isfile(latest):
            raise CheckpointError(f"{path} holds no checkpoint (no 'latest' file, no {META_FILE})")
        with open(latest, encoding="utf-8") as handle:
            step = os.path.join(path, handle.read().strip())
    if not os.path.isfile(os.path.join(step, META_FILE)):
        raise CheckpointError(f"incomplete or missing checkpoint: {step} has no {META_FILE}")
    return step


def read_meta(step_dir: str) -> CheckpointMeta:
    with open(os.path.join(step_dir, META_FILE), encoding="utf-8") as handle:
        return CheckpointMeta(**json.load(handle))


def read_num_layers(step_dir: str) -> int:
    """num_layers from the checkpoint's config.yml (needed to name pipeline layer files)."""
    return int(read_step_config(step_dir, "cannot map its pipeline layer files")["num_layers"])


def read_step_config(step_dir: str, why: str = "cannot tell the model's shape") -> dict[str, Any]:
    """The flat config.yml saved with a step (the run's resolved config)."""
    import yaml

    path = os.path.join(step_dir, CONFIG_FILE)
    if not os.path.isfile(path):
        raise CheckpointError(f"{step_dir} has no {CONFIG_FILE}: {why}")
    with open(path, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def finish_step_dir(step_dir: str, config_yaml: str, tokenizer_files: list[str] | None,
                    meta: CheckpointMeta) -> None:
    """Config, tokenizer copies, then the metadata file last: its presence marks completeness."""
    with open(os.path.join(step_dir, CONFIG_FILE), "w", encoding="utf-8") as handle:
        handle.write(config_yaml)
    if tokenizer_files:
        os.makedirs(os.path.join(step_dir, TOKENIZER_DIR), exist_ok=True)
        for path in tokenizer_files:
            shutil.copy2(path, os.path.join(step_dir, TOKENIZER_DIR, os.path.basename(path)))
    tmp = os.path.join(step_dir, META_FILE + ".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(meta.to_json())
    os.replace(tmp, os.path.join(step_dir, META_FILE))


def write_latest(save_dir: str, iteration: int) -> None:
    """Point ``latest`` at a finished step, atomically (write + rename, never a partial file)."""
    tmp = os.path.join(save_dir, "latest.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(step_dir_name(iteration))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, os.path.join(save_dir, "latest"))


def check_output_outside(input_dir: str, output_dir: str) -> None:
    """A tool's output replaces whatever is at ``output_dir``: never the input, nor a directory
    inside it or around it."""
    src, dst = os.path.realpath(input_dir), os.path.realpath(output_dir)
    if dst == src or src.startswith(dst + os.sep) or dst.startswith(src + os.sep):
        raise ValueError(f"--output_dir {output_dir} must lie outside --input_dir {input_dir}")


@contextmanager
def replace_dir_when_done(output_dir: str) -> Iterator[str]:
    """Yield ``<output_dir>.tmp`` to write into; on success it replaces ``output_dir``, on any
    failure it is removed: a reader never sees a half-written output."""
    tmp = output_dir.rstrip("/") + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if os.path.exists(output_dir):
        shutil.rmtree(output_dir)
    os.replace(tmp, output_dir)
