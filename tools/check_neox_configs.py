#!/usr/bin/env python
"""Check that a directory of GPT-NeoX configs loads in megatron_lite.

    python tools/check_neox_configs.py path/to/gpt-neox/configs [--with local_setup.yml]

Every ``*.yml`` (recursively) is loaded alone and merged with ``--with`` files, at a world size
that fits its tensor x pipeline layout. Prints one line per file:
- ``ok``: it loads and builds what GPT-NeoX builds;
- ``refused``: it uses a feature megatron_lite does not implement (Mamba, RWKV, mixture of
  experts, sparse attention, ...); the line names the key and the feature;
- ``FAIL``: any other error (a key we should know, a value we misread).
Exits 1 if any file fails; refused files do not fail the check.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from megatron_lite.config import ConfigError, layout_world_size, load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory")
    parser.add_argument("--with", dest="extra", action="append", default=[],
                        help="config merged after each file (repeatable)")
    args = parser.parse_args(argv)
    failures = 0
    for path in sorted(Path(args.directory).rglob("*.yml")):
        combos = [[str(path)]] + ([[str(path), *args.extra]] if args.extra else [])
        for combo in combos:
            label = " + ".join(os.path.relpath(p, args.directory) for p in combo)
            try:
                load_config(combo, world_size=layout_world_size(combo))
                print(f"ok       {label}")
            except ConfigError as exc:
                refused = "is not implemented" in str(exc)
                failures += not refused
                print(f"{'refused' if refused else 'FAIL':8s} {label}: {exc}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
