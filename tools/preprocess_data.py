#!/usr/bin/env python
"""Tokenize .jsonl / .jsonl.zst / .jsonl.gz / .txt corpora into GPT-NeoX .bin/.idx datasets.

    python tools/preprocess_data.py --input data/corpus.jsonl.zst --output-prefix data/corpus \\
        --tokenizer-type HFTokenizer --vocab-file data/tokenizer.json --append-eod --workers 2

Writes ``{output_prefix}_{key}_document.bin/.idx`` per ``--jsonl-keys`` key, byte-compatible
with GPT-NeoX and Megatron-LM. A .jsonl line is one document (the text under each key); a .txt
file is one document, or one per blank-line-separated block with ``--txt-blocks``. Bad lines
(not JSON, missing key, not UTF-8) are skipped, counted and reported with file:line
(``--strict``: the first one is fatal); empty documents are skipped and counted. A missing or
truncated input, or no documents at all, is an error: nothing is written (outputs appear only
when complete).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time
from collections import deque
from collections.abc import Iterator

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from megatron_lite.data.indexed_dataset import (  # noqa: E402
    MMapIndexedDatasetBuilder,
    best_dtype,
    data_file_path,
    index_file_path,
)
from megatron_lite.data.readers import InputError, ReadStats, expand_inputs, iter_documents  # noqa: E402
from megatron_lite.tokenizer import TOKENIZER_TYPES, build_tokenizer_from  # noqa: E402

_WORKER: dict = {}
# fork starts workers in milliseconds; the parent has not run the tokenizer yet, so the
# tokenizers library's fork warning does not apply. Other platforms use spawn.
_START_METHOD = "fork" if sys.platform.startswith("linux") else "spawn"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--input", required=True, help="comma-separated files or globs (.jsonl, .jsonl.zst, .jsonl.gz, .txt)")
    p.add_argument("--jsonl-keys", nargs="+", default=["text"], help="JSON keys to tokenize; one output per key")
    p.add_argument("--num-docs", type=int, default=None, help="stop after this many documents")
    p.add_argument("--tokenizer-type", required=True, choices=TOKENIZER_TYPES)
    p.add_argument("--vocab-file", default=None, help="tokenizers JSON or GPT-2 vocab.json")
    p.add_argument("--merge-file", default=None, help="GPT-2 merges.txt")
    p.add_argument("--append-eod", action="store_true", help="end every document with the eod token")
    p.add_argument("--ftfy", action="store_true", help="fix mojibake with ftfy before tokenizing")
    p.add_argument("--output-prefix", required=True)
    p.add_argument("--dataset-impl", default="mmap", choices=["mmap"], help="only mmap (GPT-NeoX's default)")
    p.add_argument("--workers", type=int, default=1, help="tokenizer processes")
    p.add_argument("--batch-size", type=int, default=256, help="documents per worker task")
    p.add_argument("--log-interval", type=int, default=10000, help="documents between progress updates")
    p.add_argument("--strict", action="store_true", help="the first bad line is an error")
    p.add_argument("--txt-blocks", action="store_true", help=".txt: one document per blank-line block")
    return p.parse_args(argv)


def _init_worker(tokenizer_type: str, vocab_file: str | None, merge_file: str | None,
                 append_eod: bool, use_ftfy: bool, threads: bool = True) -> None:
    if not threads:
        # Worker processes already use every core: the tokenizers library's own thread pool
        # would only oversubscribe them (measured: 2 single-threaded processes encode ~1.4x
        # faster than 2 processes of 2 threads each on 2 cores).
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
    _WORKER["tok"] = build_tokenizer_from(tokenizer_type, vocab_file, merge_file)
    _WORKER["dtype"] = best_dtype(_WORKER["tok"].vocab_size)
    _WORKER["eod"] = append_eod
    _WORKER["ftfy"] = use_ftfy


def _encode(batch: list[str]) -> list[np.ndarray]:
    """One task: a batch of texts -> token arrays (ftfy, batch encode, eod).

    Arrays, not lists: they cross the process boundary as raw bytes instead of pickled ints.
    """
    tok = _WORKER["tok"]
    if _WORKER["ftfy"]:
        import ftfy

        batch = [ftfy.fix_text(text) for text in batch]
    ids = tok.tokenize_batch(batch)
    if _WORKER["eod"]:
        for doc in ids:
            doc.append(tok.eod)
    return [np.asarray(doc, dtype=_WORKER["dtype"]) for doc in ids]


def _batches(docs: Iterator[dict[str, str]], keys: list[str], size: int,
             limit: int | None, max_chars: int = 1 << 18) -> Iterator[list[str]]:
    """Texts of up to ``size`` documents (and about ``max_chars`` characters, so that a few
    long documents do not leave one worker busy while the others wait) per task, key-major
    ([k0 of every doc, k1 of every doc, ...]); stops after ``limit`` documents."""
    batch: list[dict[str, str]] = []
    chars = 0
    for n, doc in enumerate(docs):
        if limit is not None and n >= limit:
            break
        batch.append(doc)
        chars += sum(len(doc[k]) for k in keys)
        if len(batch) == size or chars >= max_chars:
            yield [doc[k] for k in keys for doc in batch]
            batch, chars = [], 0
    if batch:
        yield [doc[k] for k in keys for doc in batch]


def _ordered_map(pool, fn, items, window: int):
    """Like ``pool.imap`` but with at most ``window`` tasks in flight: memory stays flat
    (``imap`` reads its whole input ahead)."""
    pending: deque = deque()
    for item in items:
        pending.append((item, pool.apply_async(fn, (item,))))
        if len(pending) >= window:
            first, result = pending.popleft()
            yield first, result.get()
    while pending:
        first, result = pending.popleft()
        yield first, result.get()


def run(args: argparse.Namespace) -> dict:
    paths = expand_inputs(args.input)
    tok = build_tokenizer_from(args.tokenizer_type, args.vocab_file, args.merge_file)
    dtype = best_dtype(tok.vocab_size)
    outputs = {k: f"{args.output_prefix}_{k}_document" for k in args.jsonl_keys}
    os.makedirs(os.path.dirname(os.path.abspath(args.output_prefix)), exist_ok=True)
    builders = {k: MMapIndexedDatasetBuilder(data_file_path(p), dtype) for k, p in outputs.items()}
    stats, tokens, written = ReadStats(), 0, 0
    init = (args.tokenizer_type, args.vocab_file, args.merge_file, args.append_eod, args.ftfy)
    pool = None
    if args.workers > 1:
        pool = multiprocessing.get_context(_START_METHOD).Pool(args.workers, _init_worker, (*init, False))
    else:
        _init_worker(*init)
    bar = _progress(args)
    start = time.perf_counter()
    try:
        docs = iter_documents(paths, args.jsonl_keys, stats, args.strict, args.txt_blocks)
        jobs = _batches(docs, args.jsonl_keys, args.batch_size, args.num_docs)
        encoded = (_ordered_map(pool, _encode, jobs, 4 * args.workers)
                   if pool else ((texts, _encode(texts)) for texts in jobs))
        for texts, ids in encoded:
            n = len(texts) // len(args.jsonl_keys)
            written += n
            for j, key in enumerate(args.jsonl_keys):
                for doc_ids in ids[j * n:(j + 1) * n]:
                    builders[key].add_item(doc_ids)
                    builders[key].end_document()
                    tokens += len(doc_ids)
            _update(bar, n, stats, tokens, start)
        if written == 0:
            raise InputError(f"no documents found in {', '.join(paths)} "
                             f"(skipped: {dict(stats.skipped) or 'none'})")
        for key, builder in builders.items():
            builder.finalize(index_file_path(outputs[key]))
    except BaseException:
        for builder in builders.values():
            builder.abort()
        raise
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()
    seconds = time.perf_counter() - start
    return {"documents": written, "tokens": tokens,
            "megabytes": stats.bytes / 1e6, "seconds": seconds, "skipped": dict(stats.skipped),
            "outputs": list(outputs.values()), "dtype": dtype.__name__}


def _progress(args):
    from tqdm import tqdm

    return tqdm(desc="preprocess", unit="doc", mininterval=2.0, miniters=args.log_interval,
                disable=None, dynamic_ncols=True)


def _update(bar, n: int, stats: ReadStats, tokens: int, start: float) -> None:
    seconds = max(time.perf_counter() - start, 1e-9)
    bar.update(n)
    bar.set_postfix(MBps=f"{stats.bytes / 1e6 / seconds:.2f}", tokps=f"{tokens / seconds:.0f}", refresh=False)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        summary = run(args)
    except (InputError, FileNotFoundError, ValueError) as exc:
        print(f"preprocess_data.py: error: {exc}", file=sys.stderr)
        return 1
    s = summary
    print(f"documents: {s['documents']}  tokens: {s['tokens']}  input: {s['megabytes']:.2f} MB  "
          f"time: {s['seconds']:.1f} s  ({s['documents'] / max(s['seconds'], 1e-9):.0f} docs/s, "
          f"{s['megabytes'] / max(s['seconds'], 1e-9):.2f} MB/s, "
          f"{s['tokens'] / max(s['seconds'], 1e-9):.0f} tokens/s)")
    print(f"skipped: {s['skipped'] or 'nothing'}")
    for out in s["outputs"]:
        print(f"wrote {out}.bin / {out}.idx ({s['dtype']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
