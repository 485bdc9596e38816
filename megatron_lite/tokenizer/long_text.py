"""Tokenize texts of any length in pieces, with exactly the tokens of one call, or refuse them.

Why: the ``tokenizers`` encoder holds about 110 bytes per input character while it works
(measured: 5.7 GB peak for one 50 MB document), so one huge document decides a worker's memory.
:class:`LongTextEncoder` wraps a tokenizer (``tokenize_batch``, ``eod``, like the tokenizer)
and hands it at most ``piece_chars`` characters per text plus the distance to the next safe
boundary (:func:`split_points`), a few texts per call: the encoder's memory is then bounded by
the piece size; what stays proportional to a document is its text and its ids (a few bytes per
character).

Safe boundaries (``_BOUNDARY``), where encoding the two sides apart gives the tokens of the whole:

A. right after a ``\\n`` that has a non-whitespace character on each side (``x\\n|y``);
B. right before a single space that has a non-whitespace character on each side (``x| y``).

Proof for byte-level BPE with the GPT-2 pre-tokenizer pattern (GPT2BPETokenizer,
HFGPT2Tokenizer, HFTokenizer files with a ``ByteLevel`` pre-tokenizer) ``'s|'t|'re|'ve|'m|'ll|'d|
?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+``: BPE merges within a pre-token only, so
it suffices that the matches (pre-tokens) of the whole are those of the two sides. No
alternative matches a non-whitespace character followed by whitespace (the only optional
character, `` ?``, is a leading space; the ``\\s+`` ones match whitespace only), so the match
holding ``x`` ends right after it. A: at the ``\\n`` only ``\\s+`` matches (``\\s+(?!\\S)`` fails on
``y``), exactly ``\\n``; B: the space followed by ``y`` starts `` ?\\p{L}+``, `` ?\\p{N}+`` or
`` ?[^\\s\\p{L}\\p{N}]+``. So a match ends at the boundary in the whole text. The pattern has no
look-behind or anchor, so matching from the boundary on sees the same characters as matching
the right side alone; left of it, greedy runs and the one-character look-ahead stop at the same
places (the left side ends with the same ``\\n``, which ``\\s+(?!\\S)`` matches at its end; in B
the run holding ``x`` ends at the space or at the end). Python's ``\\s`` holds every Unicode
White_Space character (and U+001C..U+001F), so ``x`` and ``y`` found here are non-whitespace to
the tokenizer too. CharLevelTokenizer (UTF-8 bytes) is exact at any point.

Other tokenizers may differ at piece edges (a Metaspace or SentencePiece prefix ``▁`` at each
piece start, a Strip normalizer, an added token that strips the whitespace next to it, a
configured truncation): :func:`probe_split` checks, once per process, that splitting at single
safe boundaries, and at every one at once, gives the whole-text ids on adversarial probe texts
(letters of several scripts, digits, contractions, punctuation, emoji, combining marks, runs of
mixed whitespace, the tokenizer's added tokens next to and around boundaries); for a
``tokenizers`` pipeline also that the pieces' normalized text and pre-tokens (the words the
model encodes one by one) are the whole's, which does not depend on the vocabulary holding a
token across the boundary; and that the post-processor's special tokens (a BOS) are a fixed
prefix and suffix, added once around the pieces. Beyond the proof above that is a test, not a
proof. When it fails, or a text has no safe boundary for ``max_chars`` characters, the text is
encoded whole and texts over ``max_chars`` are refused (:meth:`LongTextEncoder.too_long`,
:func:`skip_too_long`).
"""

from __future__ import annotations

import itertools
import random
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from megatron_lite.utils.logging import get_logger

logger = get_logger(__name__)

# --max-document-chars default: documents that cannot be split exactly are encoded whole up to
# this size, about 0.5 GB of encoder memory with the tokenizers library (110 bytes a character).
DEFAULT_MAX_DOCUMENT_CHARS = 4_000_000
# Pieces of 64K characters, four per call: 256K characters a call, the size of one ordinary
# preprocessing task, and enough texts for the Rust encoder's thread pool (--workers 1).
PIECE_CHARS = 1 << 16
PIECES_PER_CALL = 4
TOO_LONG = "document too long"  # the ReadStats reason

_BOUNDARY = re.compile(r"(?<=\S\n)(?=\S)|(?<=\S)(?= \S)")
_PROBE_WORDS = (
    "word", "Word", "WORD", "wörd", "naïve", "δοκιμή", "слово", "漢字", "かな", "한국어", "עברית",
    "مرحبا", "x", "7", "42", "1234567", "3.14", "x1", "1x", "'s", "'t", "'re", "'ll", "it's",
    "don't", "O'Neil", ".", "...", ",", ";", "!?", "(", ")", "[x]", "{", "}", '"', "'", "#", "@",
    "-", "--", "_", "/", "\\", "|", "<", ">", "€", "$5", "©", "🙂", "👍🏽", "e\u0301", "\u0301", "\u200b",
)
_PROBE_GLUE = (" ", "\n", "  ", "\n\n", " \n", "\n ", "\t", "\r\n", " \t ", "\u00a0", "\u3000", "   \n")


def split_points(text: str, piece_chars: int = PIECE_CHARS, max_chars: int = 0) -> list[int] | None:
    """Ends of the pieces of ``text`` (the last is ``len(text)``): each the first safe boundary
    at least ``piece_chars`` after the previous end. None when some piece would exceed
    ``max_chars`` (0: no limit) for want of a boundary."""
    limit = max_chars or len(text)
    piece_chars = max(1, piece_chars)  # each search starts past the last end
    ends: list[int] = []
    start = 0
    while len(text) - start > piece_chars:
        # endpos + 2: the boundary's look-ahead sees the two characters after it.
        found = _BOUNDARY.search(text, start + piece_chars, min(len(text), start + limit + 2))
        if found is None or found.start() - start > limit:
            if len(text) - start <= limit:
                break
            return None
        start = found.start()
        ends.append(start)
    ends.append(len(text))
    return ends


@dataclass
class SplitProbe:
    """Whether a tokenizer encodes pieces split at safe boundaries exactly (``reason``: why not),
    and the special tokens its default call adds before and after a text."""

    exact: bool
    reason: str = ""
    prefix: list[int] = field(default_factory=list)
    suffix: list[int] = field(default_factory=list)


def probe_split(tokenizer: Any) -> SplitProbe:
    """Check ``tokenizer`` on the probe texts (module docstring); a few hundred milliseconds."""
    reason = _config_problem(tokenizer)
    if reason:
        return SplitProbe(False, reason)
    texts = _probe_texts(_added_strings(tokenizer))
    bare = tokenizer.tokenize_batch(texts, add_special_tokens=False)
    affixes = _affixes(tokenizer.tokenize_batch(texts), bare)
    if affixes is None:
        return SplitProbe(False, "its special tokens are not a fixed prefix and suffix")
    cuts = [[m.start() for m in _BOUNDARY.finditer(t)] for t in texts]
    # Single boundaries, each in the 60 characters around it (a mismatch names its place), then
    # every boundary at once.
    around = [(t[max(0, q - 30):q + 30], [min(q, 30)]) for t, c in zip(texts, cuts) for q in c]
    around = random.Random(0).sample(around, min(256, len(around)))
    wants = tokenizer.tokenize_batch([t for t, _ in around], add_special_tokens=False)
    cases = [(t, c, want) for (t, c), want in zip(around, wants)] + list(zip(texts, cuts, bare))
    for text, cut in itertools.chain(_id_mismatches(tokenizer, cases), _word_mismatches(tokenizer, cases)):
        where = cut[0] if cut else 0
        return SplitProbe(False, f"splitting {text[max(0, where - 20):where + 20]!r} changes its tokens")
    return SplitProbe(True, prefix=list(affixes[0]), suffix=list(affixes[1]))


Case = tuple[str, list[int], list[int]]  # (text, where to cut it, its ids)


def _pieces(text: str, cut: list[int]) -> list[str]:
    return [text[s:e] for s, e in itertools.pairwise([0, *cut, len(text)])]


def _id_mismatches(tokenizer: Any, cases: list[Case]) -> Iterator[tuple[str, list[int]]]:
    """``(text, cut)`` of the cases whose pieces' ids differ from the whole's."""
    ids = iter(tokenizer.tokenize_batch([p for t, cut, _ in cases for p in _pieces(t, cut)],
                                        add_special_tokens=False))
    for text, cut, want in cases:
        if [i for _ in range(len(cut) + 1) for i in next(ids)] != want:
            yield text, cut


def _word_mismatches(tokenizer: Any, cases: list[Case]) -> Iterator[tuple[str, list[int]]]:
    """For a ``tokenizers`` pipeline, the cases whose pieces' normalized text or pre-tokens (the
    words the model encodes one by one) differ from the whole's: this does not depend on the
    vocabulary having a token that spans the boundary, as the ids' check does."""
    backend = getattr(tokenizer, "backend", None)
    if backend is None or getattr(backend, "pre_tokenizer", None) is None:
        return
    norm = backend.normalizer.normalize_str if backend.normalizer is not None else str
    words = backend.pre_tokenizer.pre_tokenize_str
    for text, cut, _ in cases:
        normed = [norm(p) for p in _pieces(text, cut)]
        whole = norm(text)
        if "".join(normed) != whole or [w for p in normed for w, _ in words(p)] != [w for w, _ in words(whole)]:
            yield text, cut


def _config_problem(tokenizer: Any) -> str:
    """What in a ``tokenizers`` pipeline makes pieces inexact whatever the probe says ('' if none)."""
    backend = getattr(tokenizer, "backend", None)
    if backend is None or not hasattr(backend, "pre_tokenizer"):
        return ""
    if backend.truncation is not None:  # every call is cut at max_length: so is every piece
        return "its tokenizer file sets truncation"
    if backend.padding is not None:
        return "its tokenizer file sets padding"
    if backend.pre_tokenizer is None:  # the whole text is one word: merges may cross any boundary
        return "it has no pre-tokenizer"
    return ""


def _added_strings(tokenizer: Any) -> list[str]:
    """The added/special token texts (they are matched before pre-tokenizing), at most 1024."""
    backend = getattr(tokenizer, "backend", None)
    if backend is not None and hasattr(backend, "get_added_tokens_decoder"):
        found = [t.content for t in backend.get_added_tokens_decoder().values()]
    else:  # TiktokenTokenizer: its encoding's special tokens
        found = sorted(getattr(getattr(tokenizer, "encoding", None), "special_tokens_set", ()))
    return found[:1024]


def _probe_texts(added: list[str]) -> list[str]:
    """Texts with safe boundaries between every pair of probe words, in both kinds and orders,
    among mixed whitespace, and next to and around every added token."""
    words = list(_PROBE_WORDS)
    texts = ["".join(f"{a}\n{b} {a} {b}\n" for b in words) for a in words]
    rng = random.Random(1234)
    for _ in range(48):
        texts.append(rng.choice(["", " ", "\n", "  "])
                     + "".join(rng.choice(words) + rng.choice(_PROBE_GLUE) for _ in range(40)))
    snippets = [f"x\n{c} y {c}\nz {c}{c} w\n{c}.{c}\n{c} {c}x" for c in added]
    texts += [" ".join(snippets[i:i + 8]) for i in range(0, len(snippets), 8)]
    return texts


def _affixes(full: list[list[int]], bare: list[list[int]]) -> tuple[tuple, tuple] | None:
    """The one (prefix, suffix) with ``full[i] == prefix + bare[i] + suffix`` for every i."""
    found: set | None = None
    for f, b in zip(full, bare):
        fits = {(tuple(f[:k]), tuple(f[k + len(b):])) for k in range(len(f) - len(b) + 1)
                if f[k:k + len(b)] == b}
        found = fits if found is None else found & fits
        if not found:
            return None
    return next(iter(found)) if found is not None and len(found) == 1 else None


class LongTextEncoder:
    """``tokenizer`` with bounded encoder memory per text (module docstring).

    ``tokenize_batch`` gives the ids of the tokenizer's own ``tokenize_batch``; ``encode_flat``
    the same as one array. Texts longer than ``piece_chars`` are split at safe boundaries when
    the tokenizer passes :func:`probe_split` (run once, on the first such text), else encoded
    whole: the caller refuses texts over ``max_chars`` first (``too_long``).
    """

    def __init__(self, tokenizer: Any, max_chars: int = DEFAULT_MAX_DOCUMENT_CHARS,
                 piece_chars: int = PIECE_CHARS) -> None:
        self.tokenizer = tokenizer
        self.max_chars = max_chars  # 0: no limit
        # At most half the limit: the boundary that ends a piece is looked for up to the limit.
        self.piece_chars = min(piece_chars, max_chars // 2) if max_chars else piece_chars
        self._probe: SplitProbe | None = None

    @property
    def eod(self) -> int:
        return self.tokenizer.eod

    @property
    def probe(self) -> SplitProbe:
        if self._probe is None:
            self._probe = probe_split(self.tokenizer)
            logger.debug("%s: pieces exact: %s %s", getattr(self.tokenizer, "name", "tokenizer"),
                         self._probe.exact, self._probe.reason)
        return self._probe

    def plan(self, text: str) -> list[int] | None:
        """Piece ends for ``text``; None: encode it whole."""
        if len(text) <= self.piece_chars or not self.probe.exact:
            return None
        return split_points(text, self.piece_chars, self.max_chars)

    def too_long(self, text: str) -> str | None:
        """Why ``text`` is refused (a detail for ``ReadStats.skip``), None when it is not."""
        if not self.max_chars or len(text) <= self.max_chars:
            return None
        over = f" ({len(text):,} characters, over the limit of {self.max_chars:,}"
        hint = "; --max-document-chars raises the limit)"
        if not self.probe.exact:
            name = getattr(self.tokenizer, "name", "the tokenizer")
            return f"{over}: {name} cannot tokenize it in pieces with the same tokens, as {self.probe.reason}{hint}"
        if self.plan(text) is None:
            return (f"{over} with no point to split it at, a line break or a space between two "
                    f"non-space characters, in {self.max_chars:,} characters{hint}")
        return None

    def too_long_record(self, chars: int) -> str | None:
        """Why a supervised record of ``chars`` characters is refused: its ids are Python lists
        (about 10 bytes a character), so it is held to the limit whatever the tokenizer."""
        if not self.max_chars or chars <= self.max_chars:
            return None
        return (f" ({chars:,} characters in the record, over the limit of {self.max_chars:,}; "
                f"--max-document-chars raises the limit)")

    def tokenize_batch(self, texts: list[str], add_special_tokens: bool | None = None) -> list[list[int]]:
        """Ids of every text, as ``tokenizer.tokenize_batch`` (``add_special_tokens`` None or False)."""
        return [parts[0] if isinstance(parts, list) else list(itertools.chain.from_iterable(parts))
                for parts in self._id_parts(texts, add_special_tokens)]

    def encode_flat(self, texts: list[str], dtype: Any, eod: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(ids of every text back to back [T] ``dtype``, ids per text [N]); ``eod`` ends each.

        Each piece's ids become an array at once: a long text's ids never sit in a Python list
        (about 36 bytes an id against 2 or 4).
        """
        arrays: list[np.ndarray] = []
        lengths = np.zeros(len(texts), dtype=np.int64)  # [N]
        for i, parts in enumerate(self._id_parts(texts, None)):
            for part in itertools.chain(parts, [[eod]] if eod is not None else []):
                arrays.append(np.asarray(part, dtype=dtype))
                lengths[i] += len(part)
        flat = np.concatenate(arrays) if arrays else np.zeros(0, dtype=dtype)  # [T]
        return flat, lengths

    def _id_parts(self, texts: Iterable[str], special: bool | None) -> Iterator[Iterable[list[int]]]:
        """Per text, in order, its ids as consecutive parts: ``[ids]`` for short texts (encoded
        in calls of up to ``PIECES_PER_CALL * piece_chars`` characters), an iterator for long
        ones (encoded piece by piece as it is consumed, before the next text)."""
        budget = PIECES_PER_CALL * self.piece_chars
        short: list[str] = []
        chars = 0
        for text in texts:
            ends = self.plan(text)
            if ends is None and chars + len(text) <= budget:
                short.append(text)
                chars += len(text)
                continue
            yield from ([ids] for ids in self._call(short, special))
            short, chars = [], 0
            if ends is None:  # starts the next call (alone if over the budget: see too_long)
                short, chars = [text], len(text)
            else:
                yield self._pieces(text, ends, special)
        yield from ([ids] for ids in self._call(short, special))

    def _call(self, texts: list[str], special: bool | None) -> list[list[int]]:
        if not texts:
            return []
        if special is None:
            return self.tokenizer.tokenize_batch(texts)
        return self.tokenizer.tokenize_batch(texts, add_special_tokens=special)

    def _pieces(self, text: str, ends: list[int], special: bool | None) -> Iterator[list[int]]:
        """The ids of ``text`` split at ``ends``, with the post-processor's tokens once around;
        a generator, so that only one call's ids exist as Python lists at a time."""
        if special is not False:
            yield self.probe.prefix
        starts = [0, *ends[:-1]]
        for i in range(0, len(ends), PIECES_PER_CALL):
            group = [text[s:e] for s, e in zip(starts[i:i + PIECES_PER_CALL], ends[i:i + PIECES_PER_CALL])]
            yield from self.tokenizer.tokenize_batch(group, add_special_tokens=False)
        if special is not False:
            yield self.probe.suffix


def skip_too_long(docs: Iterable[Any], problem: Callable[[Any], str | None], stats: Any,
                  strict: bool) -> Iterator[Any]:
    """``docs`` (readers' ``Document``) without those ``problem`` refuses; each is counted as
    :data:`TOO_LONG` and reported as ``file:line`` by ``stats.skip`` (``strict``: fatal)."""
    for doc in docs:
        detail = problem(doc)
        if detail is None:
            yield doc
            continue
        stats.documents -= 1  # counted when read; not a document of the output
        stats.skip(TOO_LONG, f"{doc.path}:{doc.line}", strict, detail)
