#!/usr/bin/env python
"""Statistics of .jsonl / .jsonl.zst / .jsonl.gz / .txt corpora: documents, bytes, characters,
tokens (with a tokenizer), per source with its share, length percentiles and histograms, and the
language mix when records carry a language.

    python tools/corpus_stats.py --input "data/*.jsonl.zst" --source-field meta.source \\
        --tokenizer-type HFTokenizer --vocab-file data/tokenizer.json --workers 4 --output stats.json

A source is the record's --source-field value (dotted for nested fields), else the input file; a
.txt input's source is its file. With several --jsonl-keys a record is one document, its texts
joined by a blank line. The inputs are read as tools/preprocess_data.py reads them: a bad line
(not UTF-8, not JSON, a missing key) is skipped, counted and reported as file:line (--strict: the
first one is fatal); a missing, truncated or corrupt input, or no documents at all, is one error
line and exit code 1. --output is written whole or not at all; a summary goes to stdout. See
docs/curation.md#statistics.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import signal
import sys
from collections import deque
from collections.abc import Iterator
from typing import Any

from megatron_lite.curation.stats import CorpusStats, summary_lines
from megatron_lite.data.readers import (
    EMPTY,
    BadRecord,
    InputError,
    ReadStats,
    RecordParser,
    expand_inputs,
    input_kind,
    iter_documents,
    string_fields,
)
from megatron_lite.tokenizer import (
    TOKENIZER_TYPES,
    build_tokenizer_from,
    tokenizer_type_arg,
)
from megatron_lite.utils.cli import run_reporting_errors
from megatron_lite.utils.files import atomic_write_text
from megatron_lite.utils.logging import setup_logging

TOOL = "corpus_stats.py"
# fork starts workers in milliseconds (the parent has not run the tokenizer yet); elsewhere spawn.
_START_METHOD = "fork" if sys.platform.startswith("linux") else "spawn"
_WORKER: dict[str, CorpusStats] = {}
Doc = tuple[str, str, "str | None"]  # (text, source, language)
Task = list[Doc]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--input", required=True,
                   help="comma-separated files or globs (.jsonl, .jsonl.zst, .jsonl.gz, .txt)")
    p.add_argument("--jsonl-keys", nargs="+", default=["text"], help="JSON keys of the text (default: text)")
    p.add_argument("--source-field", default="meta.source",
                   help="record field naming the source, dotted for nested fields; '' for the input "
                   "file only (default %(default)s)")
    p.add_argument("--lang-field", default="lang",
                   help="record field holding the language; '' for none (default %(default)s)")
    p.add_argument("--tokenizer-type", default=None, type=tokenizer_type_arg,
                   metavar="{" + ",".join(TOKENIZER_TYPES) + "}", help="count tokens with this tokenizer")
    p.add_argument("--vocab-file", default=None, help="the tokenizer's file (as preprocess_data.py)")
    p.add_argument("--merge-file", default=None, help="GPT-2 merges.txt")
    p.add_argument("--workers", type=int, default=1, help="processes that count (default 1)")
    p.add_argument("--batch-size", type=int, default=256, help="documents per worker task")
    p.add_argument("--strict", action="store_true", help="the first bad line is an error")
    p.add_argument("--txt-blocks", action="store_true",
                   help=".txt inputs: one document per blank-line-separated block (default: per file)")
    p.add_argument("--top", type=int, default=20, help="sources listed in the summary (default 20)")
    p.add_argument("--output", default=None, help="write the statistics here as JSON")
    args = p.parse_args(argv)
    if args.workers < 1 or args.batch_size < 1 or args.top < 0:
        p.error("--workers and --batch-size must be at least 1, --top at least 0")
    if (args.vocab_file or args.merge_file) and not args.tokenizer_type:
        p.error("--vocab-file and --merge-file need --tokenizer-type")
    return args


def _init_worker(args: argparse.Namespace, worker: bool = True) -> None:
    """Build the tokenizer and the empty statistics once per process (the parent's too)."""
    if worker:
        # The parent handles Ctrl-C (it stops the pool); workers' tracebacks would only add noise.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        os.environ["TOKENIZERS_PARALLELISM"] = "false"  # the processes already use every core
    tokenizer = (build_tokenizer_from(args.tokenizer_type, args.vocab_file, args.merge_file)
                 if args.tokenizer_type else None)
    _WORKER["template"] = CorpusStats(tokenizer, args.source_field or None, args.lang_field or None)


def _count(task: Task) -> CorpusStats:
    """One worker task: the statistics of a batch of documents (sent back without the tokenizer)."""
    stats = _WORKER["template"].fresh()
    for text, source, lang in task:
        stats.add({}, text, source, lang)
    return stats


def _record_parser(keys: list[str], stats: CorpusStats, fallback: str) -> RecordParser:
    """A record -> its text (the keys' texts joined), source and language; the readers' rules
    for a missing key, and an empty text counted as an empty document."""
    texts = string_fields(keys)

    def parse(record: dict) -> dict[str, Any]:
        fields = texts(record)
        if not any(text.strip() for text in fields.values()):
            raise BadRecord(EMPTY)
        return {"text": "\n\n".join(fields.values()), "source": stats.source_of(record, fallback),
                "lang": stats.lang_of(record)}

    return parse


def _documents(args: argparse.Namespace, paths: list[str], stats: CorpusStats,
               read: ReadStats) -> Iterator[Doc]:
    """(text, source, language) of every document of every input, in order."""
    for path in paths:
        if input_kind(path) == "jsonl":
            parse = _record_parser(args.jsonl_keys, stats, path)
            for doc in iter_documents([path], args.jsonl_keys, read, args.strict, parse=parse):
                yield doc.texts["text"], doc.texts["source"], doc.texts["lang"]
        else:  # a .txt document has no record: its source is the file
            for doc in iter_documents([path], ["text"], read, args.strict, args.txt_blocks):
                yield doc.texts["text"], path, None


def _tasks(docs: Iterator[Doc], size: int) -> Iterator[Task]:
    batch: Task = []
    for doc in docs:
        batch.append(doc)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _pooled(pool: Any, tasks: Iterator[Task], window: int) -> Iterator[CorpusStats]:
    """Partial statistics of every task, at most ``window`` tasks in flight (``pool.imap`` would
    read the whole corpus ahead of the workers)."""
    pending: deque = deque()
    for task in tasks:
        pending.append(pool.apply_async(_count, (task,)))
        if len(pending) >= window:
            yield pending.popleft().get()
    while pending:
        yield pending.popleft().get()


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The statistics as :meth:`CorpusStats.to_dict` plus ``inputs`` and ``skipped``; raises
    ``InputError`` (and the tokenizer's ``ValueError``/``OSError``) for unusable input."""
    paths = expand_inputs(args.input)
    # Here first, whatever --workers: a bad tokenizer file is one error, not a pool restarting
    # its workers forever.
    _init_worker(args, worker=False)
    stats = _WORKER["template"]
    read = ReadStats()
    docs = _documents(args, paths, stats, read)
    if args.workers == 1:
        for text, source, lang in docs:
            stats.add({}, text, source, lang)
    else:
        with multiprocessing.get_context(_START_METHOD).Pool(args.workers, _init_worker, (args,)) as pool:
            for partial in _pooled(pool, _tasks(docs, args.batch_size), 4 * args.workers):
                stats.merge(partial)
    skipped = dict(sorted(read.skipped.items()))
    if stats.documents == 0:
        reasons = ", ".join(f"{k}: {v}" for k, v in skipped.items()) or "nothing"
        raise InputError(f"no documents found in {', '.join(paths)} (skipped: {reasons})")
    result = {**stats.to_dict(), "tokenizer": args.tokenizer_type, "inputs": paths, "skipped": skipped}
    if args.output:
        atomic_write_text(args.output, json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(logging.INFO)
    try:
        ok, result = run_reporting_errors(TOOL, "the input", lambda: run(args), (InputError, ImportError))
    except KeyboardInterrupt:
        print(f"{TOOL}: interrupted; no output written", file=sys.stderr)
        return 130
    if not ok or result is None:
        return 1
    for line in summary_lines(result, args.top):
        print(line)
    skipped = ", ".join(f"{k}: {v}" for k, v in result["skipped"].items()) or "nothing"
    print(f"skipped: {skipped}")
    if args.output:
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
