#!/usr/bin/env python
"""Describe a .bin/.idx dataset: documents, sequences, tokens, dtype, and a decoded sample.

    python tools/inspect_dataset.py data/corpus_text_document --tokenizer-type HFTokenizer --vocab-file data/tokenizer.json
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from megatron_lite.data.indexed_dataset import MMapIndexedDataset
from megatron_lite.tokenizer import TOKENIZER_TYPES, build_tokenizer_from


def main(argv: list[str] | None = None) -> int:
    """Print the summary; exit 1 with one line for a missing or damaged dataset."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("prefix", help="dataset prefix (no .bin/.idx)")
    p.add_argument("--tokenizer-type", choices=TOKENIZER_TYPES, default=None, help="decode the sample with it")
    p.add_argument("--vocab-file", default=None)
    p.add_argument("--merge-file", default=None)
    p.add_argument("--document", type=int, default=0, help="which document to show (default 0)")
    p.add_argument("--max-tokens", type=int, default=64)
    args = p.parse_args(argv)
    try:
        ds = MMapIndexedDataset(args.prefix)
    except (FileNotFoundError, ValueError) as exc:
        print(f"inspect_dataset.py: error: {exc}", file=sys.stderr)
        return 1
    sizes = ds.sizes
    print(f"dataset:   {args.prefix}")
    print(f"documents: {ds.num_documents}")
    print(f"sequences: {len(ds)}")
    print(f"tokens:    {ds.num_tokens}")
    print(f"dtype:     {np.dtype(ds.dtype).name}")
    if len(ds):
        print(f"tokens per sequence: min {sizes.min()}, mean {sizes.mean():.1f}, max {sizes.max()}")
        # The first sequence of the document (GPT-NeoX-merged files have no documents: a sequence).
        doc = min(args.document, max(ds.num_documents, len(ds)) - 1)
        seq = int(ds.doc_idx[doc]) if ds.num_documents else doc
        ids = ds[seq][: args.max_tokens].tolist()
        print(f"document {doc}, first {len(ids)} tokens: {ids}")
        if args.tokenizer_type:
            try:
                tok = build_tokenizer_from(args.tokenizer_type, args.vocab_file, args.merge_file)
            except (ValueError, OSError) as exc:
                print(f"inspect_dataset.py: error: {exc}", file=sys.stderr)
                return 1
            print(f"decoded: {tok.detokenize(ids)!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
