"""What the command-line tools share: one clear error line instead of a traceback."""

from __future__ import annotations

import pickle
import sys
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

# Errors a tool reports as one line: bad files (OSError), bad values (ValueError), a weights file
# that is not what it claims (pickle); tools add their own (CheckpointError, ...).
COMMON_ERRORS: tuple[type[BaseException], ...] = (OSError, ValueError, pickle.UnpicklingError)


def run_reporting_errors(tool: str, config_name: str, action: Callable[[], T],
                         errors: tuple[type[BaseException], ...] = ()) -> tuple[bool, T | None]:
    """``(True, action())``, or ``(False, None)`` after printing ``TOOL: error: ...`` to stderr
    for an expected error. A KeyError means a key missing from ``config_name`` (e.g. "the
    checkpoint's config"), the usual cause of one in these tools."""
    try:
        return True, action()
    except KeyError as exc:
        print(f"{tool}: error: {config_name} lacks {exc}", file=sys.stderr)
    except (*errors, *COMMON_ERRORS) as exc:
        print(f"{tool}: error: {exc}", file=sys.stderr)
    return False, None
