#!/usr/bin/env python
"""megatron_lite vs a nanoGPT-style loop on shakespeare-char, side by side in one run.

    python tools/bench/shakespeare.py --input path/to/tinyshakespeare.txt [--iters 2000] [--repeats 2]
        [--reference-keep-freed-memory] [--out r.json]

Both train nanoGPT's CPU config (4 layers, 4 heads, width 128, context 64, batch 12, lr 1e-3
cosine to 1e-4 after 100 warmup steps, AdamW betas 0.9/0.99, weight decay 0.1, dropout 0) on the
first 90% of the characters and report the validation loss on the last 10% and the time of
their training loops. megatron_lite runs as a user runs it: ``deepy.py train.py
configs/cpu_shakespeare.yml`` with the data preprocessed to .bin/.idx (byte-level
CharLevelTokenizer, which on this ASCII corpus is character-level).

With ``--repeats N`` the two alternate, the order swapping each repeat (this machine's speed
drifts by up to 30% over minutes); each repeat's ratio and the medians are printed.
megatron_lite's workers keep freed host memory for reuse (``megatron_lite/launcher/allocator.py``);
``--reference-keep-freed-memory`` gives the reference loop the same setting, to show how much
of the difference that setting is.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
from nanogpt_style import NanoConfig  # a sibling module: this script's directory is on sys.path
from nanogpt_style import train as nano_train

from megatron_lite.data.indexed_dataset import (
    MMapIndexedDatasetBuilder,
    data_file_path,
    index_file_path,
)
from megatron_lite.launcher.allocator import keep_freed_memory

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def write_dataset(prefix: str, data: np.ndarray) -> None:
    with MMapIndexedDatasetBuilder(data_file_path(prefix), np.uint16) as builder:
        builder.add_item(data.astype(np.uint16))
        builder.end_document()
        builder.finalize(index_file_path(prefix))


def run_megatron_lite(work: str, iters: int, eval_iters: int) -> dict:
    log_interval = min(50, iters)  # each record's ms_per_iter averages this many iterations
    overrides = {
        "train_data_paths": [os.path.join(work, "train_text_document")],
        "valid_data_paths": [os.path.join(work, "valid_text_document")],
        "train_iters": iters, "lr_decay_iters": iters, "warmup": min(1.0, 100 / iters),  # 100 steps, as nanogpt_style (all of a shorter run)
        "eval_interval": iters, "eval_iters": eval_iters, "log_interval": log_interval,
        "checkpoint_factor": None, "log_dir": os.path.join(work, "logs"),
    }
    path = os.path.join(work, "overrides.yml")
    with open(path, "w") as handle:
        json.dump(overrides, handle)
    start = time.perf_counter()
    subprocess.run([sys.executable, os.path.join(REPO, "deepy.py"), os.path.join(REPO, "train.py"),
                    os.path.join(REPO, "configs", "cpu_shakespeare.yml"), path],
                   check=True, cwd=work, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    run_dir = next(os.scandir(os.path.join(work, "logs"))).path
    records = [json.loads(line) for line in open(os.path.join(run_dir, "metrics.jsonl"))]
    train = [r for r in records if "split" not in r]
    valid = [r for r in records if r.get("split") == "valid"]
    loop_seconds = sum(r["ms_per_iter"] * log_interval for r in train) / 1000.0
    return {"val_loss": valid[-1]["loss"], "train_seconds": loop_seconds,
            "ms_per_iter": 1000 * loop_seconds / iters, "process_seconds": wall}


def run_reference(raw: np.ndarray, cut: int, iters: int, eval_iters: int) -> dict:
    vocab = int(raw.max()) + 1
    return nano_train(raw[:cut].astype(np.int64), raw[cut:].astype(np.int64), NanoConfig(vocab_size=vocab),
                      iters=iters, eval_iters=eval_iters)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", required=True, help="tinyshakespeare.txt")
    parser.add_argument("--iters", type=int, default=2000)
    parser.add_argument("--eval_iters", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=1, help="alternating runs of both (order swaps)")
    parser.add_argument("--reference-keep-freed-memory", action="store_true",
                        help="apply megatron_lite's malloc setting to the reference loop too")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()
    if args.reference_keep_freed_memory and not keep_freed_memory():
        parser.error("--reference-keep-freed-memory needs glibc (Linux)")
    raw = np.frombuffer(open(args.input, "rb").read(), dtype=np.uint8)
    cut = int(0.9 * len(raw))
    runs: dict[str, list[dict]] = {"megatron_lite": [], "nanogpt_style": []}
    for repeat in range(args.repeats):
        order = ("megatron_lite", "nanogpt_style")[:: 1 if repeat % 2 == 0 else -1]
        for name in order:
            if name == "megatron_lite":
                with tempfile.TemporaryDirectory() as work:
                    write_dataset(os.path.join(work, "train_text_document"), raw[:cut])
                    write_dataset(os.path.join(work, "valid_text_document"), raw[cut:])
                    runs[name].append(run_megatron_lite(work, args.iters, args.eval_iters))
            else:
                runs[name].append(run_reference(raw, cut, args.iters, args.eval_iters))
    print(f"{'implementation':<16}{'val loss':>10}{'train loop s (each run)':>30}{'median ms/iter':>16}")
    for name, results in runs.items():
        each = " / ".join(f"{r['train_seconds']:.1f}" for r in results)
        ms = statistics.median(r["ms_per_iter"] for r in results)
        print(f"{name:<16}{results[-1]['val_loss']:>10.4f}{each:>30}{ms:>16.1f}")
    ratios = [ref["train_seconds"] / ours["train_seconds"]
              for ours, ref in zip(runs["megatron_lite"], runs["nanogpt_style"])]
    print("time ratio (nanogpt_style / megatron_lite) per repeat: "
          + ", ".join(f"{r:.2f}x" for r in ratios) + f"; median {statistics.median(ratios):.2f}x"
          + (" (reference with the same malloc setting)" if args.reference_keep_freed_memory else ""))
    if args.out:
        with open(args.out, "w") as handle:
            json.dump({**runs, "iters": args.iters, "ratios": ratios,
                       "reference_keep_freed_memory": args.reference_keep_freed_memory}, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
