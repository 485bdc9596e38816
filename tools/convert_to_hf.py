#!/usr/bin/env python
"""Export a megatron_lite checkpoint (any tensor/pipeline layout) as a Hugging Face model.

    python tools/convert_to_hf.py --input_dir checkpoints [--iteration N] --output_dir hf_model

Writes config.json, model.safetensors and (for a tokenizers-JSON tokenizer) tokenizer.json +
tokenizer_config.json: a GPTNeoXForCausalLM directory that ``from_pretrained`` loads offline.
Written to a temporary directory and renamed when complete. Options GPTNeoX cannot express
(alibi, rmsnorm, swiglu, GQA, ...) are an error.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from megatron_lite.api import load_weights  # noqa: E402
from megatron_lite.model.hf_interop import UnsupportedForHF, hf_config_dict, state_dict_to_hf  # noqa: E402
from megatron_lite.training.checkpoint_format import (  # noqa: E402
    CONFIG_FILE,
    TOKENIZER_DIR,
    CheckpointError,
    resolve_step_dir,
)


def write_tokenizer(step: str, out: str, tokenizer) -> None:
    """tokenizer.json + a PreTrainedTokenizerFast config, when the tokenizer is a tokenizers JSON."""
    import yaml

    with open(os.path.join(step, CONFIG_FILE), encoding="utf-8") as handle:
        flat = yaml.safe_load(handle)
    if flat.get("tokenizer_type") != "HFTokenizer" or tokenizer is None:
        return
    shutil.copy2(os.path.join(step, TOKENIZER_DIR, os.path.basename(flat["vocab_file"])),
                 os.path.join(out, "tokenizer.json"))
    special = {"eos_token": "<|endoftext|>", "bos_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}
    if tokenizer.pad != tokenizer.eod:
        special["pad_token"] = "<|padding|>"
    with open(os.path.join(out, "tokenizer_config.json"), "w") as handle:
        json.dump({"tokenizer_class": "PreTrainedTokenizerFast", **special}, handle, indent=2)


def convert(input_dir: str, output_dir: str, iteration: int | None) -> None:
    from safetensors.torch import save_file

    step = resolve_step_dir(input_dir, iteration)
    cfg, full, tokenizer, vocab = load_weights(step)
    eod = tokenizer.eod if tokenizer else None
    pad = tokenizer.pad if tokenizer else None
    hf_config = hf_config_dict(cfg, vocab, eod, pad)
    weights = state_dict_to_hf(full, vocab)
    tmp = output_dir.rstrip("/") + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    with open(os.path.join(tmp, "config.json"), "w") as handle:
        json.dump(hf_config, handle, indent=2)
    save_file({k: v.contiguous() for k, v in weights.items()}, os.path.join(tmp, "model.safetensors"),
              metadata={"format": "pt"})
    write_tokenizer(step, tmp, tokenizer)
    if os.path.exists(output_dir):
        shutil.rmtree(output_dir)
    os.replace(tmp, output_dir)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--input_dir", required=True, help="checkpoint directory (save/load) or a global_step dir")
    p.add_argument("--output_dir", required=True)
    p.add_argument("--iteration", type=int, default=None, help="default: latest")
    args = p.parse_args(argv)
    try:
        convert(args.input_dir, args.output_dir, args.iteration)
    except (CheckpointError, UnsupportedForHF, FileNotFoundError, ValueError) as exc:
        print(f"convert_to_hf.py: error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {args.output_dir} (GPTNeoXForCausalLM)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
