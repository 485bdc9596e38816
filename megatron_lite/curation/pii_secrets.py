"""Secret detection for PII anonymization: private-key blocks (PEM), vendor tokens (AWS, GitHub,
Slack, Google, Stripe), ``Bearer`` tokens and ``key=value`` credentials whose value is a literal,
not code or a placeholder. Rules: docs/curation.md, "PII".

Split out of pii.py (house limit: 450 lines a file): the secret kind is the largest detector and
shares nothing with the digit-based ones but the helpers in pii_scan.py. Imports run downward:
this module imports pii_scan.py only; pii.py imports :func:`find_secret` from here.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from megatron_lite.curation.pii_scan import Span, Windows, isolated

_PEM = re.compile(
    r"-----BEGIN ((?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?)-----"
    # Body lines (base64 or "Proc-Type: ..." headers) after real or JSON-escaped newlines, then
    # the END line if there is one. Not ".*?END": unterminated blocks would make it quadratic.
    r"(?:(?:\r?\n|\\n)(?:[ \t]*(?:[A-Za-z-]+:[^\n\\]*|[A-Za-z0-9+/=]+)|(?=\r?\n|\\n)))*"
    r"(?:(?:\r?\n|\\n)[ \t]*-----END \1-----)?"
)
_TOKEN = re.compile(
    r"(?:AKIA|ASIA)[A-Z0-9]{16}"
    r"|gh[pousr]_[A-Za-z0-9]{36,251}|github_pat_[A-Za-z0-9_]{22,244}"
    r"|xox[abposr]-[A-Za-z0-9-]{10,250}|AIza[0-9A-Za-z_-]{35}|[sr]k_live_[0-9A-Za-z]{16,247}"
)
_BEARER = re.compile(r"[Bb]earer\s+([A-Za-z0-9._~+/=-]{20,})")
# The key ends with the keyword or a secret-like suffix (api_key, secret_access_key, token2), not
# token_type or password_field. Unquoted values may not end with '.' (a full stop).
_KEY_VALUE = re.compile(
    r"(?i)(?:api[_-]?key|secret|token|passw(?:or)?d|pwd)"
    r"(?:[_.-]?(?:access[_-]?)?(?:key|secret|token|value|hash|str|string))?[_-]?[0-9]*"
    r"[\"']?[ \t]*[:=][ \t]*"
    r"(?:([\"'])([^\"'\r\n]{6,256})\1|([^\s\"'`,;()\[\]{}<>]{7,255}[^\s\"'`,;()\[\]{}<>.]))"
)
# Where a secret pattern can start, looked up in the lower-cased text with ``str.find`` (a
# string search, twice as fast as one regex with these alternatives: see pii.py's docstring).
_SECRET_HINTS = ("token", "secret", "passw", "pwd", "api", "bearer", "akia", "asia", "aiza",
                 "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_", "xox", "sk_live_",
                 "rk_live_")
_CODE_NAME = re.compile(r"[A-Za-z_$][A-Za-z_$]*(?:(?:\.|->|::)[A-Za-z_$][A-Za-z_$]*)*")
_NOT_SECRETS = frozenset("none null true false undefined changeme redacted password example".split())


def _secret_at(text: str, pos: int) -> Span | None:
    """The secret starting at a keyword hit, if any. A ``key=value`` value must be a literal,
    not code or a placeholder: ``token = get_token()``, ``token = self.token``, ``password =
    ${DB_PASSWORD}``, ``secret: "********"`` are kept; unquoted it needs a digit or 16 chars."""
    m = _TOKEN.match(text, pos)
    if m is not None:
        return (pos, m.end(), m.group()) if isolated(text, pos, m.end()) else None
    m = _BEARER.match(text, pos)
    if m is not None:
        return m.start(1), m.end(1), m.group(1)
    m = _KEY_VALUE.match(text, pos)
    if m is None:
        return None
    quoted = m.group(2) is not None
    value = m.group(2 if quoted else 3)
    s, e = m.span(2 if quoted else 3)
    if value[0] in "$%{<*" or len(set(value)) == 1 or value.lower() in _NOT_SECRETS:
        return None
    if not quoted and (text[e:e + 1] in ("(", "[") or (
            _CODE_NAME.fullmatch(value) and ("." in value or "_" in value))
            or not (any(c.isdigit() for c in value) or len(value) >= 16)):
        return None
    return s, e, value


def find_secret(text: str, wins: Windows) -> Iterator[Span]:
    """Secret spans in ``text``: private-key blocks first, then keyword hits left to right
    (find_pii drops overlaps). ``wins`` is unused: secrets gate on keywords, not on digits."""
    lower = text.lower()
    if len(lower) != len(text):  # a few characters lower-case to two: search the original
        lower = text
    if "PRIVATE KEY" in text:  # first, so that a token-like run inside a key block is not split
        yield from ((m.start(), m.end(), m.group()) for m in _PEM.finditer(text))
    hits = set()
    for hint in _SECRET_HINTS:
        i = lower.find(hint)
        while i >= 0:
            hits.add(i)
            i = lower.find(hint, i + 1)
    end = 0
    for pos in sorted(hits):
        found = _secret_at(text, pos) if pos >= end else None
        if found is not None:
            end = found[1]
            yield found
