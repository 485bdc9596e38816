#!/usr/bin/env python
"""Import a Hugging Face GPTNeoX, Llama or Mistral directory as a megatron_lite checkpoint, for any tp size.

    python tools/convert_from_hf.py --input_dir hf_model --output_dir ckpt [--model_parallel_size 2]

Writes ``ckpt/latest``, ``ckpt/global_step0/`` (weights, split for the tensor-parallel size)
and ``ckpt/config.yml``: a ready config (model shape, tokenizer, ``load: ckpt``) so that
``./deepy.py generate.py ckpt/config.yml``, ``evaluate.py`` or a fine-tuning run (add your data
and ``finetune: true``) works right away. Reads ``GPTNeoXForCausalLM``, ``LlamaForCausalLM`` and ``MistralForCausalLM``
directories, config.json in either transformers style (top-level ``rotary_pct`` /
``rope_theta`` / ``rope_scaling``, or transformers 5 ``rope_parameters``) and model.safetensors
(sharded or not, or pytorch_model.bin, loaded weights-only). The tokenizer: tokenizer.json (HFTokenizer) or
vocab.json + merges.txt (GPT2BPETokenizer), copied next to the checkpoint.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys

import yaml

from megatron_lite.checkpoint.hf import (
    UnsupportedForHF,
    is_hf_dir,
    model_keys_from_hf,
    read_hf_config,
)
from megatron_lite.checkpoint.layout import check_output_dir
from megatron_lite.checkpoint.loader import load_weights
from megatron_lite.checkpoint.weights import fit_vocab_rows, write_weights_checkpoint
from megatron_lite.config import config_from_flat, dump_yaml, pad_vocab_size
from megatron_lite.config.derived import GLU_ACTIVATIONS, resolve
from megatron_lite.tokenizer import build_tokenizer_from, vocab_size_of
from megatron_lite.utils.cli import run_reporting_errors
from megatron_lite.utils.files import atomic_write_text

# HF tokenizer files -> (our tokenizer_type, the config keys they fill), first match wins.
_TOKENIZER_FILES = (("HFTokenizer", ("tokenizer.json",)), ("GPT2BPETokenizer", ("vocab.json", "merges.txt")))


def copy_tokenizer(input_dir: str, output_dir: str) -> tuple[str | None, list[str]]:
    """(tokenizer_type, copied file paths) of the HF directory's tokenizer, or (None, [])."""
    for kind, names in _TOKENIZER_FILES:
        if not all(os.path.isfile(os.path.join(input_dir, n)) for n in names):
            continue
        try:  # our tokenizer types need an end-of-document token (HFTokenizer: EOD_TOKENS)
            build_tokenizer_from(kind, *[os.path.join(input_dir, n) for n in names])
        except ValueError as exc:
            print(f"note: tokenizer not usable here ({exc}): set tokenizer_type/vocab_file in the config",
                  file=sys.stderr)
            return None, []
        copied = [os.path.join(os.path.abspath(output_dir), n) for n in names]
        for name, dst in zip(names, copied):
            shutil.copy2(os.path.join(input_dir, name), dst)
        return kind, copied
    return None, []


def vocab_divisor(tok_vocab: int, model_vocab: int, tp: int) -> int:
    """``make_vocab_size_divisible_by`` such that the rows derived from the tokenizer hold the
    model's embedding (GPT-NeoX-20B: 50277 tokens, 50432 rows = 128 * 2 * 197)."""
    divisor = 128
    while pad_vocab_size(tok_vocab, divisor, tp) < model_vocab:
        divisor *= 2
    return divisor


def ready_config(hf_config: dict, out: str, tp: int, kind: str | None, files: list[str]) -> dict:
    """The flat config.yml: model shape, tokenizer, parallel layout, load/save."""
    vocab = hf_config["vocab_size"]
    # Keys left at None (no GQA, no window, no rotary scaling) are their defaults: not written.
    model = {k: v for k, v in model_keys_from_hf(hf_config).items() if v is not None}
    flat = {**model, "model_parallel_size": tp, "pipe_parallel_size": 0,
            "load": os.path.abspath(out), "save": os.path.abspath(out)}
    if kind is None:  # the user sets vocab_file (the model's tokenizer) before running anything
        flat.update(tokenizer_type="HFTokenizer", make_vocab_size_divisible_by=128,
                    padded_vocab_size=pad_vocab_size(vocab, 128, tp))
        return flat
    flat.update(tokenizer_type=kind, vocab_file=files[0], **({"merge_file": files[1]} if len(files) > 1 else {}))
    # padded_vocab_size then follows from the tokenizer (for this and any later tp size).
    flat["make_vocab_size_divisible_by"] = vocab_divisor(vocab_size_of(kind, *files), vocab, tp)
    return flat


def _check_paths(input_dir: str, output_dir: str, force: bool) -> None:
    if not os.path.isdir(input_dir):
        raise FileNotFoundError(f"input directory not found: {input_dir}")
    if not is_hf_dir(input_dir):
        raise FileNotFoundError(f"{input_dir}: not a Hugging Face model directory "
                                "(config.json + model.safetensors or pytorch_model.bin)")
    check_output_dir(input_dir, output_dir, force)


def convert(input_dir: str, output_dir: str, tp: int, force: bool = False) -> tuple[str, bool]:
    """Write the checkpoint and its config.yml; returns (the config's path, tokenizer found).

    An output directory this call created is removed again if anything fails."""
    _check_paths(input_dir, output_dir, force)
    hf_config = read_hf_config(input_dir)
    model_keys_from_hf(hf_config)  # unsupported architecture: fail before reading weights or writing
    _, weights, _, _ = load_weights(input_dir)  # the one loader: our names, our padding
    if force and os.path.isdir(output_dir):
        shutil.rmtree(output_dir)  # --force: replace what is there
    created = not os.path.exists(output_dir)
    os.makedirs(output_dir, exist_ok=True)
    try:
        kind, files = copy_tokenizer(input_dir, output_dir)
        flat = ready_config(hf_config, output_dir, tp, kind, files)
        cfg = resolve(config_from_flat(flat), tp)  # validates: heads divisible by tp, ...
        full = fit_vocab_rows(weights, cfg.model.padded_vocab_size)
        write_weights_checkpoint(full, output_dir, dump_yaml(cfg), tp, glu=cfg.model.activation in GLU_ACTIVATIONS,
                                 tokenizer_files=files or None, vocab_size=hf_config["vocab_size"])
    except BaseException:
        if created:
            shutil.rmtree(output_dir, ignore_errors=True)
        raise
    path = os.path.join(output_dir, "config.yml")
    atomic_write_text(path, f"# Written by tools/convert_from_hf.py from {os.path.abspath(input_dir)}.\n"
                            "# Fine-tune: add data paths, batch/lr settings and `finetune: true`.\n"
                            + yaml.safe_dump(flat, sort_keys=False))
    return path, kind is not None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog="example: python tools/convert_from_hf.py --input_dir pythia-160m "
                                       "--output_dir ckpt --model_parallel_size 2")
    p.add_argument("--input_dir", required=True,
                   help="Hugging Face GPTNeoXForCausalLM, LlamaForCausalLM or MistralForCausalLM directory")
    p.add_argument("--output_dir", required=True, help="checkpoint directory to write (becomes `load`)")
    p.add_argument("--model_parallel_size", type=int, default=1, help="tensor-parallel shards to write")
    p.add_argument("--force", action="store_true", help="replace an existing, non-empty --output_dir")
    args = p.parse_args(argv)
    if args.model_parallel_size < 1:
        p.error("--model_parallel_size must be >= 1")
    ok, result = run_reporting_errors("convert_from_hf.py", "config.json",
                                      lambda: convert(args.input_dir, args.output_dir, args.model_parallel_size, args.force),
                                      (UnsupportedForHF,))
    if not ok:
        return 1
    path, has_tokenizer = result
    print(f"wrote checkpoint {args.output_dir} and its config {path}")
    if not has_tokenizer:
        print("note: no tokenizer was converted: set vocab_file in the config before running")
    return 0


if __name__ == "__main__":
    sys.exit(main())
