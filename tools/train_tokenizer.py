#!/usr/bin/env python
"""Train a byte-level BPE tokenizer (a ``tokenizers`` JSON file) on your corpus.

    python tools/train_tokenizer.py --input data/corpus.jsonl.zst --vocab-size 8192 --output data/tokenizer.json

Streams .jsonl / .jsonl.zst / .jsonl.gz / .txt inputs (comma-separated files or globs; bad lines
are skipped and counted as in preprocess_data.py) into the ``tokenizers`` BPE trainer. The
result has ``<|endoftext|>`` (id 0, end of document) and ``<|padding|>`` (id 1) as special
tokens and loads as ``tokenizer_type: HFTokenizer``. It is written to a temporary name and
renamed when complete.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

from megatron_lite.data.readers import InputError, ReadStats, expand_inputs, iter_texts
from megatron_lite.tokenizer.tokenizer_types import EOD_TOKEN, PAD_TOKEN
from megatron_lite.utils.files import unique_tmp_path
from megatron_lite.utils.logging import setup_logging


def train(paths: list[str], vocab_size: int, keys: list[str] | str = "text", min_frequency: int = 2,
          stats: ReadStats | None = None, txt_blocks: bool = False) -> Any:
    """A trained ``tokenizers.Tokenizer`` (byte-level BPE, GPT-2 pre-tokenization)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    # What GPT-NeoX-20B's tokenizer.json has: no tokens added around a text.
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=[EOD_TOKEN, PAD_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    stats = stats if stats is not None else ReadStats()
    tok.train_from_iterator(iter_texts(paths, keys, stats, txt_blocks), trainer=trainer)
    if stats.documents == 0:
        raise InputError(f"no documents found in {', '.join(paths)} (skipped: {dict(stats.skipped) or 'none'})")
    return tok


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--input", required=True, help="comma-separated files or globs (.jsonl, .jsonl.zst, .jsonl.gz, .txt)")
    p.add_argument("--vocab-size", type=int, required=True, help="tokens in the result, special ones included")
    p.add_argument("--output", required=True, help="tokenizer.json to write")
    p.add_argument("--jsonl-keys", nargs="+", default=["text"], help="the JSON keys holding text")
    p.add_argument("--min-frequency", type=int, default=2, help="merges seen fewer times are not learnt")
    p.add_argument("--txt-blocks", action="store_true", help=".txt: one document per blank-line block")
    args = p.parse_args(argv)
    if args.vocab_size < 258:
        p.error("--vocab-size must be at least 258 (256 bytes + 2 special tokens)")
    setup_logging(logging.INFO)
    stats = ReadStats()
    tmp = unique_tmp_path(args.output)
    try:
        paths = expand_inputs(args.input)
        tok = train(paths, args.vocab_size, args.jsonl_keys, args.min_frequency, stats, args.txt_blocks)
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        tok.save(tmp)
        os.replace(tmp, args.output)
    except (InputError, ValueError, OSError) as exc:
        if os.path.exists(tmp):
            os.remove(tmp)
        print(f"train_tokenizer.py: error: {exc}", file=sys.stderr)
        return 1
    skipped = ", ".join(f"{k}: {v}" for k, v in sorted(stats.skipped.items())) or "nothing"
    print(f"wrote {args.output}: {tok.get_vocab_size()} tokens from {stats.documents} documents "
          f"({stats.bytes / 1e6:.1f} MB); skipped: {skipped}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
