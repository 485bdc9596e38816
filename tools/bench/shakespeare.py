#!/usr/bin/env python
"""megatron_lite vs a nanoGPT-style loop on shakespeare-char, side by side in one run.

    python tools/bench/shakespeare.py --input path/to/tinyshakespeare.txt [--iters 2000] [--out r.json]

Both train nanoGPT's CPU config (4 layers, 4 heads, width 128, context 64, batch 12, lr 1e-3
cosine to 1e-4 after 100 warmup steps, AdamW betas 0.9/0.99, weight decay 0.1, dropout 0) on the
first 90% of the characters and report the validation loss on the last 10% and the time of
their training loops. megatron_lite runs as a user runs it: ``deepy.py train.py
configs/cpu_shakespeare.yml`` with the data preprocessed to .bin/.idx (byte-level
CharLevelTokenizer, which on this ASCII corpus is character-level).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from nanogpt_style import NanoConfig  # noqa: E402
from nanogpt_style import train as nano_train  # noqa: E402

from megatron_lite.data.indexed_dataset import (  # noqa: E402
    MMapIndexedDatasetBuilder,
    data_file_path,
    index_file_path,
)


def write_dataset(prefix: str, data: np.ndarray) -> None:
    with MMapIndexedDatasetBuilder(data_file_path(prefix), np.uint16) as builder:
        builder.add_item(data.astype(np.uint16))
        builder.end_document()
        builder.finalize(index_file_path(prefix))


def run_megatron_lite(work: str, iters: int, eval_iters: int) -> dict:
    overrides = {
        "train_data_paths": [os.path.join(work, "train_text_document")],
        "valid_data_paths": [os.path.join(work, "valid_text_document")],
        "train_iters": iters, "lr_decay_iters": iters, "warmup": 100 / iters,
        "eval_interval": iters, "eval_iters": eval_iters, "log_interval": 50,
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
    loop_seconds = sum(r["ms_per_iter"] * 50 for r in train) / 1000.0
    return {"val_loss": valid[-1]["loss"], "train_seconds": loop_seconds,
            "ms_per_iter": 1000 * loop_seconds / iters, "process_seconds": wall}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", required=True, help="tinyshakespeare.txt")
    parser.add_argument("--iters", type=int, default=2000)
    parser.add_argument("--eval_iters", type=int, default=200)
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()
    raw = np.frombuffer(open(args.input, "rb").read(), dtype=np.uint8)
    cut = int(0.9 * len(raw))
    with tempfile.TemporaryDirectory() as work:
        write_dataset(os.path.join(work, "train_text_document"), raw[:cut])
        write_dataset(os.path.join(work, "valid_text_document"), raw[cut:])
        ours = run_megatron_lite(work, args.iters, args.eval_iters)
    vocab = int(raw.max()) + 1
    ref = nano_train(raw[:cut].astype(np.int64), raw[cut:].astype(np.int64), NanoConfig(vocab_size=vocab),
                     iters=args.iters, eval_iters=args.eval_iters)
    print(f"{'implementation':<16}{'val loss':>10}{'train loop s':>14}{'ms/iter':>10}")
    for name, res in (("megatron_lite", ours), ("nanogpt_style", ref)):
        print(f"{name:<16}{res['val_loss']:>10.4f}{res['train_seconds']:>14.1f}{res['ms_per_iter']:>10.1f}")
    print(f"time ratio (nanogpt_style / megatron_lite): {ref['train_seconds'] / ours['train_seconds']:.2f}x; "
          f"megatron_lite process incl. startup and eval: {ours['process_seconds']:.1f} s")
    if args.out:
        with open(args.out, "w") as handle:
            json.dump({"megatron_lite": ours, "nanogpt_style": ref, "iters": args.iters}, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
