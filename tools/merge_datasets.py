#!/usr/bin/env python
"""Concatenate .bin/.idx datasets (same dtype) into one, documents in the order given.

    python tools/merge_datasets.py --input data/a_text_document data/b_text_document --output-prefix data/ab_text_document
"""

from __future__ import annotations

import argparse
import sys

from megatron_lite.data.indexed_dataset import (
    MMapIndexedDataset,
    MMapIndexedDatasetBuilder,
    data_file_path,
    index_file_path,
)


def main(argv: list[str] | None = None) -> int:
    """Merge; the output appears only when complete (exit 1 and nothing written on error)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--input", nargs="+", required=True, help="dataset prefixes (no .bin/.idx)")
    p.add_argument("--output-prefix", required=True)
    args = p.parse_args(argv)
    if args.output_prefix in args.input:
        p.error("--output-prefix must differ from every --input")
    try:
        dtype = MMapIndexedDataset(args.input[0]).dtype
        with MMapIndexedDatasetBuilder(data_file_path(args.output_prefix), dtype) as builder:
            for prefix in args.input:
                builder.merge_file_(prefix)
            builder.finalize(index_file_path(args.output_prefix))
    except (ValueError, OSError) as exc:
        print(f"merge_datasets.py: error: {exc}", file=sys.stderr)
        return 1
    merged = MMapIndexedDataset(args.output_prefix)
    print(f"wrote {args.output_prefix}: {merged.num_documents} documents, {merged.num_tokens} tokens")
    return 0


if __name__ == "__main__":
    sys.exit(main())
