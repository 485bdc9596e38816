"""The parent's end of the pipeline: documents in input order -> the four outputs.

``cleaned.jsonl.zst`` (kept records, every field kept, the text fields edited),
``removed.jsonl.zst`` (removed records with ``reason``, ``rule``, ``detail``, ``origin`` =
``file:line`` and, for a duplicate, ``duplicate_of`` = the ``file:line`` of the earliest document
it duplicates), ``report.json`` and ``report.html``. Everything is written under temporary names
in the output directory and renamed into place only when all four are complete; the bytes depend
only on the inputs and the config (one zstd frame per file, level 3, no threads; no time stamps),
so a re-run, or a run with another ``--workers`` or executor, gives byte-identical files.

Removed records hold the *original* text, PII included (so a wrongly removed document can be
restored): keep ``removed.jsonl.zst`` as private as the input.
"""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from typing import Any

from megatron_lite.curation.cleaner import Outcome
from megatron_lite.curation.dedup import EXACT, NEAR, split_key
from megatron_lite.curation.stats import CorpusStats
from megatron_lite.utils.files import unique_tmp_path

OUTPUTS = ("cleaned.jsonl.zst", "removed.jsonl.zst", "report.json", "report.html")
CURATION_FIELDS = ("reason", "rule", "detail", "origin", "duplicate_of")
EXAMPLES_PER_REASON = 3
_EXCERPT_CHARS = 400
_FLUSH_BYTES = 1 << 20
_DUPLICATE_RULES = {EXACT: "normalized_text_hash", NEAR: "minhash_lsh"}


class ZstJsonlWriter:
    """JSON lines into one zstd frame under a temporary name; :meth:`commit` renames it."""

    def __init__(self, path: str) -> None:
        import zstandard

        self.path, self.tmp = path, unique_tmp_path(path)
        self._file = open(self.tmp, "wb")
        self._writer = zstandard.ZstdCompressor(level=3).stream_writer(self._file, closefd=False)
        self._pending: list[bytes] = []
        self._size = 0
        self.records = 0

    def write(self, record: dict[str, Any]) -> None:
        line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
        self._pending.append(line)
        self._size += len(line)
        self.records += 1
        if self._size >= _FLUSH_BYTES:
            self._flush()

    def _flush(self) -> None:
        self._writer.write(b"".join(self._pending))
        self._pending, self._size = [], 0

    def close(self) -> None:
        import zstandard

        if self._file.closed:
            return
        self._flush()
        self._writer.flush(zstandard.FLUSH_FRAME)
        self._writer.close()
        self._file.close()

    def commit(self) -> None:
        self.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        if not self._file.closed:
            self._writer.close()
            self._file.close()
        if os.path.exists(self.tmp):
            os.unlink(self.tmp)


def removed_record(record: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
    """The record with the curation ``fields`` added; a field of the record with the same name
    is kept as ``original_<name>``."""
    out = dict(record)
    for name, value in fields.items():
        if name in out:
            out[f"original_{name}"] = out.pop(name)
        out[name] = value
    return out


class Sink:
    """Writes the outputs and gathers what the report needs; feed it documents in input order."""

    def __init__(self, output_dir: str, paths: list[str], keys: list[str], source_field: str | None,
                 count_tokens: bool = False) -> None:
        self.output_dir, self.paths, self.keys = output_dir, paths, keys
        self.cleaned = ZstJsonlWriter(os.path.join(output_dir, OUTPUTS[0]))
        self.removed = ZstJsonlWriter(os.path.join(output_dir, OUTPUTS[1]))
        self.before, self.after = CorpusStats(source_field=source_field), CorpusStats(source_field=source_field)
        # The workers count the tokens (Outcome.tokens); the statistics only add them up.
        self.before.counts_tokens = self.after.counts_tokens = count_tokens
        self.reasons: Counter = Counter()
        self.rules: Counter = Counter()
        self.pii: Counter = Counter()
        self.edits: Counter = Counter()
        self.by_source: dict[str, Counter] = defaultdict(Counter)
        self.examples: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.input_docs = 0

    def origin(self, key: int) -> str:
        file_index, line = split_key(key)
        return f"{self.paths[file_index]}:{line}"

    def add(self, key: int, record: dict[str, Any], outcome: Outcome, duplicate: tuple[str, int] | None) -> None:
        """One document: ``record`` as read, the per-document ``outcome``, and the dedup decision."""
        self.input_docs += 1
        text = "\n\n".join(record[k] for k in self.keys)
        source = self.before.source_of(record, os.path.basename(self.paths[split_key(key)[0]]))
        tokens = outcome.tokens or (None, None)
        self.before.add(record, text, source, outcome.lang, tokens[0])
        reason, rule, detail = outcome.reason, outcome.rule, outcome.detail
        fields: dict[str, Any] = {}
        if reason is None and duplicate is not None:
            reason, rule = duplicate[0], _DUPLICATE_RULES[duplicate[0]]
            fields["duplicate_of"] = self.origin(duplicate[1])
            detail = f"of {fields['duplicate_of']}"
        if reason is None:
            kept = {**record, **(outcome.texts or {})}
            self.cleaned.write(kept)
            self.after.add(kept, "\n\n".join(kept[k] for k in self.keys), source, outcome.lang, tokens[1])
            self.pii.update(outcome.pii)
            self.edits.update(outcome.edits)
            return
        origin = self.origin(key)
        self.reasons[reason] += 1
        self.rules[f"{reason}.{rule}"] += 1
        self.by_source[source][reason] += 1
        self.removed.write(removed_record(record, {"reason": reason, "rule": rule, "detail": detail,
                                                   "origin": origin, **fields}))
        if len(self.examples[reason]) < EXAMPLES_PER_REASON:
            self.examples[reason].append({"origin": origin, "rule": rule, "detail": detail,
                                          "excerpt": text[:_EXCERPT_CHARS]})

    def finish(self, report: dict[str, Any]) -> dict[str, Any]:
        """Complete every output, then rename all four into place; returns the report."""
        from megatron_lite.curation.report import render_html

        report.update(self.summary())
        self.cleaned.close()
        self.removed.close()
        texts = {OUTPUTS[2]: json.dumps(report, indent=2, ensure_ascii=False, sort_keys=True) + "\n",
                 OUTPUTS[3]: render_html(report)}
        tmps: dict[str, str] = {}
        try:
            for name, text in texts.items():
                path = os.path.join(self.output_dir, name)
                tmps[path] = unique_tmp_path(path)
                with open(tmps[path], "w", encoding="utf-8") as handle:
                    handle.write(text)
            self.cleaned.commit()
            self.removed.commit()
            for path, tmp in tmps.items():
                os.replace(tmp, path)
        finally:
            for tmp in tmps.values():
                if os.path.exists(tmp):
                    os.unlink(tmp)
        return report

    def abort(self) -> None:
        self.cleaned.abort()
        self.removed.abort()

    def summary(self) -> dict[str, Any]:
        return {
            "input_docs": self.input_docs,
            "output_docs": self.cleaned.records,
            "removed_docs": self.removed.records,
            "removed": dict(sorted(self.reasons.items())),
            "removed_by_rule": dict(sorted(self.rules.items())),
            "removed_by_source": {s: dict(sorted(c.items())) for s, c in sorted(self.by_source.items())},
            "pii": dict(sorted(self.pii.items())),
            "edits": dict(sorted(self.edits.items())),
            "examples": dict(sorted(self.examples.items())),
            "stats": {"input": self.before.to_dict(), "output": self.after.to_dict()},
        }
