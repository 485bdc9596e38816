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
import time
from collections import Counter
from typing import Any, NamedTuple

from megatron_lite.curation.config import CurationConfig
from megatron_lite.curation.dedup import exact_key, normalized_words, signatures
from megatron_lite.curation.filters import Rejection, c4_filter, gopher_quality, gopher_repetition
from megatron_lite.curation.langid import LanguageFilter


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

    def __init__(self, cfg: CurationConfig, decontaminator: Any = None) -> None:
        self.cfg = cfg
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
        self.seconds: Counter = Counter()  # stage -> seconds in this process
        self.bytes: Counter = Counter()  # stage -> bytes of text it judged

    def _timed(self, stage: str, nbytes: int, start: float) -> float:
        now = time.perf_counter()
        self.seconds[stage] += now - start
        self.bytes[stage] += nbytes
        return now

    def process_batch(self, batch: list[dict[str, str]]) -> list[Outcome]:
        """Every per-document stage for each document; signatures in one rensa call."""
        partial = [self._filter(texts) for texts in batch]
        if self.cfg.dedup.near:
            start = time.perf_counter()
            todo = [i for i, p in enumerate(partial) if p[0] is None]
            sigs = signatures([partial[i][2] for i in todo], self.cfg.dedup)
            self._timed("signature", sum(partial[i][3] for i in todo), start)
            minhashes = dict(zip(todo, sigs))
        else:
            minhashes = {}
        return [self._finish(p, minhashes.get(i)) for i, p in enumerate(partial)]

    def _filter(self, texts: dict[str, str]) -> tuple[Any, ...]:
        """The filter stages: ``(rejection, texts, normalized words, bytes, lang, exact, edits)``."""
        cfg, edits = self.cfg, Counter()
        text = _joined(texts)
        nbytes = len(text.encode("utf-8"))
        lang, start = None, time.perf_counter()
        if self.language is not None:
            lang, score = self.language.label(text)
            start = self._timed("language", nbytes, start)
            why = self.language.rejects(lang, score)
            if why:
                return Rejection("language", "language", why), texts, None, nbytes, lang, None, edits
        words = text.split()
        for stage, enabled, rule in (("gopher_repetition", cfg.gopher_repetition.enabled, gopher_repetition),
                                     ("gopher_quality", cfg.gopher_quality.enabled, gopher_quality)):
            if enabled:
                rejection = rule(text, words, getattr(cfg, stage))
                start = self._timed(stage, nbytes, start)
                if rejection:
                    return rejection, texts, None, nbytes, lang, None, edits
        if cfg.c4.enabled:
            texts, rejection = self._c4(texts, edits)
            text = _joined(texts)
            start = self._timed("c4", nbytes, start)
            if rejection:
                return rejection, texts, None, nbytes, lang, None, edits
        rejection = self._blocklist_and_decontamination(texts, text, nbytes, edits)
        if isinstance(rejection, Rejection):
            return rejection, texts, None, nbytes, lang, None, edits
        texts, text = rejection or texts, _joined(rejection or texts)
        start = time.perf_counter()
        norm = normalized_words(text) if cfg.dedup.exact or cfg.dedup.near else []
        exact = exact_key(norm) if cfg.dedup.exact else None
        self._timed("signature", 0, start)  # its bytes are counted with the MinHash step
        return None, texts, norm, nbytes, lang, exact, edits

    def _c4(self, texts: dict[str, str], edits: Counter) -> tuple[dict[str, str], Rejection | None]:
        out: dict[str, str] = {}
        for key, value in texts.items():
            out[key], removed, _ = c4_filter(value, self._c4_lines)
            edits["c4_lines_removed"] += removed
        _, _, rejection = c4_filter(_joined(out), self._c4_document)
        return out, rejection

    def _blocklist_and_decontamination(self, texts: dict[str, str], text: str, nbytes: int,
                                       edits: Counter) -> Rejection | dict[str, str] | None:
        """A rejection, the fields after decontamination cuts, or None (unchanged)."""
        start = time.perf_counter()
        if self.blocklist is not None:
            hits = self.blocklist.blocked(text)
            start = self._timed("blocklist", nbytes, start)
            if hits > self.cfg.pii.blocklist_max:
                return Rejection("blocklist", "blocklist", f"{hits} blocklist hits > {self.cfg.pii.blocklist_max}")
        if self.decontaminator is None:
            return None
        out: dict[str, str] = {}
        for key, value in texts.items():
            new, hit = self.decontaminator.check(value)
            if new is None:
                self._timed("decontamination", nbytes, start)
                detail = f"{hit['eval_file']} item {hit['item']}: {hit['ngram']!r}"
                return Rejection("decontamination", self.decontaminator.mode, detail)
            edits["decontamination_cut"] += hit is not None
            out[key] = new
        self._timed("decontamination", nbytes, start)
        return out

    def _finish(self, partial: tuple[Any, ...], minhash: Any) -> Outcome:
        rejection, texts, _, nbytes, lang, exact, edits = partial
        if rejection is not None:
            return Outcome(rejection.stage, rejection.rule, rejection.detail, None, {}, lang, None, None, dict(edits))
        counts: Counter = Counter()
        if self.pii is not None:
            start = time.perf_counter()
            out: dict[str, str] = {}
            for key, value in texts.items():
                new, found = self.pii.anonymize(value)
                counts.update({k: v for k, v in found.items() if v})
                if new is None:  # mode drop
                    self._timed("pii", nbytes, start)
                    detail = ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))
                    return Outcome("pii", "drop", detail, None, {}, lang, None, None, dict(edits))
                out[key] = new
            texts = out
            self._timed("pii", nbytes, start)
        return Outcome(None, None, None, texts, dict(counts), lang, exact, minhash, dict(edits))
