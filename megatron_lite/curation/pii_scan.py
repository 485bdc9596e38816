"""Shared scanning helpers for PII detection: span and window types, word-boundary checks and
the gate windows that every detector scans.

Split out of pii.py (house limit: 450 lines a file) so that pii.py and pii_secrets.py can both
use them without importing each other. Imports run downward only: this module imports neither;
pii_secrets.py imports it, and pii.py imports both.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

Span = tuple[int, int, str]  # start, end, normalized value (the pseudonym's HMAC input)
Windows = list[tuple[int, int]]  # the digit gate's windows of a document


def is_word(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


def isolated(text: str, s: int, e: int, not_before: str = "", cont: str = ".-,/:") -> bool:
    """Not glued to a word (or a ``not_before`` character) before it, nor followed by a word
    character or a ``cont`` character and a digit (``.5``, ``-5``: then it is part of a version,
    a decimal, an ID). IPs pass ``cont="."``: ``10.0.0.1:8080``, ``10.0.0.0/8`` are addresses."""
    ch = text[s - 1] if s > 0 else " "
    if is_word(ch) or ch in not_before:
        return False
    nxt = text[e:e + 2]
    return not nxt or not (is_word(nxt[0]) or (nxt[0] in cont and nxt[1:].isdigit()))


def windows(gate: re.Pattern, text: str, margin: int) -> Windows:
    """Gate hits widened by ``margin`` characters each side, overlapping ones merged."""
    out: Windows = []
    for m in gate.finditer(text):
        s, e = max(0, m.start() - margin), m.end() + margin
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], e)
        else:
            out.append((s, e))
    return out


def scan(pattern: re.Pattern, text: str, wins: Windows) -> Iterator[re.Match]:
    """``pattern``'s matches inside each window (never across the rest of the document)."""
    for s, e in wins:
        yield from pattern.finditer(text, s, e)
