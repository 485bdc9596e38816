"""Reading ``.pt`` files without running code from them.

``torch.load`` with the full unpickler runs whatever a file names: a crafted checkpoint is a
program. Every ``.pt`` file this project reads, its own and DeepSpeed's, is read with torch's
restricted unpickler (``weights_only=True``): tensors, plain containers and an explicit
allowlist of classes. DeepSpeed's loader calls ``torch.load(..., weights_only=False)``;
``deepspeed_may_load`` scans a step's files first (``get_unsafe_globals_in_checkpoint`` reads
only the pickle, not the tensors) and then forces the restricted unpickler for DeepSpeed's own
calls (``TORCH_FORCE_WEIGHTS_ONLY_LOAD``, torch's switch for exactly this). A file that names
anything else is refused with one line naming the file.
"""

from __future__ import annotations

import contextlib
import glob
import importlib
import os
from collections.abc import Iterator
from typing import Any

import torch

from megatron_lite.checkpoint.layout import CheckpointError

# What DeepSpeed 0.16-0.19's own checkpoint files hold beyond tensors and plain containers:
# found with get_unsafe_globals_in_checkpoint over ZeRO 0-3, bf16 and pipeline checkpoints
# (fp16's DynamicLossScaler by reading deepspeed/runtime/fp16/loss_scaler.py).
DEEPSPEED_GLOBALS = (
    "deepspeed.runtime.fp16.loss_scaler.LossScaler",
    "deepspeed.runtime.fp16.loss_scaler.DynamicLossScaler",
    "deepspeed.runtime.zero.config.ZeroStageEnum",
    "deepspeed.utils.tensor_fragment.fragment_address",
)


def _refusal(path: str, what: str) -> CheckpointError:
    return CheckpointError(f"{path}: refused to load: {what} (only tensors, plain containers and "
                           "DeepSpeed's own checkpoint types are read from checkpoint files)")


def safe_torch_load(path: str, map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)``; a refused or unreadable file raises
    ``CheckpointError`` naming it (not torch's advice to turn the check off)."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: file not found") from None
    except Exception as exc:  # noqa: BLE001 - pickle, zip and torch errors alike: one line
        unsafe = _unsafe_globals(path)
        if unsafe:
            raise _refusal(path, "it would unpickle " + ", ".join(sorted(unsafe))) from None
        raise _unreadable(path, exc) from None


def _unreadable(path: str, exc: BaseException) -> CheckpointError:
    first = (str(exc).strip().splitlines() or [""])[0][:120] or type(exc).__name__
    return CheckpointError(f"{path}: not a readable checkpoint file ({first})")


def _unsafe_globals(path: str) -> set[str] | None:
    """The globals a file's pickle names beyond torch's and our allowlist (None: unreadable)."""
    try:
        return set(torch.serialization.get_unsafe_globals_in_checkpoint(path)) - set(DEEPSPEED_GLOBALS)
    except Exception:  # noqa: BLE001 - truncated, garbage or not a torch file
        return None


def _allowed_classes() -> list[Any]:
    classes = []
    for name in DEEPSPEED_GLOBALS:
        module, _, attr = name.rpartition(".")
        with contextlib.suppress(ImportError, AttributeError):
            classes.append(getattr(importlib.import_module(module), attr))
    return classes


def check_step_files(step_dir: str) -> None:
    """Refuse a step whose ``.pt`` files name anything but tensors, containers and the allowlist."""
    for path in sorted(glob.glob(os.path.join(step_dir, "*.pt"))):
        try:
            unsafe = set(torch.serialization.get_unsafe_globals_in_checkpoint(path)) - set(DEEPSPEED_GLOBALS)
        except Exception as exc:  # noqa: BLE001 - truncated, garbage or not a torch file: one line
            raise _unreadable(path, exc) from None
        if unsafe:
            raise _refusal(path, "it would unpickle " + ", ".join(sorted(unsafe)))


@contextlib.contextmanager
def deepspeed_may_load(step_dir: str) -> Iterator[None]:
    """Around ``engine.load_checkpoint``: the step's files checked, and every ``torch.load``
    inside forced to the restricted unpickler with DeepSpeed's types allowed."""
    check_step_files(step_dir)
    previous = os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD")
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    try:
        with torch.serialization.safe_globals(_allowed_classes()):
            yield
    finally:
        if previous is None:
            os.environ.pop("TORCH_FORCE_WEIGHTS_ONLY_LOAD", None)
        else:
            os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = previous
