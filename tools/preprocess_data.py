#!/usr/bin/env python
"""Tokenize .jsonl / .jsonl.zst / .jsonl.gz / .txt corpora into GPT-NeoX .bin/.idx datasets.

    python tools/preprocess_data.py --input data/corpus.jsonl.zst --output-prefix data/corpus \\
        --tokenizer-type HFTokenizer --vocab-file data/tokenizer.json --append-eod --workers 2

Writes {output_prefix}_{key}_document.bin/.idx for each --jsonl-keys key, byte-compatible with
GPT-NeoX and Megatron-LM (uint16 tokens when the vocabulary is under 65500, else int32).

Inputs: a .jsonl line is one document (the string under each key). A .txt file is one
document (its whole text); with --txt-blocks each block of lines separated by blank lines is
one document. .zst and .gz are decompressed on the fly.

Supervised fine-tuning data (.jsonl records; GPT-NeoX's label datasets, prompt tokens masked):

    python tools/preprocess_data.py --input data/sft.jsonl --output-prefix data/sft \\
        --prompt-key prompt --completion-key completion --append-eod --tokenizer-type ...
    python tools/preprocess_data.py --input data/chat.jsonl --output-prefix data/chat \\
        --chat-key messages [--only-last-turn] --tokenizer-type ...

write {output_prefix}_text_document (the tokens) and {output_prefix}_label_document (int32, same
document sizes: the token id where the loss counts, -100 where it does not). Train on them with
train_data_paths: [".../sft_text_document"] and train_label_data_paths: [".../sft_label_document"].
--prompt-key/--completion-key: the prompt (masked) is followed directly by the completion
(trained on; with --append-eod the eod after it too). --chat-key: a list of {"role", "content"}
messages, rendered with the model's chat template when its tokenizer_config.json has one
(--chat-template-from DIR, or the HFTokenizer file's directory; transformers' ids, then its eos),
else each turn as "<|ROLE|>\\n" + content + eod; the --generation-role turns (assistant) are
trained on (--only-last-turn: the last one only), everything else is masked. Records with
nothing to train on (an empty completion, no assistant turn) are skipped and counted.

Preference data (--chosen-key/--rejected-key; strings after --prompt-key, or message lists)
writes {output_prefix}_chosen_document, _chosen_label_document, _rejected_document and
_rejected_label_document (GPT-NeoX's pos/neg_train_data_paths and their label paths; --for-rm:
its reward-model labels); KTO data (--reward-key label: true/false) writes _text_document,
_label_document and _reward_document (int32, one value per record: train_reward_data_paths).
A record without chosen or rejected, or whose chosen equals its rejected, is a bad line. See
docs/data.md.

Bad input: a line that is not UTF-8, not JSON, or lacks a key (or holds the wrong type there)
is skipped, counted and reported as file:line (--strict: the first one is fatal); empty
documents are skipped and counted. A text over 64K characters is tokenized in pieces with the
ids of one call (bounded memory); a document over --max-document-chars (default 4,000,000) that
the tokenizer cannot split exactly is skipped and reported by file:line like a bad line (see
megatron_lite/tokenizer/long_text.py). A missing, truncated or corrupt input file, or no documents
at all, is an error (exit 1): outputs are written under temporary names and appear only when
complete, so an error leaves nothing.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import logging
import multiprocessing
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from megatron_lite.data.indexed_dataset import (
    MMapIndexedDatasetBuilder,
    best_dtype,
    data_file_path,
    index_file_path,
)
from megatron_lite.data.preference import (
    encode_records,
    pack_records,
    record_chars,
    record_outputs,
    write_records,
)
from megatron_lite.data.preprocess_args import (
    RECORD_MODES,
    add_record_args,
    check_record_args,
    record_parser,
)
from megatron_lite.data.readers import (
    Document,
    InputError,
    ReadStats,
    RecordParser,
    expand_inputs,
    input_kind,
    iter_documents,
)
from megatron_lite.data.sft import LABEL_DTYPE, encode_segments, prompt_completion_parser
from megatron_lite.tokenizer import TOKENIZER_TYPES, build_tokenizer_from, tokenizer_type_arg
from megatron_lite.tokenizer.long_text import (
    DEFAULT_MAX_DOCUMENT_CHARS,
    LongTextEncoder,
    skip_too_long,
)
from megatron_lite.utils.logging import get_logger, setup_logging

logger = get_logger("megatron_lite.tools.preprocess_data")
_WORKER: dict[str, Any] = {}
_TASK_CHARS = 1 << 18  # about this many characters per task (_batches)
# fork starts workers in milliseconds; the parent has not run the tokenizer yet, so the
# tokenizers library's fork warning does not apply. Other platforms use spawn.
_START_METHOD = "fork" if sys.platform.startswith("linux") else "spawn"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--input", required=True,
                   help="comma-separated files or globs (.jsonl, .jsonl.zst, .jsonl.gz, .txt)")
    p.add_argument("--jsonl-keys", nargs="+", default=None,
                   help="JSON keys to tokenize; one output per key (default: text)")
    p.add_argument("--num-docs", type=int, default=None, help="stop after this many documents")
    p.add_argument("--tokenizer-type", required=True, type=tokenizer_type_arg, metavar="{" + ",".join(TOKENIZER_TYPES) + "}")
    p.add_argument("--vocab-file", default=None, help="tokenizers JSON (HFTokenizer), GPT-2 vocab.json, SentencePiece "
                   "tokenizer.model (SPMTokenizer) or .tiktoken rank file (TiktokenTokenizer)")
    p.add_argument("--merge-file", default=None, help="GPT-2 merges.txt")
    p.add_argument("--append-eod", action="store_true", help="end every document with the eod token")
    p.add_argument("--ftfy", action="store_true", help="fix mojibake with ftfy before tokenizing")
    p.add_argument("--output-prefix", required=True)
    p.add_argument("--dataset-impl", default="mmap", choices=["mmap"], help="only mmap (GPT-NeoX's default)")
    p.add_argument("--workers", type=int, default=1, help="tokenizer processes")
    p.add_argument("--batch-size", type=int, default=256, help="documents per worker task")
    p.add_argument("--log-interval", type=int, default=10000, help="documents between progress updates")
    p.add_argument("--strict", action="store_true", help="the first bad line is an error")
    p.add_argument("--max-document-chars", type=int, default=DEFAULT_MAX_DOCUMENT_CHARS, metavar="N",
                   help="longer documents the tokenizer cannot encode in pieces with the same tokens "
                   "(and longer supervised records) are skipped and reported; 0: no limit "
                   "(default %(default)s)")
    p.add_argument("--txt-blocks", action="store_true",
                   help=".txt inputs: one document per blank-line-separated block (default: per file)")
    add_record_args(p)
    args = p.parse_args(argv)
    if args.workers < 1 or args.batch_size < 1 or args.log_interval < 1:
        p.error("--workers, --batch-size and --log-interval must be at least 1")
    if args.max_document_chars < 0:
        p.error("--max-document-chars must be at least 0")
    check_record_args(p, args)
    return args


def _init_worker(tokenizer_type: str, vocab_file: str | None, merge_file: str | None,
                 append_eod: bool, use_ftfy: bool, max_chars: int, threads: bool = True) -> None:
    """Build the tokenizer once per process (and once in the parent for --workers 1)."""
    if not threads:  # a pool worker
        # Worker processes already use every core: the tokenizers library's own thread pool
        # would only oversubscribe them (measured: 2 single-threaded processes encode ~1.4x
        # faster than 2 processes of 2 threads each on 2 cores).
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
        # Ctrl-C reaches the whole process group: the parent handles it (removes the partial
        # outputs, stops the pool); workers printing their own tracebacks would only add noise.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    tok = build_tokenizer_from(tokenizer_type, vocab_file, merge_file)
    # encoder: the tokenizer, with long texts in pieces (bounded memory, same ids)
    _WORKER.update(tok=tok, encoder=LongTextEncoder(tok, max_chars), dtype=best_dtype(tok.vocab_size),
                   eod=append_eod, fix=None)
    if use_ftfy:
        import ftfy

        _WORKER["fix"] = ftfy.fix_text


def _encode(batch: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """One task: texts -> (all their ids back to back, the number of ids of each text).

    Two arrays, not a list of lists: they cross the process boundary as raw bytes and the
    parent writes them with one call.
    """
    if _WORKER["fix"] is not None:
        batch = [_WORKER["fix"](text) for text in batch]
    eod = _WORKER["tok"].eod if _WORKER["eod"] else None
    return _WORKER["encoder"].encode_flat(batch, _WORKER["dtype"], eod)


def _encode_sft(batch: list[list[Any]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One supervised task: documents of segments -> (tokens, labels, tokens per document)."""
    return encode_segments(_WORKER["encoder"], batch, _WORKER["dtype"], _WORKER["fix"])


def _encode_records(task: list[Any]) -> tuple:
    """One chat / preference / KTO task: see megatron_lite.data.preference.encode_records."""
    return encode_records(_WORKER["encoder"], task, _WORKER["dtype"], _WORKER["fix"])


def _batches(docs: Iterator[Document], size: int, limit: int | None, chars: Callable[[Document], int],
             pack: Callable[[list[Document]], Any], max_chars: int = _TASK_CHARS) -> Iterator[Any]:
    """``(pack of up to size documents, their characters)`` per task: about ``max_chars``
    characters at most, so that a few long documents do not leave one worker busy while the
    others wait (a longer document ends its task); stops after ``limit`` documents."""
    batch: list[Document] = []
    total = 0
    for doc in itertools.islice(docs, limit):
        batch.append(doc)
        total += chars(doc)
        if len(batch) == size or total >= max_chars:
            yield pack(batch), total
            batch, total = [], 0
    if batch:
        yield pack(batch), total


def _text_chars(keys: list[str], doc: Document) -> int:
    return sum(len(doc.texts[k]) for k in keys)


def _key_major(keys: list[str], batch: list[Document]) -> list[str]:
    """[k0 of every doc, k1 of every doc, ...]: one tokenizer call covers every key."""
    return [doc.texts[k] for k in keys for doc in batch]


def _segment_chars(doc: Document) -> int:
    return sum(len(text) for text, _ in doc.texts["segments"] if text is not None)


def _ordered_map(pool: Any, fn: Callable, items: Iterable[tuple[Any, int]], window: int,
                 workers: int, max_chars: int) -> Iterator[Any]:
    """Like ``pool.imap`` (results in input order) but with at most ``window`` tasks in flight:
    memory stays flat (``imap`` reads its whole input ahead of the workers). ``items`` are
    (task, characters); beyond one task per worker, at most ``max_chars`` characters are in
    flight, so a run of huge documents is not held ``window`` at a time."""
    pending: deque = deque()
    chars = 0
    for item, size in items:
        pending.append((pool.apply_async(fn, (item,)), size))
        chars += size
        while len(pending) >= window or (len(pending) > workers and chars > max_chars):
            result, size = pending.popleft()
            chars -= size
            yield result.get()
    while pending:
        yield pending.popleft()[0].get()


class _Progress:
    """tqdm bar on a terminal; otherwise a log line every ``--log-interval`` documents."""

    def __init__(self, interval: int) -> None:
        from tqdm import tqdm

        self.bar = tqdm(desc="preprocess", unit="doc", mininterval=1.0, disable=None, dynamic_ncols=True)
        self.interval, self.next_log = interval, interval
        self.start = time.perf_counter()

    def update(self, docs: int, total_docs: int, stats: ReadStats, tokens: int) -> None:
        seconds = max(time.perf_counter() - self.start, 1e-9)
        mbps, tps = stats.bytes / 1e6 / seconds, tokens / seconds
        if not self.bar.disable:
            self.bar.update(docs)
            self.bar.set_postfix(MBps=f"{mbps:.2f}", tokps=f"{tps:.0f}", refresh=False)
        elif total_docs >= self.next_log:
            self.next_log = (total_docs // self.interval + 1) * self.interval
            logger.info("%d documents (%.0f docs/s, %.2f MB/s, %.0f tokens/s)", total_docs,
                        total_docs / seconds, mbps, tps)

    def close(self) -> None:
        self.bar.close()


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Preprocess as ``args`` says; returns the summary. Raises ``InputError`` (and the
    tokenizer's ``ValueError``/``FileNotFoundError``) for unusable input; nothing is left then."""
    paths = expand_inputs(args.input)
    init = (args.tokenizer_type, args.vocab_file, args.merge_file, args.append_eod, args.ftfy,
            args.max_document_chars)
    # In this process first, whatever --workers: a bad tokenizer file or a missing ftfy is an
    # error here (a Pool whose initializer fails restarts its workers forever instead).
    _init_worker(*init)
    dtype = _WORKER["dtype"]
    outputs = _outputs(args, dtype)
    if args.mode != "text":  # before any work: a .txt input would only fail when reached
        for path in paths:
            if input_kind(path) != "jsonl":
                raise InputError(f"{path}: {args.mode} mode reads JSON records (.jsonl, .jsonl.zst, .jsonl.gz)")
    os.makedirs(os.path.dirname(os.path.abspath(args.output_prefix)), exist_ok=True)
    builders: dict[str, MMapIndexedDatasetBuilder] = {}
    pool = None
    stats = ReadStats()
    start = time.perf_counter()
    try:
        for key, (prefix, out_dtype) in outputs.items():
            builders[key] = MMapIndexedDatasetBuilder(data_file_path(prefix), out_dtype)
        if args.workers > 1:
            pool = multiprocessing.get_context(_START_METHOD).Pool(args.workers, _init_worker, (*init, False))
        docs = iter_documents(paths, args.jsonl_keys, stats, args.strict, args.txt_blocks, _parser(args))
        docs = skip_too_long(docs, _too_long(args), stats, args.strict)
        written, tokens = _consume(args, pool, docs, builders, stats)
        if written == 0:
            raise InputError(f"no documents found in {', '.join(paths)} "
                             f"(skipped: {_skipped(stats)})")
        for key, builder in builders.items():  # all outputs complete before any appears
            builder.prepare(index_file_path(outputs[key][0]))
        for builder in builders.values():
            builder.commit()
    except BaseException:
        for builder in builders.values():
            builder.abort()
        raise
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
    return {"documents": written, "tokens": tokens, "megabytes": stats.bytes / 1e6,
            "seconds": time.perf_counter() - start, "skipped": dict(stats.skipped),
            "outputs": [prefix for prefix, _ in outputs.values()], "dtype": np.dtype(dtype).name,
            "dtypes": {prefix: np.dtype(d).name for prefix, d in outputs.values()}}


def _outputs(args: argparse.Namespace, dtype: Any) -> dict[str, tuple[str, Any]]:
    """{builder name: (output prefix, dtype)}: one per key, or the tokens and labels of SFT data."""
    if args.mode == "text":
        return {k: (f"{args.output_prefix}_{k}_document", dtype) for k in args.jsonl_keys}
    if args.mode in RECORD_MODES:  # chat, preference and KTO data: megatron_lite.data.preference
        return record_outputs(args.mode, args.output_prefix, dtype)
    # GPT-NeoX's preprocess_data_with_mask.py names: {prefix}_text_document, {prefix}_label_document.
    return {"text": (f"{args.output_prefix}_text_document", dtype),
            "label": (f"{args.output_prefix}_label_document", LABEL_DTYPE)}


def _too_long(args: argparse.Namespace) -> Callable[[Document], str | None]:
    """Why a document is refused for its size, None when it is not (--max-document-chars)."""
    encoder = _WORKER["encoder"]
    if args.mode in RECORD_MODES:
        return lambda doc: encoder.too_long_record(record_chars(doc))
    if args.mode != "text":
        return lambda doc: encoder.too_long_record(_segment_chars(doc))
    return lambda doc: next(filter(None, (encoder.too_long(doc.texts[k]) for k in args.jsonl_keys)), None)


def _parser(args: argparse.Namespace) -> RecordParser | None:
    """How a JSON record becomes a document: None (a string per --jsonl-keys key) or SFT's."""
    if args.mode == "prompt":
        return prompt_completion_parser(args.prompt_key, args.completion_key, args.append_eod)
    if args.mode in RECORD_MODES:  # in this process: a chat template is rendered here
        return record_parser(args, _WORKER["tok"], _WORKER["fix"])
    return None


def _consume(args: argparse.Namespace, pool: Any, docs: Iterator[Document],
             builders: dict[str, MMapIndexedDatasetBuilder], stats: ReadStats) -> tuple[int, int]:
    """Tokenize every document (in the pool, or here) and append it to the outputs."""
    keys = args.jsonl_keys
    if args.mode == "text":
        jobs = _batches(docs, args.batch_size, args.num_docs, functools.partial(_text_chars, keys),
                        functools.partial(_key_major, keys))
        encode, write = _encode, functools.partial(_write_keys, builders, keys)
    elif args.mode in RECORD_MODES:
        jobs = _batches(docs, args.batch_size, args.num_docs, record_chars, pack_records)
        encode, write = _encode_records, functools.partial(write_records, builders)
    else:
        jobs = _batches(docs, args.batch_size, args.num_docs, _segment_chars,
                        lambda batch: [doc.texts["segments"] for doc in batch])
        encode, write = _encode_sft, functools.partial(_write_sft, builders)
    # A few tasks per worker in flight keeps them busy while bounding memory.
    encoded = (_ordered_map(pool, encode, jobs, 4 * args.workers, args.workers, 4 * args.workers * _TASK_CHARS)
               if pool else (encode(job) for job, _ in jobs))
    progress = _Progress(args.log_interval)
    written = tokens = 0
    try:
        for result in encoded:
            n, t = write(result)
            written += n
            tokens += t
            progress.update(n, written, stats, tokens)
    finally:
        progress.close()
    return written, tokens


def _write_keys(builders: dict[str, MMapIndexedDatasetBuilder], keys: list[str],
                result: tuple[np.ndarray, np.ndarray]) -> tuple[int, int]:
    """One text task's ids into each key's output; returns (documents, tokens)."""
    flat, lengths = result
    n = len(lengths) // len(keys)
    bounds = np.concatenate([[0], np.cumsum(lengths)])  # [n * keys + 1] token offsets
    for j, key in enumerate(keys):  # key-major: texts j*n .. (j+1)*n are key j
        builders[key].add_documents(flat[bounds[j * n] : bounds[(j + 1) * n]], lengths[j * n : (j + 1) * n])
    return n, int(lengths.sum())


def _write_sft(builders: dict[str, MMapIndexedDatasetBuilder],
               result: tuple[np.ndarray, np.ndarray, np.ndarray]) -> tuple[int, int]:
    """One SFT task's tokens and labels (same lengths) into the two outputs."""
    tokens, labels, lengths = result
    builders["text"].add_documents(tokens, lengths)
    builders["label"].add_documents(labels, lengths)
    return len(lengths), int(lengths.sum())


def _skipped(stats: ReadStats) -> str:
    return ", ".join(f"{reason}: {count}" for reason, count in sorted(stats.skipped.items())) or "nothing"


def _print_summary(s: dict[str, Any]) -> None:
    seconds = max(s["seconds"], 1e-9)
    print(f"documents: {s['documents']}  tokens: {s['tokens']}  input: {s['megabytes']:.2f} MB  "
          f"time: {s['seconds']:.1f} s  ({s['documents'] / seconds:.0f} docs/s, "
          f"{s['megabytes'] / seconds:.2f} MB/s, {s['tokens'] / seconds:.0f} tokens/s)")
    print(f"skipped: {', '.join(f'{k}: {v}' for k, v in sorted(s['skipped'].items())) or 'nothing'}")
    for out in s["outputs"]:
        print(f"wrote {out}.bin / {out}.idx ({s['dtypes'][out]})")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(logging.INFO)
    try:
        summary = run(args)
    except KeyboardInterrupt:
        print("preprocess_data.py: interrupted; no output written", file=sys.stderr)
        return 130
    except (InputError, ValueError, OSError, ImportError) as exc:  # OSError: FileNotFoundError too
        print(f"preprocess_data.py: error: {exc}", file=sys.stderr)
        return 1
    _print_summary(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
