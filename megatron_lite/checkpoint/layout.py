"""The checkpoint directory layout: names, the completeness mark, ``latest``, atomic outputs.

The layout itself (which file holds what) is described once, for users and developers alike,
in ``docs/checkpoints.md``. In short: DeepSpeed's ``<dir>/global_step<N>/`` files plus our
``config.yml``, ``tokenizer/`` and ``megatron_lite.json``, the last written last: a step
directory without it is incomplete. ``latest`` moves only after that, atomically.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import MISSING, dataclass, fields
from typing import Any

from megatron_lite.config.neox_compat import upgrade_stored_config
from megatron_lite.utils.files import fsync_dir, fsync_file, fsync_tree, unique_tmp_path
from megatron_lite.utils.logging import get_logger

logger = get_logger(__name__)

FORMAT_VERSION = 1
META_FILE = "megatron_lite.json"
CONFIG_FILE = "config.yml"
TOKENIZER_DIR = "tokenizer"
_STEP = re.compile(r"^global_step(\d+)$")


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


def complete_steps(save_dir: str) -> list[int]:
    """Iterations of the complete ``global_step<N>`` directories in ``save_dir``, ascending."""
    if not os.path.isdir(save_dir):
        return []
    found = (_STEP.match(name) for name in os.listdir(save_dir))
    return sorted(int(m[1]) for m in found
                  if m and os.path.isfile(os.path.join(save_dir, m[0], META_FILE)))


def _latest_step(path: str) -> str:
    """The step ``latest`` names; without a readable ``latest`` file (lost, or a directory), the
    newest complete step, with a warning."""
    latest = os.path.join(path, "latest")
    if os.path.isfile(latest):
        with open(latest, encoding="utf-8") as handle:
            return os.path.join(path, handle.read().strip())
    steps = complete_steps(path)
    if not steps:
        raise CheckpointError(f"{path} holds no checkpoint (no 'latest' file, no {META_FILE})")
    step = os.path.join(path, step_dir_name(steps[-1]))
    logger.warning("%s has no readable 'latest' file: using the newest complete step, %s", path, step)
    return step


def resolve_step_dir(path: str, iteration: int | None = None) -> str:
    """``path`` itself if it is a step directory, else ``path/<latest or global_step<iteration>>``."""
    if not os.path.isdir(path):
        raise CheckpointError(f"checkpoint directory not found: {path}")
    if os.path.isfile(os.path.join(path, META_FILE)):
        return path
    step = os.path.join(path, step_dir_name(iteration)) if iteration is not None else _latest_step(path)
    if not os.path.isfile(os.path.join(step, META_FILE)):
        raise CheckpointError(f"incomplete or missing checkpoint: {step} has no {META_FILE}")
    return step


def read_meta(step_dir: str) -> CheckpointMeta:
    """The step's ``megatron_lite.json``; a damaged or newer one is one ``CheckpointError``."""
    path = os.path.join(step_dir, META_FILE)
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: unreadable ({exc})") from None
    known = {f.name for f in fields(CheckpointMeta)}
    required = {f.name for f in fields(CheckpointMeta) if f.default is MISSING}
    if not isinstance(data, dict) or set(data) - known or required - set(data):
        keys = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise CheckpointError(f"{path}: damaged (keys {keys}; expected {sorted(required)}, "
                              f"optionally {sorted(known - required)})")
    if data.get("format", FORMAT_VERSION) > FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format {data['format']} is newer than this "
                              f"megatron_lite reads ({FORMAT_VERSION}): upgrade megatron_lite")
    return CheckpointMeta(**data)


def read_num_layers(step_dir: str) -> int:
    """num_layers from the checkpoint's config.yml (needed to name pipeline layer files)."""
    return int(read_step_config(step_dir, "cannot map its pipeline layer files")["num_layers"])


def read_step_config(step_dir: str, why: str = "cannot tell the model's shape") -> dict[str, Any]:
    """The flat config.yml saved with a step (the run's resolved config), in today's meaning
    when an older megatron_lite wrote it (``upgrade_stored_config``)."""
    import yaml

    path = os.path.join(step_dir, CONFIG_FILE)
    if not os.path.isfile(path):
        raise CheckpointError(f"{step_dir} has no {CONFIG_FILE}: {why}")
    with open(path, encoding="utf-8") as handle:
        return upgrade_stored_config(yaml.safe_load(handle))


def finish_step_dir(step_dir: str, config_yaml: str, tokenizer_files: list[str] | None,
                    meta: CheckpointMeta) -> None:
    """Config, tokenizer copies, then the metadata file last: its presence marks completeness.
    The weight files must already be on disk (the callers fsync them); these are fsynced here."""
    with open(os.path.join(step_dir, CONFIG_FILE), "w", encoding="utf-8") as handle:
        handle.write(config_yaml)
    fsync_file(os.path.join(step_dir, CONFIG_FILE))
    if tokenizer_files:
        os.makedirs(os.path.join(step_dir, TOKENIZER_DIR), exist_ok=True)
        for path in tokenizer_files:
            shutil.copy2(path, os.path.join(step_dir, TOKENIZER_DIR, os.path.basename(path)))
        fsync_tree(os.path.join(step_dir, TOKENIZER_DIR))
    tmp = unique_tmp_path(os.path.join(step_dir, META_FILE))
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(meta.to_json())
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, os.path.join(step_dir, META_FILE))
    fsync_dir(step_dir)


def write_latest(save_dir: str, iteration: int) -> None:
    """Point ``latest`` at a finished step, atomically (write + rename, never a partial file)."""
    latest = os.path.join(save_dir, "latest")
    if os.path.isdir(latest):  # not ours to delete: keep it under another name
        aside = unique_tmp_path(latest).removesuffix(".tmp") + ".was_a_directory"
        logger.warning("%s is a directory, not a file: moved to %s", latest, aside)
        os.replace(latest, aside)
    tmp = unique_tmp_path(latest)
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(step_dir_name(iteration))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, latest)
    fsync_dir(save_dir)


def check_output_dir(input_dir: str, output_dir: str, force: bool) -> None:
    """A tool's ``--output_dir``: never the input, nor a directory inside it or around it, not
    a file, and not a non-empty directory unless ``force`` (then it is replaced)."""
    src, dst = os.path.realpath(input_dir), os.path.realpath(output_dir)
    if dst == src or src.startswith(dst + os.sep) or dst.startswith(src + os.sep):
        raise ValueError(f"--output_dir {output_dir} must lie outside --input_dir {input_dir}")
    if os.path.isfile(output_dir):
        raise ValueError(f"--output_dir {output_dir} is a file")
    if os.path.isdir(output_dir) and os.listdir(output_dir) and not force:
        what = "holds a checkpoint" if os.path.exists(os.path.join(output_dir, "latest")) else "is not empty"
        raise ValueError(f"--output_dir {output_dir} {what}: choose another directory, or pass "
                         "--force to replace it")


@contextmanager
def replace_dir_when_done(output_dir: str) -> Iterator[str]:
    """Yield ``<output_dir>.tmp`` to write into; on success it replaces ``output_dir``, on any
    failure it is removed: a reader never sees a half-written output."""
    tmp = unique_tmp_path(output_dir.rstrip("/"))
    os.makedirs(tmp)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if os.path.exists(output_dir):
        shutil.rmtree(output_dir)
    os.replace(tmp, output_dir)
