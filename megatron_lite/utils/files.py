"""Output files written whole or not at all: a temporary name, then a rename.

A crash (or Ctrl-C) mid-write leaves at most a ``.tmp`` file beside the target, never a
half-written file under the name a reader looks for. No torch here: the launcher uses it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from typing import Any


def atomic_write_text(path: str, text: str) -> None:
    """Write ``text`` to ``path`` (parent directories created) via ``path.tmp``."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)


def atomic_write_jsonl(path: str, records: Iterable[dict[str, Any]],
                       default: Callable[[Any], Any] | None = None) -> None:
    """One JSON object per line (UTF-8, not escaped); ``default`` as in ``json.dumps``."""
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False, default=default) + "\n" for r in records))
