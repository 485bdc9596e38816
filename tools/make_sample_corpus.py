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


def main(argv: list[str] | None = None) -> int:
    import zstandard

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--output", required=True, help="a .jsonl.zst path")
    p.add_argument("--max-docs", type=int, default=None)
    p.add_argument("--min-chars", type=int, default=200, help="skip tiny modules")
    args = p.parse_args(argv)
    root = sysconfig.get_paths()["stdlib"]
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    tmp, docs, chars = args.output + ".tmp", 0, 0
    with open(tmp, "wb") as raw, zstandard.ZstdCompressor(level=10).stream_writer(raw) as out:
        for module, path in stdlib_modules(root):
            if args.max_docs is not None and docs >= args.max_docs:
                break
            try:
                with open(path, encoding="utf-8") as handle:
                    text = handle.read()
            except (UnicodeDecodeError, OSError):
                continue
            if len(text) < args.min_chars:
                continue
            out.write((json.dumps({"text": text, "meta": {"module": module}}) + "\n").encode())
            docs, chars = docs + 1, chars + len(text)
    if docs == 0:
        os.remove(tmp)
        print(f"make_sample_corpus.py: error: no modules found under {root}", file=sys.stderr)
        return 1
    os.replace(tmp, args.output)
    print(f"wrote {args.output}: {docs} documents, {chars / 1e6:.1f} M characters from {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
