"""Cleaning on one machine: read -> per-document stages in worker processes -> dedup in the
parent, in input order -> outputs (sink.py).

The parent reads and parses the inputs (the readers of ``preprocess_data.py``: same formats,
same bad-line rules), sends batches of documents to a ``multiprocessing`` pool (the worker stages
of cleaner.py, MinHash signatures included) and receives the outcomes in input order, at most
``4 x workers`` batches in flight, so memory stays flat except for the deduplication index
(dedup.py states its growth per document). With ``workers == 1`` everything runs here.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import signal
import sys
import time
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from megatron_lite.curation.cleaner import DocumentCleaner, Outcome, build_decontaminator
from megatron_lite.curation.config import CurationConfig, implied_threshold
from megatron_lite.curation.dedup import DedupIndex, doc_key
from megatron_lite.curation.sink import OUTPUTS, Sink
from megatron_lite.data.readers import (
    EMPTY,
    BadRecord,
    InputError,
    ReadStats,
    expand_inputs,
    input_kind,
    iter_documents,
    string_fields,
)
from megatron_lite.utils.logging import get_logger

logger = get_logger(__name__)
_START_METHOD = "fork" if sys.platform.startswith("linux") else "spawn"
_RECORD = "\0record"  # the parser's field holding the whole JSON record (no JSON key is this)
_WORKER: dict[str, DocumentCleaner] = {}
# The parent's own stages in the timings (the others are the workers').
READ_STAGE, OUTPUT_STAGE = "parent: read + parse", "parent: dedup index + outputs + statistics"


@dataclass
class CleanOptions:
    """What ``tools/clean_data.py`` was asked to do."""

    input: str | list[str]
    output_dir: str
    cfg: CurationConfig
    preset: str = "web"
    keys: list[str] = field(default_factory=lambda: ["text"])
    workers: int = 1
    batch_size: int = 64
    strict: bool = False
    txt_blocks: bool = False
    force: bool = False
    log_interval: int = 10000
    # Token counts in the report's statistics (as tools/corpus_stats.py): None counts none.
    tokenizer_type: str | None = None
    vocab_file: str | None = None
    merge_file: str | None = None

    def build_tokenizer(self) -> Any:
        """The tokenizer the statistics count tokens with, or None."""
        if not self.tokenizer_type:
            return None
        from megatron_lite.tokenizer import build_tokenizer_from

        return build_tokenizer_from(self.tokenizer_type, self.vocab_file, self.merge_file)


def _record_parser(keys: list[str]) -> Any:
    """Keeps the whole record (every field goes to the output) beside the texts of ``keys``."""
    texts_of = string_fields(keys)

    def parse(record: dict) -> dict[str, Any]:
        texts = texts_of(record)
        if all(not t.strip() for t in texts.values()):
            raise BadRecord(EMPTY)
        return {_RECORD: record, **texts}

    return parse


def read_documents(paths: list[str], keys: list[str], stats: ReadStats, strict: bool,
                   txt_blocks: bool, files: list[int] | None = None) -> Iterator[tuple[int, dict, dict]]:
    """``(key, record, texts)`` for every document of the input files ``files`` (default: all),
    in order; ``key`` is dedup.doc_key(file index, line)."""
    parse = _record_parser(keys)
    for index in files if files is not None else range(len(paths)):
        path = paths[index]
        jsonl = input_kind(path) == "jsonl"
        for doc in iter_documents([path], keys, stats, strict, txt_blocks, parse if jsonl else None):
            texts = {k: doc.texts[k] for k in keys}
            yield doc_key(index, doc.line), (doc.texts[_RECORD] if jsonl else dict(texts)), texts


def prepare_output_dir(path: str, force: bool) -> None:
    """Create ``path``; one that holds anything needs ``force`` (our outputs are replaced)."""
    if os.path.isdir(path) and os.listdir(path) and not force:
        raise InputError(f"output directory {path} is not empty (--force replaces {', '.join(OUTPUTS)} there)")
    if os.path.exists(path) and not os.path.isdir(path):
        raise InputError(f"output directory {path} is a file")
    os.makedirs(path, exist_ok=True)


def _init_worker(cleaner: DocumentCleaner) -> None:
    # Ctrl-C reaches the whole process group: the parent handles it (removes partial outputs).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # the worker processes already use every core
    _WORKER["cleaner"] = cleaner


def process_batch(batch: list[dict[str, str]]) -> tuple[list[Outcome], Counter, Counter]:
    """One task in a worker: the outcomes, and the seconds and bytes each stage took."""
    cleaner = _WORKER["cleaner"]
    outcomes = cleaner.process_batch(batch)
    seconds, nbytes = cleaner.seconds.copy(), cleaner.bytes.copy()
    cleaner.seconds.clear()
    cleaner.bytes.clear()
    return outcomes, seconds, nbytes


def _batches(docs: Iterator[tuple[int, dict, dict]], size: int) -> Iterator[list[tuple[int, dict, dict]]]:
    while batch := list(itertools.islice(docs, size)):
        yield batch


def _ordered(pool: Any, batches: Iterator[list], window: int) -> Iterator[tuple[list, tuple]]:
    """``(batch, process_batch(its texts))`` in input order, at most ``window`` in flight."""
    if pool is None:  # one process: run each batch here
        for batch in batches:
            yield batch, process_batch([t for _, _, t in batch])
        return
    pending: deque = deque()
    for batch in batches:
        pending.append((batch, pool.apply_async(process_batch, ([t for _, _, t in batch],))))
        if len(pending) >= window:
            done, result = pending.popleft()
            yield done, result.get()
    while pending:
        done, result = pending.popleft()
        yield done, result.get()


def _timed_iter(items: Iterator[Any], seconds: Counter, name: str) -> Iterator[Any]:
    """``items``, adding the time spent producing each to ``seconds[name]``."""
    while True:
        t0 = time.perf_counter()
        try:
            item = next(items)
        except StopIteration:
            seconds[name] += time.perf_counter() - t0
            return
        seconds[name] += time.perf_counter() - t0
        yield item


def base_report(opts: CleanOptions, paths: list[str], stats: ReadStats) -> dict[str, Any]:
    """What the report says of the run besides the documents (the same for every executor)."""
    d = opts.cfg.dedup
    return {"inputs": paths, "preset": opts.preset, "jsonl_keys": opts.keys, "config": opts.cfg.to_dict(),
            "tokenizer": opts.tokenizer_type,
            "input_bytes": stats.bytes, "skipped": dict(sorted(stats.skipped.items())),
            "dedup": {"exact": d.exact, "near": d.near, "num_perm": d.num_perm, "bands": d.bands, "rows": d.rows,
                      "ngram": d.ngram, "implied_threshold": round(implied_threshold(d.bands, d.rows), 4)}}


def no_documents(paths: list[str], stats: ReadStats) -> InputError:
    skipped = ", ".join(f"{k}: {v}" for k, v in sorted(stats.skipped.items())) or "nothing"
    return InputError(f"no documents found in {', '.join(paths)} (skipped: {skipped})")


def timing_summary(seconds: Counter, nbytes: Counter, input_bytes: int, wall: float) -> dict[str, Any]:
    """MB/s per worker for each stage: the bytes a stage judged over the seconds it took."""
    rates = {s: round(nbytes[s] / 1e6 / seconds[s], 3) for s in sorted(seconds) if seconds[s] > 0 and nbytes[s]}
    return {"seconds": round(wall, 3), "megabytes": input_bytes / 1e6,
            "mb_per_s": round(input_bytes / 1e6 / max(wall, 1e-9), 3),
            "stage_seconds": {s: round(v, 3) for s, v in sorted(seconds.items())},
            "stage_mb_per_s_per_worker": rates}


def run_local(opts: CleanOptions) -> tuple[dict[str, Any], dict[str, Any]]:
    """Clean as ``opts`` says with a process pool; returns ``(report, timings)``. Raises
    ``InputError`` / ``ValueError`` / ``OSError`` for unusable input; no output appears then."""
    start = time.perf_counter()
    paths = expand_inputs(opts.input)
    cleaner = DocumentCleaner(opts.cfg, build_decontaminator(opts.cfg), opts.build_tokenizer())
    prepare_output_dir(opts.output_dir, opts.force)
    stats, index = ReadStats(), DedupIndex(opts.cfg.dedup)
    seconds, nbytes = Counter(), Counter()
    sink = Sink(opts.output_dir, paths, opts.keys, opts.cfg.stats.source_field, bool(opts.tokenizer_type))
    pool = None
    try:
        if opts.workers > 1:
            pool = multiprocessing.get_context(_START_METHOD).Pool(opts.workers, _init_worker, (cleaner,))
        else:
            _init_worker_here(cleaner)
        docs = _timed_iter(read_documents(paths, opts.keys, stats, opts.strict, opts.txt_blocks),
                           seconds, READ_STAGE)
        next_log = opts.log_interval
        for batch, (outcomes, sec, nb) in _ordered(pool, _batches(docs, opts.batch_size), 4 * opts.workers):
            seconds.update(sec)
            nbytes.update(nb)
            t0 = time.perf_counter()
            for (key, record, _), outcome in zip(batch, outcomes):
                duplicate = index.check(key, outcome.exact, outcome.minhash) if outcome.reason is None else None
                sink.add(key, record, outcome, duplicate)
            seconds[OUTPUT_STAGE] += time.perf_counter() - t0
            if sink.input_docs >= next_log:
                next_log += opts.log_interval
                logger.info("%d documents, %d kept (%.2f MB/s)", sink.input_docs, sink.cleaned.records,
                            stats.bytes / 1e6 / (time.perf_counter() - start))
        if sink.input_docs == 0:
            raise no_documents(paths, stats)
        report = sink.finish(base_report(opts, paths, stats))
    except BaseException:
        sink.abort()
        raise
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
    nbytes[READ_STAGE] = nbytes[OUTPUT_STAGE] = stats.bytes
    return report, timing_summary(seconds, nbytes, stats.bytes, time.perf_counter() - start)


def _init_worker_here(cleaner: DocumentCleaner) -> None:
    """--workers 1: the stages run in this process (Ctrl-C stays with it)."""
    _WORKER["cleaner"] = cleaner
