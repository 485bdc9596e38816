"""The per-document stages, run in the worker processes: language, Gopher repetition and
quality, C4, blocklist, decontamination, the deduplication keys, PII.

A document is the record's text fields (``--jsonl-keys``); the rules judge their texts joined
by a blank line, the edits (C4 lines, decontamination cuts, PII) apply to each field. Stages run
in FineWeb's order (language, repetition, quality, C4) and the first one that rejects names the
reason. The deduplication keys are computed from the filtered text before PII replacement (two
documents that differ only in an e-mail address are still duplicates); the index itself lives in
the parent, which sees every document in input order (dedup.py).

Each worker keeps the seconds and bytes each stage took, so the run can report MB/s per worker
for each stage.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections import Counter
from typing import Any, NamedTuple

from megatron_lite.curation.config import CurationConfig
from megatron_lite.curation.dedup import exact_key, normalized_words, signatures
from megatron_lite.curation.filters import Rejection, c4_filter, gopher_quality, gopher_repetition
from megatron_lite.curation.langid import LanguageFilter
from megatron_lite.curation.stats import CorpusStats


class Outcome(NamedTuple):
    """What the per-document stages decided about one document."""

    reason: str | None  # None: kept (unless a duplicate); else the stage that removed it
    rule: str | None
    detail: str | None
    texts: dict[str, str] | None  # the kept document's fields after the edits
    pii: dict[str, int]  # kind -> replacements
    lang: str | None
    exact: int | None  # exact-duplicate key
    minhash: Any  # rensa.RMinHash, or None (no words, or near dedup off)
    edits: dict[str, int]  # "c4_lines_removed", "decontamination_cut": counts
    tokens: tuple[int, int | None] | None = None  # with a tokenizer: (input tokens, kept tokens or None)


def _joined(texts: dict[str, str]) -> str:
    return next(iter(texts.values())) if len(texts) == 1 else "\n\n".join(texts.values())


def build_decontaminator(cfg: CurationConfig) -> Any:
    """The evaluation sets' n-grams (read once, in the parent), or None."""
    d = cfg.decontamination
    if not d.enabled:
        return None
    from megatron_lite.curation.decontaminate import Decontaminator

    return Decontaminator.from_files(list(d.eval_files), ngram=d.ngram, mode=d.mode)


class DocumentCleaner:
    """The per-document stages for a config. Built in the parent (a bad blocklist or evaluation
    file fails before any work) and inherited by forked workers."""

    def __init__(self, cfg: CurationConfig, decontaminator: Any = None, tokenizer: Any = None) -> None:
        self.cfg = cfg
        # Token counts for the report's statistics are made here, in the workers: tokenizing
        # is the costliest statistic and the parent is a single process.
        self._tokens = CorpusStats(tokenizer).count_tokens if tokenizer is not None else None
        self.language = LanguageFilter(cfg.language) if cfg.language.enabled else None
        self.decontaminator = decontaminator
        self.pii = self.blocklist = None
        if cfg.pii.enabled:
            from megatron_lite.curation.pii import KINDS, PIIAnonymizer, PIIConfig

            options = {k: v for k, v in dataclasses.asdict(cfg.pii).items() if k != "enabled"}
            options["kinds"] = tuple(options["kinds"] if options["kinds"] is not None else KINDS)
            # The blocklist is a filter stage of its own (its own reason), checked once on the
            # joined text; the anonymizer then only replaces PII, field by field.
            self.pii = PIIAnonymizer(PIIConfig(**{**options, "blocklist_file": None}))
            if cfg.pii.blocklist_file:
                self.blocklist = PIIAnonymizer(PIIConfig(kinds=(), blocklist_file=cfg.pii.blocklist_file,
                                                         blocklist_max=cfg.pii.blocklist_max))
        # C4's line rules apply to each field; its document rules to the fields together.
        self._c4_lines = dataclasses.replace(cfg.c4, min_sentences=None)
        self._c4_document = dataclasses.replace(cfg.c4, javascript_lines=False, policy_lines=False,
                                                min_words_per_line=None, max_word_length=None,
                                                terminal_punctuation_lines=False)
        self._stages = self._stage_list()
        self.seconds: Counter = Counter()  # stage -> seconds in this process
        self.bytes: Counter = Counter()  # stage -> bytes of text it judged

    def _timed(self, stage: str, nbytes: int, start: float) -> float:
        now = time.perf_counter()
        self.seconds[stage] += now - start
        self.bytes[stage] += nbytes
        return now

    def process_batch(self, batch: list[dict[str, str]]) -> list[Outcome]:
        """Every per-document stage for each document of ``batch``, stage by stage: each stage
        runs over the documents still in, so its code and tables stay in the CPU caches (measured
        25% less CPU than every stage per document in turn); signatures in one rensa call."""
        docs = [_Doc(texts) for texts in batch]
        live = docs
        for name, stage, counted in self._stages:
            start = time.perf_counter()
            stage(live)
            self._timed(name, sum(d.nbytes for d in live) if counted else 0, start)
            live = [d for d in live if d.rejection is None]
        if self.cfg.dedup.near and live:
            start = time.perf_counter()
            for d, sig in zip(live, signatures([d.norm for d in live], self.cfg.dedup)):
                d.minhash = sig
            self._timed("signature", sum(d.nbytes for d in live), start)
        if self.pii is not None and live:
            start = time.perf_counter()
            self._pii(live)
            self._timed("pii", sum(d.nbytes for d in live), start)
        return [d.outcome(self._tokens) for d in docs]

    def _stage_list(self) -> list[tuple[str, Any, bool]]:
        """``(name, stage, counts its bytes)`` of the enabled filter stages in order, then the
        deduplication keys (timed with the signatures, whose MinHash step counts the bytes)."""
        cfg = self.cfg
        stages: list[tuple[str, Any, bool]] = []
        if self.language is not None:
            stages.append(("language", self._language, True))
        for name, rule in (("gopher_repetition", gopher_repetition), ("gopher_quality", gopher_quality)):
            if getattr(cfg, name).enabled:
                stages.append((name, functools.partial(self._gopher, rule, getattr(cfg, name)), True))
        if cfg.c4.enabled:
            stages.append(("c4", self._c4, True))
        if self.blocklist is not None:
            stages.append(("blocklist", self._blocklist, True))
        if self.decontaminator is not None:
            stages.append(("decontamination", self._decontaminate, True))
        if cfg.dedup.exact or cfg.dedup.near:
            stages.append(("signature", self._dedup_keys, False))
        return stages

    def _language(self, docs: list[_Doc]) -> None:
        for d in docs:
            d.lang, score = self.language.label(d.text)
            why = self.language.rejects(d.lang, score)
            if why:
                d.rejection = Rejection("language", "language", why)

    @staticmethod
    def _gopher(rule: Any, cfg: Any, docs: list[_Doc]) -> None:
        """A Gopher rule; the whitespace words are split once for both rules."""
        for d in docs:
            if d.words is None:
                d.words = d.text.split()
            d.rejection = rule(d.text, d.words, cfg)

    def _c4(self, docs: list[_Doc]) -> None:
        for d in docs:
            texts, d.rejection = self._c4_one(d.texts, d.edits)
            d.set_texts(texts)

    def _c4_one(self, texts: dict[str, str], edits: Counter) -> tuple[dict[str, str], Rejection | None]:
        if len(texts) == 1:
            # One field is the whole document: one pass with every rule decides exactly what the
            # line pass and the document pass below decide (the document pass re-checks lorem
            # ipsum and '{', which removing lines cannot create), at half the cost.
            (key, value), = texts.items()
            text, removed, rejection = c4_filter(value, self.cfg.c4)
            edits["c4_lines_removed"] += removed
            return {key: text}, rejection
        out: dict[str, str] = {}
        for key, value in texts.items():
            out[key], removed, _ = c4_filter(value, self._c4_lines)
            edits["c4_lines_removed"] += removed
        _, _, rejection = c4_filter(_joined(out), self._c4_document)
        return out, rejection

    def _blocklist(self, docs: list[_Doc]) -> None:
        limit = self.cfg.pii.blocklist_max
        for d in docs:
            hits = self.blocklist.blocked(d.text)
            if hits > limit:
                d.rejection = Rejection("blocklist", "blocklist", f"{hits} blocklist hits > {limit}")

    def _decontaminate(self, docs: list[_Doc]) -> None:
        for d in docs:
            out: dict[str, str] = {}
            for key, value in d.texts.items():
                new, hit = self.decontaminator.check(value)
                if new is None:
                    detail = f"{hit['eval_file']} item {hit['item']}: {hit['ngram']!r}"
                    d.rejection = Rejection("decontamination", self.decontaminator.mode, detail)
                    break
                d.edits["decontamination_cut"] += hit is not None
                out[key] = new
            else:
                d.set_texts(out)

    def _dedup_keys(self, docs: list[_Doc]) -> None:
        for d in docs:
            d.norm = normalized_words(d.text)
            d.exact = exact_key(d.norm) if self.cfg.dedup.exact else None

    def _pii(self, docs: list[_Doc]) -> None:
        for d in docs:
            out: dict[str, str] = {}
            for key, value in d.texts.items():
                new, found = self.pii.anonymize(value)
                d.pii.update({k: v for k, v in found.items() if v})
                if new is None:  # mode drop
                    detail = ", ".join(f"{k}: {v}" for k, v in sorted(d.pii.items()))
                    d.rejection = Rejection("pii", "drop", detail)
                    break
                out[key] = new
            else:
                d.texts = out


class _Doc:
    """One document on its way through the stages."""

    __slots__ = ("texts", "text", "original", "nbytes", "lang", "words", "rejection", "edits", "pii",
                 "norm", "exact", "minhash")

    def __init__(self, texts: dict[str, str]) -> None:
        self.texts = texts
        self.text = self.original = _joined(texts)
        self.nbytes = len(self.text.encode("utf-8"))
        self.lang: str | None = None
        self.words: list[str] | None = None  # whitespace words of ``text``, split once
        self.rejection: Rejection | None = None
        self.edits: Counter = Counter()
        self.pii: Counter = Counter()
        self.norm: list[str] = []
        self.exact: int | None = None
        self.minhash: Any = None

    def set_texts(self, texts: dict[str, str]) -> None:
        """The fields after an edit; the joined text is re-made only when one changed."""
        if any(texts[k] is not v for k, v in self.texts.items()):
            self.texts, self.text, self.words = texts, _joined(texts), None

    def outcome(self, tokens: Any) -> Outcome:
        """The Outcome; ``tokens`` (or None) counts the tokens of the input and the kept text."""
        edits = dict(self.edits)
        r = self.rejection
        if r is not None:
            counted = (tokens(self.original), None) if tokens else None
            return Outcome(r.stage, r.rule, r.detail, None, {}, self.lang, None, None, edits, counted)
        counted = (tokens(self.original), tokens(_joined(self.texts))) if tokens else None
        return Outcome(None, None, None, self.texts, dict(self.pii), self.lang, self.exact, self.minhash, edits,
                       counted)
