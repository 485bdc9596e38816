"""Output files written whole or not at all: a temporary name, then a rename.

A crash (or Ctrl-C) mid-write leaves at most a ``.tmp`` file beside the target, never a
half-written file under the name a reader looks for. Temporary names are unique (host, pid and
a random part), so two processes writing the same target never share one. No torch here: the
launcher uses it.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
from collections.abc import Callable, Iterable
from typing import Any


def unique_tmp_path(path: str) -> str:
    """A temporary name beside ``path`` that no other process uses: ``path.<host>.<pid>.<rand>.tmp``."""
    return f"{path}.{socket.gethostname()}.{os.getpid()}.{secrets.token_hex(4)}.tmp"


def fsync_file(path: str) -> None:
    """Make a file's data (or a directory's entries: new files, renames) durable: after a power
    loss a name that was renamed into place points at the data it was given."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


fsync_dir = fsync_file  # the same call on a directory: its entries


def fsync_tree(path: str) -> None:
    """fsync every file below ``path``, then the directories (deepest first)."""
    for root, _dirs, files in os.walk(path, topdown=False):
        for name in files:
            fsync_file(os.path.join(root, name))
        fsync_dir(root)


def read_utf8(path: str) -> str:
    """The file's text; invalid UTF-8 is a ``ValueError`` naming ``path:line`` (not the codec's
    message without a file)."""
    with open(path, "rb") as handle:
        data = handle.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ValueError(f"{path}:{line}: not valid UTF-8 (byte {data[exc.start]:#04x})") from None


def reserve_new_path(stem: str, suffix: str) -> str:
    """``<stem><suffix>``, or ``<stem>-1<suffix>``, ... : the first name no one has, created
    empty (exclusively) so that a process starting at the same moment takes the next one."""
    os.makedirs(os.path.dirname(os.path.abspath(stem)), exist_ok=True)
    n = 0
    while True:
        path = f"{stem}{f'-{n}' if n else ''}{suffix}"
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
            return path
        except FileExistsError:
            n += 1


def atomic_write_text(path: str, text: str) -> None:
    """Write ``text`` to ``path`` (parent directories created) via a unique temporary name."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = unique_tmp_path(path)
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_jsonl(path: str, records: Iterable[dict[str, Any]],
                       default: Callable[[Any], Any] | None = None) -> None:
    """One JSON object per line (UTF-8, not escaped); ``default`` as in ``json.dumps``."""
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False, default=default) + "\n" for r in records))
