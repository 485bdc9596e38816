"""Logging with a ``[rank N]`` prefix, filtered to rank 0 by default.

Every library module does ``logger = get_logger(__name__)``; the entry points call
``setup_logging()`` once. Ranks other than 0 only print warnings and errors unless
``all_ranks=True`` (or ``MEGATRON_LITE_LOG_ALL_RANKS=1``), which keeps multi-process output readable.
"""

from __future__ import annotations

import logging
import os
import sys

_FORMAT = "%(asctime)s [rank %(rank)s] %(levelname)s %(name)s: %(message)s"
_configured = False


def current_rank() -> int:
    """The global rank from the launcher's environment (0 when not launched)."""
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")))


class _RankFilter(logging.Filter):
    def __init__(self, all_ranks: bool) -> None:
        super().__init__()
        self.all_ranks = all_ranks

    def filter(self, record: logging.LogRecord) -> bool:
        rank = current_rank()
        record.rank = rank
        return self.all_ranks or rank == 0 or record.levelno >= logging.WARNING


def setup_logging(
    level: int = logging.INFO, all_ranks: bool | None = None, log_file: str | None = None
) -> None:
    """Configure the ``megatron_lite`` logger tree once (later calls may add a log file)."""
    global _configured
    if all_ranks is None:
        all_ranks = os.environ.get("MEGATRON_LITE_LOG_ALL_RANKS", "0") == "1"
    root = logging.getLogger("megatron_lite")
    root.setLevel(level)
    root.propagate = False
    formatter = logging.Formatter(_FORMAT, datefmt="%H:%M:%S")
    if not _configured:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(formatter)
        handler.addFilter(_RankFilter(all_ranks))
        root.addHandler(handler)
        _configured = True
    if log_file:
        os.makedirs(os.path.dirname(os.path.abspath(log_file)), exist_ok=True)
        file_handler = logging.FileHandler(log_file)
        file_handler.setFormatter(formatter)
        file_handler.addFilter(_RankFilter(True))
        root.addHandler(file_handler)


def get_logger(name: str) -> logging.Logger:
    """A logger under the ``megatron_lite`` tree (tools pass ``__name__`` too)."""
    if not name.startswith("megatron_lite"):
        name = f"megatron_lite.{name}"
    return logging.getLogger(name)
