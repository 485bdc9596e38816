#!/usr/bin/env python
"""preprocess_data.py throughput vs a one-document-at-a-time encode loop, side by side.

    python tools/bench/preprocess.py [--max-docs 640] [--repeats 3]

Input: the sample corpus (this Python's standard library as .jsonl.zst, ~12 MB) with a 4096-token
byte-level BPE trained on it. Each repeat runs, in alternation, the baseline (read each line,
``tokenizer.tokenize(text)`` one document at a time, write the .bin/.idx) and preprocess_data at
1 and 2 workers; medians of wall time, MB/s, tokens/s (with the ratio to the baseline) and CPU
seconds are printed. CPU seconds show the work done whatever else runs on the machine; the wall
time ratios need idle cores to mean anything (the load average is printed).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

from megatron_lite.data.indexed_dataset import (
    MMapIndexedDatasetBuilder,
    data_file_path,
    index_file_path,
)
from megatron_lite.data.readers import ReadStats, iter_documents
from megatron_lite.tokenizer import build_tokenizer_from

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _load_preprocess_data():
    """tools/preprocess_data.py (a script, not a package module) as module ``preprocess_data``.
    Registered in sys.modules at import time, so its worker pool can pickle its functions; a
    spawned worker re-runs this module and registers it again."""
    spec = importlib.util.spec_from_file_location("preprocess_data", os.path.join(REPO, "tools", "preprocess_data.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


preprocess_data = _load_preprocess_data()


def _cpu_seconds() -> float:
    """User + system CPU time of this process (all its threads) and its reaped children."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def timed(fn, *args) -> dict:
    """``fn(*args)``'s result with its CPU seconds added (pool workers are reaped by then)."""
    cpu = _cpu_seconds()
    result = fn(*args)
    return {**result, "cpu": _cpu_seconds() - cpu}


def baseline(corpus: str, vocab: str, out: str) -> dict:
    tok = build_tokenizer_from("HFTokenizer", vocab)
    stats, tokens, start = ReadStats(), 0, time.perf_counter()
    builder = MMapIndexedDatasetBuilder(data_file_path(out), np.uint16)
    for doc in iter_documents([corpus], ["text"], stats):
        ids = tok.tokenize(doc.texts["text"]) + [tok.eod]
        builder.add_item(ids)
        builder.end_document()
        tokens += len(ids)
    builder.finalize(index_file_path(out))
    return {"seconds": time.perf_counter() - start, "megabytes": stats.bytes / 1e6, "tokens": tokens}


def ours(corpus: str, vocab: str, out: str, workers: int) -> dict:
    args = preprocess_data.parse_args(["--input", corpus, "--output-prefix", out, "--tokenizer-type",
                                       "HFTokenizer", "--vocab-file", vocab, "--append-eod",
                                       "--workers", str(workers)])
    return preprocess_data.run(args)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--max-docs", type=int, default=None)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=None, help="write results as JSON")
    args = p.parse_args()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as work:
        corpus, vocab = os.path.join(work, "corpus.jsonl.zst"), os.path.join(work, "tok.json")
        extra = ["--max-docs", str(args.max_docs)] if args.max_docs else []
        subprocess.run([sys.executable, os.path.join(REPO, "tools", "make_sample_corpus.py"), "--output", corpus, *extra],
                       check=True, stdout=subprocess.DEVNULL)
        subprocess.run([sys.executable, os.path.join(REPO, "tools", "train_tokenizer.py"), "--input", corpus,
                        "--vocab-size", "4096", "--output", vocab], check=True, stdout=subprocess.DEVNULL)
        runs: dict[str, list[dict]] = {"one-at-a-time loop": [], "preprocess_data 1 worker": [],
                                       "preprocess_data 2 workers": []}
        for r in range(args.repeats):
            runs["one-at-a-time loop"].append(timed(baseline, corpus, vocab, os.path.join(work, f"b{r}")))
            runs["preprocess_data 1 worker"].append(timed(ours, corpus, vocab, os.path.join(work, f"o1_{r}"), 1))
            runs["preprocess_data 2 workers"].append(timed(ours, corpus, vocab, os.path.join(work, f"o2_{r}"), 2))
    table = {}
    for name, results in runs.items():
        seconds = statistics.median(x["seconds"] for x in results)
        cpu = statistics.median(x["cpu"] for x in results)
        table[name] = {"seconds": seconds, "MB_per_s": results[0]["megabytes"] / seconds,
                       "tokens_per_s": results[0]["tokens"] / seconds, "cpu_seconds": cpu}
    base = table["one-at-a-time loop"]["tokens_per_s"]
    import tokenizers

    # Other work on the machine skews every ratio: say how busy it was.
    first = runs["one-at-a-time loop"][0]
    print(f"input: {first['megabytes']:.1f} MB, {first['tokens']} tokens; {os.cpu_count()} cores, "
          f"load average {load_before:.2f} before / {os.getloadavg()[0]:.2f} after; "
          f"tokenizers {tokenizers.__version__}")
    print(f"{'implementation':<28}{'wall s':>8}{'MB/s':>8}{'tokens/s':>12}{'vs loop':>9}{'CPU s':>8}"
          f"   (medians of {args.repeats})")
    for name, row in table.items():
        print(f"{name:<28}{row['seconds']:>8.2f}{row['MB_per_s']:>8.2f}{row['tokens_per_s']:>12.0f}"
              f"{row['tokens_per_s'] / base:>8.2f}x{row['cpu_seconds']:>8.2f}")
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(table, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
