#!/usr/bin/env python
"""Check that a directory of GPT-NeoX configs loads in megatron_lite.

    python tools/check_neox_configs.py path/to/gpt-neox/configs [--with local_setup.yml]

Every ``*.yml`` (recursively) is loaded alone and merged with ``--with`` files, at a world size
that fits its tensor x pipeline layout. Prints one line per file: ``ok``, or the error (which
names the key and the unsupported feature). Exits 1 if any file fails.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from megatron_lite.config import ConfigError, layout_world_size, load_config


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory")
    parser.add_argument("--with", dest="extra", action="append", default=[],
                        help="config merged after each file (repeatable)")
    args = parser.parse_args()
    failures = 0
    for path in sorted(Path(args.directory).rglob("*.yml")):
        combos = [[str(path)]] + ([[str(path), *args.extra]] if args.extra else [])
        for combo in combos:
            label = " + ".join(os.path.relpath(p, args.directory) for p in combo)
            try:
                load_config(combo, world_size=layout_world_size(combo))
                print(f"ok    {label}")
            except ConfigError as exc:
                failures += 1
                print(f"FAIL  {label}: {exc}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
