"""``python -m megatron_lite.config [-d DIR] CONFIG...``: print the resolved config as YAML.

Exits 1 with the error message (no traceback) when the config is invalid.
"""

from __future__ import annotations

import argparse
import sys

from megatron_lite.config import ConfigError, dump_yaml
from megatron_lite.config.resources import load_for_launch
from megatron_lite.utils.logging import setup_logging


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m megatron_lite.config",
        description="Merge GPT-NeoX-style YAML configs (left to right) and print the resolved config.",
    )
    parser.add_argument("-d", "--conf_dir", default=None, help="directory prefixed to config names")
    parser.add_argument("--world_size", type=int, default=None,
                        help="derive for this many ranks (default: what deepy.py would launch)")
    parser.add_argument("configs", nargs="+", help="YAML files; later files override earlier ones")
    args = parser.parse_args(argv)
    setup_logging()
    try:
        cfg = load_for_launch(args.configs, args.conf_dir, world_size=args.world_size)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(dump_yaml(cfg))
    return 0


if __name__ == "__main__":
    sys.exit(main())
