#!/usr/bin/env python
"""Import a Hugging Face GPTNeoX directory as a megatron_lite checkpoint, for any tp size.

    python tools/convert_from_hf.py --input_dir hf_model --output_dir ckpt [--model_parallel_size 2]

Writes ``ckpt/latest``, ``ckpt/global_step0/`` (weights, split for the tensor-parallel size)
and ``ckpt/config.yml``: a ready config (model shape, tokenizer, ``load: ckpt``) so that
``./deepy.py generate.py ckpt/config.yml``, ``evaluate.py`` or a fine-tuning run (add your data
and ``finetune: true``) works right away. Reads config.json in either style (``rotary_pct`` /
``rotary_emb_base``, or transformers 5 ``rope_parameters``) and model.safetensors (or
pytorch_model.bin, loaded weights-only).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys

import yaml

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from megatron_lite.config import config_from_flat, dump_yaml, pad_vocab_size  # noqa: E402
from megatron_lite.config.derived import resolve  # noqa: E402
from megatron_lite.model.hf_interop import (  # noqa: E402
    UnsupportedForHF,
    is_hf_dir,
    model_keys_from_hf,
    read_hf_dir,
    state_dict_from_hf,
)
from megatron_lite.tokenizer import build_tokenizer_from  # noqa: E402
from megatron_lite.training.checkpoint_format import write_weights_checkpoint  # noqa: E402


def ready_config(hf_config: dict, out: str, tp: int, tokenizer_file: str | None) -> dict:
    vocab = hf_config["vocab_size"]
    flat = {**model_keys_from_hf(hf_config), "model_parallel_size": tp, "pipe_parallel_size": 0,
            "load": os.path.abspath(out), "save": os.path.abspath(out),
            "make_vocab_size_divisible_by": 128}
    if tokenizer_file:
        flat.update(tokenizer_type="HFTokenizer", vocab_file=tokenizer_file)
        tok_vocab = build_tokenizer_from("HFTokenizer", tokenizer_file).vocab_size
        if pad_vocab_size(tok_vocab, 128, tp) >= vocab:
            return flat  # padded_vocab_size follows from the tokenizer (and any later tp)
    else:  # no tokenizer.json in the HF directory: the user sets vocab_file (the model's tokenizer)
        flat["tokenizer_type"] = "HFTokenizer"
    flat["padded_vocab_size"] = pad_vocab_size(vocab, 128, tp)
    return flat


def convert(input_dir: str, output_dir: str, tp: int) -> str:
    if not is_hf_dir(input_dir):
        raise FileNotFoundError(f"{input_dir}: not a Hugging Face model directory (config.json + model.safetensors)")
    hf_config, weights = read_hf_dir(input_dir)
    os.makedirs(output_dir, exist_ok=True)
    tokenizer_file = None
    if os.path.isfile(os.path.join(input_dir, "tokenizer.json")):
        tokenizer_file = os.path.join(os.path.abspath(output_dir), "tokenizer.json")
        shutil.copy2(os.path.join(input_dir, "tokenizer.json"), tokenizer_file)
    flat = ready_config(hf_config, output_dir, tp, tokenizer_file)
    cfg = resolve(config_from_flat(flat), tp)  # validates: heads divisible by tp, ...
    full = state_dict_from_hf(weights, cfg.model.padded_vocab_size, tied=not cfg.model.no_weight_tying)
    write_weights_checkpoint(full, output_dir, dump_yaml(cfg), tp, glu=False,
                             tokenizer_files=[tokenizer_file] if tokenizer_file else None,
                             vocab_size=hf_config["vocab_size"])
    path = os.path.join(output_dir, "config.yml")
    with open(path + ".tmp", "w") as handle:
        handle.write("# Written by tools/convert_from_hf.py: the model of " + os.path.abspath(input_dir) + "\n")
        yaml.safe_dump(flat, handle, sort_keys=False)
    os.replace(path + ".tmp", path)
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--input_dir", required=True, help="Hugging Face GPTNeoX directory")
    p.add_argument("--output_dir", required=True)
    p.add_argument("--model_parallel_size", type=int, default=1)
    args = p.parse_args(argv)
    try:
        path = convert(args.input_dir, args.output_dir, args.model_parallel_size)
    except (UnsupportedForHF, FileNotFoundError, ValueError, KeyError) as exc:
        print(f"convert_from_hf.py: error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote checkpoint {args.output_dir} and its config {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
