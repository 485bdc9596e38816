#!/usr/bin/env python
"""The demo corpus: this Python's standard library source, one module per document, as .jsonl.zst.

    python tools/make_sample_corpus.py --output data/sample/stdlib.jsonl.zst [--max-docs 500]

Real text that every machine has: no download. Test directories and site-packages are left out.
Each line is ``{"text": <source>, "meta": {"module": "json.decoder"}}``; the file is written to
a temporary name and renamed when complete.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import sysconfig

from megatron_lite.utils.files import unique_tmp_path


def stdlib_modules(root: str) -> list[tuple[str, str]]:
    """(module name, path) of every .py file of the standard library, sorted, tests excluded."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in ("test", "tests", "site-packages",
                                                               "idle_test", "__pycache__")
                             and not d.startswith(("test_", "lib2to3")))
        for name in sorted(filenames):
            if name.endswith(".py") and not name.startswith("test_"):
                path = os.path.join(dirpath, name)
                module = os.path.relpath(path, root)[:-3].replace(os.sep, ".")
                found.append((module.removesuffix(".__init__"), path))
    return found


def write_corpus(output: str, modules: list[tuple[str, str]], max_docs: int | None,
                 min_chars: int) -> tuple[int, int]:
    """Write ``output`` (.jsonl.zst) via a temporary file; returns (documents, characters)."""
    import zstandard

    tmp, docs, chars = unique_tmp_path(output), 0, 0
    try:
        with open(tmp, "wb") as raw, zstandard.ZstdCompressor(level=10).stream_writer(raw) as out:
            for module, path in modules:
                if max_docs is not None and docs >= max_docs:
                    break
                try:
                    with open(path, encoding="utf-8") as handle:
                        text = handle.read()
                except (UnicodeDecodeError, OSError):
                    continue  # a few stdlib files are latin-1 test data: not source text
                if len(text) < min_chars:
                    continue
                out.write((json.dumps({"text": text, "meta": {"module": module}}) + "\n").encode())
                docs, chars = docs + 1, chars + len(text)
        if docs:
            os.replace(tmp, output)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return docs, chars


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--output", required=True, help="a .jsonl.zst path")
    p.add_argument("--max-docs", type=int, default=None, help="stop after this many modules")
    p.add_argument("--min-chars", type=int, default=200, help="skip tiny modules")
    args = p.parse_args(argv)
    root = sysconfig.get_paths()["stdlib"]
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    try:
        docs, chars = write_corpus(args.output, stdlib_modules(root), args.max_docs, args.min_chars)
    except OSError as exc:
        print(f"make_sample_corpus.py: error: {exc}", file=sys.stderr)
        return 1
    if docs == 0:
        print(f"make_sample_corpus.py: error: no modules found under {root}", file=sys.stderr)
        return 1
    print(f"wrote {args.output}: {docs} documents, {chars / 1e6:.1f} M characters from {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
