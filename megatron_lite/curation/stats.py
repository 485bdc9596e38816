"""Corpus statistics: documents, bytes, characters and tokens, per source and per language, with
length percentiles and histograms, in bounded memory and mergeable exactly.

Workers each fill a :class:`CorpusStats` and the parent :meth:`~CorpusStats.merge`\\ s them: every
count is an integer sum, so the merged statistics equal those of one pass over the whole corpus,
in any order.

Lengths (characters, and tokens with a tokenizer) go into a histogram of fixed bins, the same in
every process: one bin per integer up to 11, then 8 bins per doubling (edges ``ceil(2**(k/8))``,
ratio 1.09) up to 2**40; no per-document list. Percentiles (p5 ... p99, nearest rank) are read
from it, interpolated inside the bin that holds the rank and clamped to the exact min and max:
exact below 12, otherwise off by less than the bin's width, at most 9.1% of the value (plus one
for the rounding of the edges). The reported histogram groups the bins by powers of two.

Sources are a record field (``source_field``, dotted for nested fields: ``meta.source``) or the
given fallback (the input file); languages a field too (``lang_field``, default ``lang``) or the
``lang`` argument of :meth:`~CorpusStats.add` (from language identification). Each keeps at most
``max_names`` names: past that, new names are counted under ``(other)`` and a merge keeps the
largest (a source field holding one value per document would otherwise grow without bound); the
split between names and ``(other)`` then depends on the order, the totals stay exact.
"""

from __future__ import annotations

import bisect
import math
from typing import Any

import numpy as np

from megatron_lite.utils.logging import get_logger

logger = get_logger(__name__)

PERCENTILES = (5, 25, 50, 75, 95, 99)
OTHER, NO_LANGUAGE = "(other)", "(none)"
DEFAULT_MAX_NAMES = 1000
_BINS_PER_DOUBLING, _DOUBLINGS = 8, 40
# Lower edges of the length bins; the last bin has no upper edge.
EDGES: tuple[int, ...] = tuple(sorted({0, *(math.ceil(2 ** (k / _BINS_PER_DOUBLING))
                                            for k in range(_BINS_PER_DOUBLING * _DOUBLINGS + 1))}))
_FIELDS = ("documents", "bytes", "characters", "tokens")


def field_value(record: dict, field: str | None) -> Any:
    """``record[field]``, or for a dotted name the nested value (``meta.source`` ->
    ``record["meta"]["source"]``; a literal ``"meta.source"`` key first); None when absent."""
    if not field:
        return None
    if field in record:
        return record[field]
    value: Any = record
    for part in field.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


class LengthHistogram:
    """Counts of lengths in the fixed bins :data:`EDGES`, with exact count, sum, min and max."""

    def __init__(self) -> None:
        self.counts = [0] * len(EDGES)
        self.n = self.total = 0
        self.min: int | None = None
        self.max: int | None = None

    def add(self, length: int) -> None:
        self.counts[bisect.bisect_right(EDGES, length) - 1] += 1
        self.n += 1
        self.total += length
        self.min = length if self.min is None else min(self.min, length)
        self.max = length if self.max is None else max(self.max, length)

    def merge(self, other: LengthHistogram) -> None:
        self.counts = [a + b for a, b in zip(self.counts, other.counts)]
        self.n += other.n
        self.total += other.total
        for bound, pick in (("min", min), ("max", max)):
            mine, theirs = getattr(self, bound), getattr(other, bound)
            setattr(self, bound, theirs if mine is None else mine if theirs is None else pick(mine, theirs))

    def percentile(self, p: float) -> int | None:
        """The nearest-rank ``p``-th percentile, interpolated inside its bin (module docstring)."""
        if self.n == 0 or self.min is None or self.max is None:
            return None
        rank = max(1, math.ceil(p / 100 * self.n))  # 1-based
        below = 0
        for i, count in enumerate(self.counts):
            if below + count >= rank:
                lo = EDGES[i]
                hi = EDGES[i + 1] if i + 1 < len(EDGES) else self.max + 1
                value = lo + int((hi - lo) * (rank - below - 0.5) / count)
                return min(max(value, self.min), self.max)
            below += count
        return self.max  # not reached: the counts sum to n

    def histogram(self) -> list[dict[str, int]]:
        """``[{"from", "to", "documents"}]``: lengths ``from <= length < to`` in bins of powers of
        two (``[0, 1)``, ``[1, 2)``, ``[2, 4)``, ...), from the first non-empty bin to the last."""
        doublings: dict[int, int] = {}
        for lo, count in zip(EDGES, self.counts):
            if count:
                doublings[lo.bit_length()] = doublings.get(lo.bit_length(), 0) + count
        if not doublings:
            return []
        return [{"from": 0 if b == 0 else 1 << (b - 1), "to": 1 << b, "documents": doublings.get(b, 0)}
                for b in range(min(doublings), max(doublings) + 1)]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"min": self.min, "max": self.max,
                               "mean": self.total / self.n if self.n else None}
        out.update({f"p{p}": self.percentile(p) for p in PERCENTILES})
        out["histogram"] = self.histogram()
        return out


class _Tally:
    """Per name (source or language): documents, bytes, characters, tokens; at most
    ``max_names`` names, and :data:`OTHER` for the rest."""

    def __init__(self, max_names: int) -> None:
        self.max_names = max_names
        self.names: dict[str, list[int]] = {}

    def _named(self) -> int:
        return len(self.names) - (OTHER in self.names)

    def add(self, name: str, values: list[int]) -> None:
        if name not in self.names and self._named() >= self.max_names:
            name = OTHER
        self.add_exactly(name, values)

    def merge(self, other: _Tally) -> None:
        for name, values in other.names.items():
            self.add_exactly(name, values)
        if self._named() > self.max_names:  # keep the largest; fold the rest into OTHER
            ranked = sorted((n for n in self.names if n != OTHER), key=lambda n: (-self.names[n][0], n))
            for name in ranked[self.max_names:]:
                self.add_exactly(OTHER, self.names.pop(name))

    def add_exactly(self, name: str, values: list[int]) -> None:
        """Add to ``name`` whatever the bound (merge folds afterwards)."""
        row = self.names.setdefault(name, [0] * len(_FIELDS))
        for i, value in enumerate(values):
            row[i] += value

    def to_dict(self, totals: list[int], with_tokens: bool) -> dict[str, dict[str, Any]]:
        """{name: counts and ``share`` of each total}, largest first (by documents, then name)."""
        fields = _FIELDS if with_tokens else _FIELDS[:3]
        out: dict[str, dict[str, Any]] = {}
        for name in sorted(self.names, key=lambda n: (-self.names[n][0], n)):
            row = self.names[name]
            entry: dict[str, Any] = {f: row[i] for i, f in enumerate(fields)}
            entry["share"] = {f: row[i] / totals[i] if totals[i] else 0.0 for i, f in enumerate(fields)}
            out[name] = entry
        return out


class CorpusStats:
    """Statistics of a corpus, one document at a time (module docstring).

    Picklable: a pickle carries the counts, not the tokenizer, so a worker's partial statistics
    go back to the parent cheaply. To add documents with token counts after unpickling, set
    ``tokenizer`` again or pass ``tokens`` to :meth:`add`.
    """

    def __init__(self, tokenizer: Any = None, source_field: str | None = "meta.source",
                 lang_field: str | None = "lang", max_names: int = DEFAULT_MAX_NAMES) -> None:
        self.tokenizer = tokenizer
        self.counts_tokens = tokenizer is not None
        self.source_field, self.lang_field = source_field, lang_field
        self.totals = [0] * len(_FIELDS)  # documents, bytes, characters, tokens
        self.char_lengths, self.token_lengths = LengthHistogram(), LengthHistogram()
        self.sources, self.languages = _Tally(max_names), _Tally(max_names)
        self._encoder: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "tokenizer": None, "_encoder": None}

    def fresh(self) -> CorpusStats:
        """Empty statistics with the same settings, sharing the tokenizer (and its checked
        long-text encoder): a worker's next partial result."""
        other = CorpusStats(self.tokenizer, self.source_field, self.lang_field, self.sources.max_names)
        other.counts_tokens, other._encoder = self.counts_tokens, self._encoder
        return other

    @property
    def documents(self) -> int:
        return self.totals[0]

    def source_of(self, record: dict, fallback: str) -> str:
        """The record's ``source_field`` value (as text), else ``fallback``."""
        value = field_value(record, self.source_field)
        return fallback if value is None or value == "" else str(value)

    def lang_of(self, record: dict) -> str | None:
        """The record's ``lang_field`` value (as text), None when absent."""
        value = field_value(record, self.lang_field)
        return None if value is None or value == "" else str(value)

    def add(self, record: dict, text: str, source: str, lang: str | None = None,
            tokens: int | None = None) -> None:
        """Count one document: ``source`` is the fallback when the record has no source field,
        ``lang`` (language identification) wins over the record's language field, ``tokens``
        (already counted) over the tokenizer."""
        if self.counts_tokens and tokens is None:
            tokens = self._count_tokens(text)
        values = [1, len(text.encode("utf-8", "surrogatepass")), len(text), tokens or 0]
        for i, value in enumerate(values):
            self.totals[i] += value
        self.char_lengths.add(len(text))
        if self.counts_tokens:
            self.token_lengths.add(values[3])
        self.sources.add(self.source_of(record, source), values)
        self.languages.add(lang or self.lang_of(record) or NO_LANGUAGE, values)

    def count_tokens(self, text: str) -> int:
        """The tokens of ``text`` with the tokenizer (long texts in pieces, the same ids)."""
        return self._count_tokens(text)

    def _count_tokens(self, text: str) -> int:
        if self.tokenizer is None:
            raise ValueError("CorpusStats counts tokens but has no tokenizer (unpickled?): set "
                             ".tokenizer or pass tokens= to add()")
        if self._encoder is None:
            # Long texts in pieces with the same ids: bounded tokenizer memory (long_text.py).
            from megatron_lite.tokenizer.long_text import LongTextEncoder

            self._encoder = LongTextEncoder(self.tokenizer, max_chars=0)  # 0: no length limit
        _, lengths = self._encoder.encode_flat([text], np.int32)
        return int(lengths[0])

    def merge(self, other: CorpusStats) -> None:
        """Add ``other``'s counts (a worker's partial statistics): exact, in any order."""
        if other.counts_tokens != self.counts_tokens:
            raise ValueError("cannot merge corpus statistics with and without token counts")
        self.totals = [a + b for a, b in zip(self.totals, other.totals)]
        self.char_lengths.merge(other.char_lengths)
        self.token_lengths.merge(other.token_lengths)
        self.sources.merge(other.sources)
        self.languages.merge(other.languages)

    def to_dict(self) -> dict[str, Any]:
        """Totals, ``sources`` and ``languages`` (counts and shares), length statistics."""
        fields = _FIELDS if self.counts_tokens else _FIELDS[:3]
        out: dict[str, Any] = {f: self.totals[i] for i, f in enumerate(fields)}
        out["source_field"] = self.source_field
        out["sources"] = self.sources.to_dict(self.totals, self.counts_tokens)
        out["length_chars"] = self.char_lengths.to_dict()
        if self.counts_tokens:
            out["length_tokens"] = self.token_lengths.to_dict()
        if set(self.languages.names) - {NO_LANGUAGE}:  # only when some document has a language
            out["languages"] = self.languages.to_dict(self.totals, self.counts_tokens)
        return out


def _lengths_line(name: str, lengths: dict[str, Any]) -> str:
    cells = "  ".join(f"p{p}: {lengths[f'p{p}']}" for p in PERCENTILES)
    return f"{name}: {cells}  mean: {lengths['mean']:.1f}  max: {lengths['max']}"


def summary_lines(stats: dict[str, Any], top: int = 20) -> list[str]:
    """A human summary of :meth:`CorpusStats.to_dict`'s output, one line per entry."""
    tokens = "tokens" in stats
    lines = [f"documents: {stats['documents']:,}  bytes: {stats['bytes']:,}  characters: "
             f"{stats['characters']:,}" + (f"  tokens: {stats['tokens']:,}" if tokens else "")]
    if stats["documents"]:
        lines.append(_lengths_line("length (characters)", stats["length_chars"]))
        if tokens:
            lines.append(_lengths_line("length (tokens)", stats["length_tokens"]))
    sources = list(stats["sources"].items())
    lines.append(f"sources ({stats['source_field'] or 'input file'}; {len(sources)}"
                 f"{f', the largest {top}' if len(sources) > top else ''}): "
                 "documents (share), bytes (share)" + (", tokens (share)" if tokens else ""))
    for name, entry in sources[:top]:
        cells = [f"{entry[f]:,} ({entry['share'][f]:.1%})" for f in ("documents", "bytes", "tokens")
                 if f in entry]
        lines.append(f"  {name}: {', '.join(cells)}")
    if "languages" in stats:
        mix = ", ".join(f"{name} {entry['share']['documents']:.1%}" for name, entry in stats["languages"].items())
        lines.append(f"languages (share of documents): {mix}")
    return lines
