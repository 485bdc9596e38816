"""``python -m megatron_lite.config [-d DIR] CONFIG... [--summary]``: print the resolved config
as YAML.

``--summary`` adds, after the YAML, the model's size as this config builds it (from the config
alone, no model is built):

    parameters: N          every parameter: embeddings, layers, biases, norms, untied head
    mlp_inner_size: M      the MLP width GPT-NeoX's keys give (docs/model.md)
    flops_per_token: F     training FLOPs per token, 6 N' + 12 L s h (N': N without the input
                           embedding table, with the head); both in megatron_lite/config/model_size.py

Those lines are not config keys: save the YAML without ``--summary``. Exits 1 with the error
message (no traceback) when the config is invalid.
"""

from __future__ import annotations

import argparse
import sys

from megatron_lite.config import Config, ConfigError, dump_yaml
from megatron_lite.config.model_size import count_parameters, flops_per_token
from megatron_lite.config.resources import load_for_launch
from megatron_lite.utils.logging import setup_logging


def summary(cfg: Config) -> str:
    """The ``--summary`` lines; a size the config cannot tell (no vocabulary: no tokenizer file
    and no ``padded_vocab_size``) is named instead of guessed."""
    m = cfg.model
    missing = [k for k in ("num_layers", "hidden_size", "num_attention_heads", "seq_length",
                           "padded_vocab_size", "mlp_inner_size") if getattr(m, k) is None]
    if missing:
        return f"parameters: unknown ({', '.join(missing)} not set and not derivable)\n"
    return (f"parameters: {count_parameters(m)}\n"
            f"mlp_inner_size: {m.mlp_inner_size}\n"
            f"flops_per_token: {int(flops_per_token(m))}\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m megatron_lite.config",
        description="Merge GPT-NeoX-style YAML configs (left to right) and print the resolved config.",
    )
    parser.add_argument("-d", "--conf_dir", default=None, help="directory prefixed to config names")
    parser.add_argument("--world_size", type=int, default=None,
                        help="derive for this many ranks (default: what deepy.py would launch)")
    parser.add_argument("--summary", action="store_true",
                        help="also print parameters, mlp_inner_size and flops_per_token of the model")
    parser.add_argument("configs", nargs="+", help="YAML files; later files override earlier ones")
    args = parser.parse_args(argv)
    setup_logging()
    try:
        cfg = load_for_launch(args.configs, args.conf_dir, world_size=args.world_size)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(dump_yaml(cfg))
    if args.summary:
        sys.stdout.write(summary(cfg))
    return 0


if __name__ == "__main__":
    sys.exit(main())
