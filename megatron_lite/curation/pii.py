"""PII anonymization for pretraining text: find, validate, then replace, pseudonymize or drop.

Kinds, placeholders, validation rules, pseudonym format and blocklist: docs/curation.md, "PII".
Every candidate is validated (Luhn + issuer prefix, IBAN length + mod-97, SSA rules, octets /
``ipaddress``, NANP / E.164 digits, literal-not-code for ``key=value``), so look-alikes stay.
Speed: cheap gate passes (``@``; one ``[0-9]`` pass for card, SSN, phone, IPv4 and IBAN; ``:hex:``
for IPv6; ``str.find`` of keywords for secrets) pick small windows, and the full patterns and the
Python validators run only there, never per character of a whole document.

Library decision (``tools/bench/pii.py --compare``, planted corpus, MB per CPU second): none.
This module: recall 1.0 on all seven kinds, 0 of 787 look-alikes changed, 6.0 MB/s there, 25-28
MB/s on prose and code (tokenization: 3.7). Presidio's pattern recognizers without spaCy NER:
0.20 MB/s, no secrets, card recall 0.59, 106 look-alikes changed; scrubadub: 0.89 MB/s, no
IBAN/IP/secrets; both pull in spaCy or scikit-learn (~670 MB). phonenumbers' matcher, phones
only: 1.3-6 MB/s, recall 0.57 (VALID) / 0.88 (POSSIBLE, 49 look-alikes changed).

Layout (split to keep each file under the 450-line house limit; imports run downward only):
pii_scan.py holds the span / window types and the scanning helpers, pii_secrets.py the secret
detector (it imports pii_scan.py); this module imports both and holds the config, the other six
detectors, :func:`find_pii`, the blocklist and :class:`PIIAnonymizer`. Every public name stays
importable from here, as before the split.
"""

from __future__ import annotations

import bisect
import hashlib
import hmac
import ipaddress
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from megatron_lite.curation.pii_scan import Span, Windows, is_word, isolated, scan, windows
from megatron_lite.curation.pii_secrets import find_secret

logger = logging.getLogger(__name__)

KINDS: tuple[str, ...] = ("email", "phone", "ip", "card", "iban", "ssn", "secret")
MODES: tuple[str, ...] = ("placeholder", "pseudonym", "drop")
PLACEHOLDERS: dict[str, str] = {
    "email": "<EMAIL>", "phone": "<PHONE>", "ip": "<IP_ADDRESS>", "card": "<CREDIT_CARD>",
    "iban": "<IBAN>", "ssn": "<US_SSN>", "secret": "<SECRET>",
}
# Overlap priority: a secret value may hold an e-mail or digits; a card or IBAN holds digit
# groups that look like a phone number; phone (the loosest pattern) comes last.
_ORDER: tuple[str, ...] = ("secret", "email", "iban", "card", "ssn", "ip", "phone")



@dataclass
class PIIConfig:
    """mode: placeholder | pseudonym (needs ``secret``) | drop; kinds: a subset of KINDS;
    blocklist_file: one entry a line; a document with more than blocklist_max hits is dropped."""

    mode: str = "placeholder"
    kinds: tuple[str, ...] = KINDS
    secret: str | None = None
    blocklist_file: str | None = None
    blocklist_max: int = 0


# Where digit-based PII can be: eight or more digits with at most two separators between
# neighbours (card, SSN, phone), a dotted quad (IPv4), or two digits and two groups of four
# capitals/digits (IBAN check digits and BBAN). One pass: the pattern starts with [0-9], which
# lets ``re`` skip the other characters without trying a match.
_DIGIT_GATE = re.compile(r"[0-9](?:(?:[ .()-]{0,2}[0-9]){7,}|\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]"
                         r"|[0-9](?: ?[A-Z0-9]{4}){2})")

# Anchored on '@'; the local part is read backwards from it in a 65-character window. Matching
# the local part first would retry every start of every word: quadratic on long tokens.
_EMAIL_DOMAIN = re.compile(
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}(?![A-Za-z0-9-])"
)
_LOCAL_PART = re.compile(r"[A-Za-z0-9_%+-]+(?:\.[A-Za-z0-9_%+-]+)*")  # dot-atom: reads reversed too


def _find_email(text: str, wins: Windows) -> Iterator[Span]:
    if "@" not in text:
        return
    for m in _EMAIL_DOMAIN.finditer(text):
        at, e = m.span()
        local = _LOCAL_PART.match(text[max(0, at - 65):at][::-1])
        if local is None or local.end() > 64:
            continue
        s = at - local.end()
        if (s == 0 or text[s - 1] not in ".-+%") and e - s <= 254:
            yield s, e, text[s:e].lower()


_IPV4 = re.compile(r"[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}")
_IPV6_GATE = re.compile(r":[0-9A-Fa-f]{0,4}:")
_IPV6 = re.compile(r"[0-9A-Fa-f:][0-9A-Fa-f]{0,4}:[0-9A-Fa-f:.]*[0-9A-Fa-f:]")


def _not_ipv6(cand: str, prev: str, nxt: str) -> bool:
    """'::' forms that are code: C++ / Rust paths (face::add: no digit), a bare '::', and Python
    slices ([::2], a[1::3, ::2], b[4-1::-1]: at most two short decimal groups next to '[', ']',
    ',' or an arithmetic operator)."""
    if "::" not in cand:
        return False
    groups = [g for g in cand.split(":") if g]
    if not any(c.isdigit() for c in cand):
        return True
    slice_like = len(groups) <= 2 and all(g.isdigit() and len(g) <= 3 for g in groups)
    return slice_like and ((prev != "" and prev in "[,-+*/(") or (nxt != "" and nxt in "],-)"))


def _find_ip(text: str, wins: Windows) -> Iterator[Span]:
    # IPv6 first: its IPv4-mapped form (::ffff:192.0.2.1) is one address, not an IPv4 in it.
    if "::" in text or text.count(":") >= 7:  # an IPv6 address has '::' or seven ':'
        for m in scan(_IPV6, text, windows(_IPV6_GATE, text, 40)):
            s, e, cand = m.start(), m.end(), m.group()
            if cand[0] == ":" and cand[1] != ":":  # "addr:2001:db8::1": the ':' is not ours
                s, cand = s + 1, cand[1:]
            if cand[-1] == ":" and cand[-2] != ":":
                e, cand = e - 1, cand[:-1]
            if isolated(text, s, e, ".", ".") and not _not_ipv6(cand, text[s - 1:s], text[e:e + 1]):
                try:
                    yield s, e, ipaddress.IPv6Address(cand).compressed
                except ValueError:
                    pass
    for m in scan(_IPV4, text, wins):
        s, e = m.span()
        octets = m.group().split(".")
        if isolated(text, s, e, ".", ".") and all(int(o) <= 255 and o == str(int(o)) for o in octets):
            yield s, e, m.group()


_DIGIT_RUN = re.compile(r"[0-9](?:[ -]?[0-9]){11,}")
_FOUR_DIGITS = re.compile(r"[0-9]{4}")  # every card has four digits in a row
_GROUP = re.compile(r"[0-9]+")
_MAESTRO12 = ("5018", "5020", "5038", "56", "57", "58", "6304", "6759", "676", "0604", "6390")
_DOUBLE = tuple((2 * d - 9 if d > 4 else 2 * d) for d in range(10))


def luhn_valid(digits: str) -> bool:
    """The Luhn (mod 10) check of ISO/IEC 7812 on a string of digits."""
    odd = sum(map(int, digits[-1::-2]))
    return (odd + sum(_DOUBLE[int(d)] for d in digits[-2::-2])) % 10 == 0


def _iin_ok(d: str) -> bool:
    """Issuer prefixes: 2221-2720 Mastercard, 30 and 34-39 Diners / Amex / JCB, 4 Visa, 5
    Mastercard / Maestro, 6 Discover / UnionPay / Maestro; 1 (UATP, JCB 1800) and 2131 (JCB)
    only with 15 digits. Years (19xx, 20xx) and most other 4-digit groups fail it, cheaply."""
    if d[0] in "1456":
        return True
    if d[0] == "3":
        return d[1:2] in ("0", "4", "5", "6", "7", "8", "9")
    return d[0] == "2" and ("2221" <= d[:4] <= "2720" or d[:4] == "2131")


def card_valid(d: str) -> bool:
    """Luhn (ISO/IEC 7812) plus the issuer prefix; 12 digits only for Maestro prefixes."""
    n = len(d)
    if n == 12:
        return d.startswith(_MAESTRO12) and luhn_valid(d)
    if d[0] == "1" or d.startswith("2131"):
        return n == 15 and luhn_valid(d)
    return 13 <= n <= 19 and _iin_ok(d) and luhn_valid(d)


def _card_windows(groups: list[str]) -> Iterator[tuple[int, int]]:
    """(i, j) group ranges that may be a card, longest first for each start i: one bare run of
    12-19 digits, or a 4-digit first group, 4-6-digit middle groups and a 1-6-digit last group
    (4-4-4-4, 4-6-5, 4-4-4-4-3, ...)."""
    for i, first in enumerate(groups):
        if not (_iin_ok(first) or first.startswith(_MAESTRO12)):
            continue
        ends, total = [i + 1] if 12 <= len(first) <= 19 else [], len(first)
        for j in range(i + 1, min(i + 6, len(groups)) if len(first) == 4 else i + 1):
            total += len(groups[j])
            if total > 19 or len(groups[j]) > 6:
                break
            if total >= 12:
                ends.append(j + 1)
            if len(groups[j]) < 4:
                break
        yield from ((i, j) for j in reversed(ends))


def _find_card(text: str, wins: Windows) -> Iterator[Span]:
    for m in scan(_DIGIT_RUN, text, wins):
        base, run = m.start(), m.group()
        if not isolated(text, base, m.end(), ".,/") or not _FOUR_DIGITS.search(run):
            continue
        spans = [g.span() for g in _GROUP.finditer(run)]
        groups = [run[a:b] for a, b in spans]
        pos = 0  # windows never overlap: the longest valid one from the earliest start wins
        for i, j in _card_windows(groups):
            if i >= pos and card_valid("".join(groups[i:j])):
                yield base + spans[i][0], base + spans[j - 1][1], "".join(groups[i:j])
                pos = j


# SWIFT IBAN registry (release 101) country -> length, plus experimental national IBANs in use
# (DZ, AO, BF, BJ, CI, CM, CV, IR, MA, MG, ML, MZ, SN).
_IBAN_LENGTHS = {c[:2]: int(c[2:]) for c in (
    "AD24 AE23 AL28 AT20 AZ28 BA20 BE16 BG22 BH22 BI27 BR29 BY28 CH21 CR22 CY28 CZ24 DE22 DJ27 "
    "DK18 DO28 EE20 EG29 ES24 FI18 FK18 FO18 FR27 GB22 GE22 GI23 GL18 GR27 GT28 HN28 HR21 HU28 "
    "IE22 IL23 IQ23 IS26 IT27 JO30 KW30 KZ20 LB28 LC32 LI21 LT20 LU20 LV21 LY25 MC27 MD24 ME22 "
    "MK19 MN20 MR27 MT31 MU30 NI28 NL18 NO15 OM23 PK24 PL28 PS29 PT25 QA29 RO24 RS22 RU33 SA24 "
    "SC31 SD18 SE24 SI19 SK24 SM27 SO23 ST25 SV28 TL23 TN24 TR26 UA29 VA22 VG24 XK20 YE30 "
    "DZ26 AO25 BF28 BJ28 CI28 CM27 CV25 IR26 MA28 MG27 ML28 MZ25 SN28"
).split()}
_IBAN = re.compile(r"[A-Z][A-Z][0-9][0-9](?: ?[A-Z0-9]{1,4}){3,8}")


def iban_valid(compact: str) -> bool:
    """Registry length for the country and ISO 7064 mod-97 == 1 (ISO 13616)."""
    if _IBAN_LENGTHS.get(compact[:2]) != len(compact) or not compact.isalnum():
        return False
    return int("".join(str(int(c, 36)) for c in compact[4:] + compact[:4])) % 97 == 1


def _find_iban(text: str, wins: Windows) -> Iterator[Span]:
    for m in scan(_IBAN, text, wins):
        s, cand = m.start(), m.group()
        length = _IBAN_LENGTHS.get(cand[:2])
        if length is None or (s > 0 and is_word(text[s - 1])):
            continue
        # The regex may run into a following word in capitals: cut at the registry length.
        chars = [k for k, ch in enumerate(cand) if ch != " "]
        e = s + chars[length - 1] + 1 if len(chars) >= length else -1
        if e < 0 or (e < len(text) and is_word(text[e])):
            continue
        compact = cand[:e - s].replace(" ", "")
        if iban_valid(compact):
            yield s, e, compact


_SSN = re.compile(r"[0-9]{3}([- ])[0-9][0-9]\1[0-9]{4}"
                  r"|(?i:ssn|social security(?: number)?)\W{0,4}([0-9]{9})")


def ssn_valid(digits: str) -> bool:
    """SSA rules: area not 000, 666 or 9xx; group not 00; serial not 0000."""
    area, group, serial = digits[:3], digits[3:5], digits[5:]
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


def _find_ssn(text: str, wins: Windows) -> Iterator[Span]:
    for m in scan(_SSN, text, wins):
        s, e = m.span(2) if m.group(2) is not None else m.span()  # keyword: replace the number
        if not isolated(text, s, e, "-."):
            continue
        digits = text[s:e].replace("-", "").replace(" ", "")
        if ssn_valid(digits):
            yield s, e, digits


_EXT = r"(?:\s?(?:x|ext\.?|extension)\s?[0-9]{1,5})?"
_PHONE = re.compile(
    r"(?:\+|00)[1-9][0-9]{0,3}(?:[ .-]?(?:\([0-9]{1,5}\)|[0-9]{1,6})){1,8}" + _EXT  # E.164
    + r"|(?:1[ .-]?)?(?:\([0-9]{3}\)\s?|[0-9]{3}[ .-]?)[0-9]{3}[ .-]?[0-9]{4}" + _EXT  # NANP
)
# A bare run of ten digits is a phone number only after one of these words: otherwise it is as
# likely an ID, a count or a constant in code or a CSV file (4294967295).
_PHONE_CONTEXT = re.compile(r"(?i)\b(?:tel|telephone|phone|call|mobile|cell|fax|contact|sms"
                            r"|whatsapp|dial)(?:\s|[.:#,(]|$)")
_EXT_SPLIT = re.compile(r"\s?(?:x|ext\.?|extension)\s?(?=[0-9])")


def _phone_digits(cand: str) -> tuple[str, int] | None:
    """(normalized digits, length of the candidate to keep) or None if not a phone number."""
    number, *rest = _EXT_SPLIT.split(cand, maxsplit=1)
    ext = "x" + rest[0] if rest else ""
    if cand[0] == "+" or cand.startswith("00"):  # E.164: 8-15 digits (may run into a number)
        if number.count(".") == 1 and not any(c in number for c in " -()"):
            return None  # a signed decimal such as +35236450.6
        count, end = 0, 0
        for g in _GROUP.finditer(number):
            if count + len(g.group()) > 15:
                break
            count += len(g.group())
            end = g.end() + (number[g.end():g.end() + 1] == ")")
        digits = "".join(_GROUP.findall(number[:end]))[2 if cand[0] == "0" else 0:]
        if count < 8:
            return None
        return (digits + ext, len(cand)) if end == len(number) else (digits, end)
    digits = "".join(_GROUP.findall(number))
    if digits == number and len(digits) != 10:
        return None  # bare 11 digits: a number, not a phone number
    nanp = digits[1:] if len(digits) == 11 and digits[0] == "1" else digits
    if len(nanp) != 10 or nanp[0] < "2" or nanp[3] < "2":  # area code, exchange: 2-9
        return None
    return "1" + nanp + ext, len(cand)


def _find_phone(text: str, wins: Windows) -> Iterator[Span]:
    for m in scan(_PHONE, text, wins):
        s = m.start()
        if s and (text[s - 1].isdigit() or (text[s - 1] in " -." and text[s - 2:s - 1].isdigit())):
            continue  # inside a longer digit run or digit-group sequence (an account, an IBAN)
        if m.group().isdigit() and not _PHONE_CONTEXT.search(text, max(0, s - 40), s):
            continue
        found = _phone_digits(m.group())
        if found is not None and isolated(text, s, s + found[1], "+-./"):
            yield s, s + found[1], found[0]


_FINDERS: dict[str, Callable[[str, Windows], Iterator[Span]]] = {
    "email": _find_email, "phone": _find_phone, "ip": _find_ip, "card": _find_card,
    "iban": _find_iban, "ssn": _find_ssn, "secret": find_secret,
}


def find_pii(text: str, kinds: tuple[str, ...] = KINDS) -> list[tuple[int, int, str, str]]:
    """Non-overlapping ``(start, end, kind, normalized value)`` of the PII in ``text``, sorted;
    where kinds overlap, the one first in ``_ORDER`` wins (a card is not also a phone)."""
    # The digit gate's windows, shared by card, SSN, phone, IPv4 and IBAN.
    wins = windows(_DIGIT_GATE, text, 48) if set(kinds) - {"email", "secret"} else []
    starts: list[int] = []
    taken: list[tuple[int, int, str, str]] = []
    for kind in _ORDER:
        if kind not in kinds:
            continue
        for s, e, value in _FINDERS[kind](text, wins):
            i = bisect.bisect_left(starts, s)
            if (i > 0 and taken[i - 1][1] > s) or (i < len(taken) and taken[i][0] < e):
                continue
            starts.insert(i, s)
            taken.insert(i, (s, e, kind, value))
    return taken


_WORD = re.compile(r"\w+")


class _Blocklist:
    """URL/domain entries: ``str.count`` each (a C string search). Words and phrases: with a few
    entries ``str.find`` each and a boundary check; with many, one ``\\w+`` tokenization of the
    document and set lookups (one pass whatever the list size; phrases then by one regex)."""

    def __init__(self, entries: list[str]) -> None:
        entries = [e.strip().lower() for e in entries]
        entries = [e for e in entries if e and not e.startswith("#")]
        self.urls = tuple(sorted({e for e in entries if "." in e or "/" in e}))
        self.terms = tuple(sorted({e for e in entries if e not in self.urls}))
        self.words = frozenset(e for e in self.terms if _WORD.fullmatch(e))
        phrases = [re.escape(e) for e in self.terms if e not in self.words]
        self.phrases = re.compile(r"(?<!\w)(?:" + "|".join(phrases) + r")(?!\w)") if phrases \
            else None

    def count(self, text: str) -> int:
        lower = text.lower()
        hits = sum(lower.count(u) for u in self.urls)
        if len(self.terms) > 32:
            hits += sum(1 for w in _WORD.findall(lower) if w in self.words)
            return hits + (len(self.phrases.findall(lower)) if self.phrases else 0)
        for term in self.terms:
            i = lower.find(term)
            while i >= 0:
                hits += isolated(lower, i, i + len(term))
                i = lower.find(term, i + len(term))
        return hits


class PIIAnonymizer:
    """Applies a :class:`PIIConfig` to documents. Picklable and deterministic: it holds only
    the config, the HMAC key, the loaded blocklist and module-level compiled regexes."""

    def __init__(self, cfg: PIIConfig) -> None:
        if cfg.mode not in MODES or not set(cfg.kinds) <= set(KINDS):
            raise ValueError(f"PIIConfig: mode must be one of {MODES} (got {cfg.mode!r}), kinds "
                             f"a subset of {KINDS} (got {cfg.kinds})")
        if cfg.mode == "pseudonym" and not cfg.secret:
            raise ValueError("PIIConfig.secret is required for mode 'pseudonym' (the HMAC key "
                             "that makes pseudonyms consistent and unlinkable)")
        if cfg.blocklist_max < 0:
            raise ValueError(f"PIIConfig.blocklist_max must be >= 0, got {cfg.blocklist_max}")
        self.cfg = cfg
        self.kinds = tuple(k for k in _ORDER if k in cfg.kinds)
        self._key = (cfg.secret or "").encode("utf-8")
        self._blocklist: _Blocklist | None = None
        if cfg.blocklist_file:
            with open(cfg.blocklist_file, encoding="utf-8") as f:
                self._blocklist = _Blocklist(f.read().splitlines())
            logger.debug("blocklist %s: %d terms, %d URLs", cfg.blocklist_file,
                         len(self._blocklist.terms), len(self._blocklist.urls))

    def blocked(self, text: str) -> int:
        """Blocklist hits in ``text`` (0 without a blocklist)."""
        return self._blocklist.count(text) if self._blocklist is not None else 0

    def pseudonym(self, kind: str, value: str) -> str:
        """HMAC-SHA256(secret, kind + normalized value), 8 hex digits: ``user-<hex>@example.invalid``
        for an e-mail (still an e-mail, reserved domain), ``<PHONE_<hex>>`` style otherwise (a
        real-looking fake number or IP could be someone's real one)."""
        digest = hmac.new(self._key, f"{kind}\0{value}".encode(), hashlib.sha256).hexdigest()[:8]
        if kind == "email":
            return f"user-{digest}@example.invalid"
        return f"{PLACEHOLDERS[kind][:-1]}_{digest}>"

    def anonymize(self, text: str) -> tuple[str | None, dict[str, int]]:
        """``(new text, {kind: replacements})``; new text is ``None`` when the document is
        dropped (mode drop and PII found, or more than ``blocklist_max`` blocklist hits)."""
        if self._blocklist is not None:
            hits = self._blocklist.count(text)
            if hits > self.cfg.blocklist_max:
                return None, {"blocklist": hits}
        counts = dict.fromkeys(self.kinds, 0)
        found = find_pii(text, self.kinds)
        for _, _, kind, _ in found:
            counts[kind] += 1
        if not found or self.cfg.mode == "drop":
            return (None if found else text), counts
        pseudo = self.cfg.mode == "pseudonym"
        parts, pos = [], 0
        for s, e, kind, value in found:
            parts.append(text[pos:s])
            parts.append(self.pseudonym(kind, value) if pseudo else PLACEHOLDERS[kind])
            pos = e
        parts.append(text[pos:])
        return "".join(parts), counts
