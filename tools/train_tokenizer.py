#!/usr/bin/env python
"""Train a byte-level BPE tokenizer (a ``tokenizers`` JSON file) on your corpus.

    python tools/train_tokenizer.py --input data/corpus.jsonl.zst --vocab-size 8192 --output data/tokenizer.json

Streams .jsonl / .jsonl.zst / .jsonl.gz / .txt inputs (comma-separated files or globs) into the
``tokenizers`` BPE trainer. The result has ``<|endoftext|>`` (end of document) and
``<|padding|>`` as special tokens and loads as ``tokenizer_type: HFTokenizer``.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from megatron_lite.data.readers import InputError, expand_inputs, iter_texts  # noqa: E402
from megatron_lite.tokenizer.tokenizer_types import EOD_TOKEN, PAD_TOKEN  # noqa: E402


def train(paths: list[str], vocab_size: int, key: str, min_frequency: int = 2):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=[EOD_TOKEN, PAD_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(iter_texts(paths, key), trainer=trainer)
    return tok


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--input", required=True, help="comma-separated files or globs")
    p.add_argument("--vocab-size", type=int, required=True)
    p.add_argument("--output", required=True, help="tokenizer.json to write")
    p.add_argument("--jsonl-keys", default="text", help="the JSON key holding the text")
    p.add_argument("--min-frequency", type=int, default=2)
    args = p.parse_args(argv)
    try:
        paths = expand_inputs(args.input)
        tok = train(paths, args.vocab_size, args.jsonl_keys, args.min_frequency)
    except (InputError, ValueError) as exc:
        print(f"train_tokenizer.py: error: {exc}", file=sys.stderr)
        return 1
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    tmp = args.output + ".tmp"
    tok.save(tmp)
    os.replace(tmp, args.output)
    print(f"wrote {args.output}: {tok.get_vocab_size()} tokens")
    return 0


if __name__ == "__main__":
    sys.exit(main())
