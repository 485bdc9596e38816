r"""The environment every rank on every node receives.

DeepSpeed's runner copies only a few variable prefixes to remote nodes (MLFLOW, PYTHON, MV2,
UCX and the accelerator's own, e.g. NCCL) plus the lines of a ``.deepspeed_env`` file, which it
looks up by the name in ``DS_ENV_FILE``. So ``HF_HUB_OFFLINE``, ``WANDB_API_KEY`` and friends
were silently dropped on other nodes. deepy writes the variables a run needs into
``<run_dir>/deepspeed_env`` and points ``DS_ENV_FILE`` at it (an absolute name: DeepSpeed's
join with its search paths keeps it as it is).

Values are data, never code: DeepSpeed puts each one into the remote command as ``export
K="value"`` (double quotes once the value has a character outside ``[\w@%+=:,./-]``), where
``$``, backquotes, ``"`` and ``\`` would still be interpreted by the remote shell. The file
holds them backslash-escaped, which inside those double quotes gives the value back exactly.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

from megatron_lite.utils.logging import get_logger

logger = get_logger(__name__)

EXPORTED_PREFIXES = ("HF_", "HUGGING_FACE_", "TRANSFORMERS_", "WANDB_", "TOKENIZERS_", "CUDA_",
                     "NCCL_", "TORCH_", "OMP_", "MEGATRON_LITE_")


def exported_variables(environ: Mapping[str, str], extra: list[str] | None = None) -> dict[str, str]:
    """The variables of ``environ`` a run's ranks need: the prefixes above and the names listed in
    ``export_env_vars``. A value holding a newline cannot go through DeepSpeed's line-per-variable
    file: it is left out with a warning."""
    names = set(extra or [])
    chosen = {k: v for k, v in environ.items() if k.startswith(EXPORTED_PREFIXES) or k in names}
    for key in [k for k, v in chosen.items() if "\n" in v]:
        logger.warning("%s holds a newline: not exported to other nodes", key)
        del chosen[key]
    missing = sorted(names - set(environ))
    if missing:
        logger.warning("export_env_vars names variables that are not set: %s", ", ".join(missing))
    return chosen


def shell_escaped(value: str) -> str:
    """``value`` with ``\\ $ ` "`` backslash-escaped: inside DeepSpeed's double quotes it is
    the literal value. The escape also makes DeepSpeed quote it (``\\`` is outside its safe set)."""
    return re.sub(r'([\\$`"])', r"\\\1", value)


def write_env_file(run_dir: str, environ: Mapping[str, str], extra: list[str] | None = None) -> str:
    """``<run_dir>/deepspeed_env`` (``KEY=value`` lines) for DeepSpeed's runner; its path.
    Readable by the owner only: it may hold keys (``WANDB_API_KEY``, ``HF_TOKEN``)."""
    path = os.path.join(os.path.abspath(run_dir), "deepspeed_env")
    variables = exported_variables(environ, extra)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write("".join(f"{k}={shell_escaped(v)}\n" for k, v in sorted(variables.items())))
    return path
