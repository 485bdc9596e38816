#!/usr/bin/env python
"""Merge a LoRA checkpoint's adapters into its base; export them for peft.

    python tools/merge_lora.py --input_dir lora_ckpt --output_dir merged [--iteration N] \\
        [--model_parallel_size N --pipe_parallel_size N] [--peft_dir adapter [--peft_base hf_base]]

``--output_dir`` gets a full checkpoint: ``W + (alpha / rank) B A`` for every adapted layer, on
the base the LoRA checkpoint records (``lora.base`` in its config.yml), written as
``tools/reshard_checkpoint.py`` writes one (``latest``, ``global_step<N>/``, weights only, the
iteration and consumed samples kept, ``config.yml`` without ``lora``), in the LoRA run's
tensor/pipeline layout unless ``--model_parallel_size`` / ``--pipe_parallel_size`` say otherwise.
``convert_to_hf.py`` turns it (or the LoRA checkpoint itself) into the merged Hugging Face model.

``--peft_dir`` writes the adapters in peft's format (adapter_config.json,
adapter_model.safetensors) for the Hugging Face export of the base (``convert_to_hf.py`` of
it): ``PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(hf_base), peft_dir)``.
``--peft_base`` is what adapter_config.json names as the base (default: the recorded base when
it is a Hugging Face directory). Outputs are written to temporary names and renamed when complete.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from megatron_lite.checkpoint.hf import (
    ARCHITECTURES,
    UnsupportedForHF,
    export_architecture,
    is_hf_dir,
)
from megatron_lite.checkpoint.layout import (
    CheckpointError,
    check_output_dir,
    read_meta,
    read_step_config,
    replace_dir_when_done,
    resolve_step_dir,
)
from megatron_lite.checkpoint.lora import read_adapters
from megatron_lite.config import ConfigError, config_from_flat
from megatron_lite.config.derived import GLU_ACTIVATIONS
from megatron_lite.utils.cli import run_reporting_errors


def _reshard_tool() -> ModuleType:
    """tools/reshard_checkpoint.py, whose ``reshard`` writes the merged weights for a layout (it
    reads a LoRA step merged); loaded by path: the tools are scripts, not a package."""
    spec = importlib.util.spec_from_file_location("reshard_checkpoint", Path(__file__).with_name("reshard_checkpoint.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def lora_step(input_dir: str, iteration: int | None) -> tuple[str, dict]:
    """(step directory, its flat config) of a LoRA checkpoint; anything else is one error."""
    step = resolve_step_dir(input_dir, iteration)
    flat = read_step_config(step)
    if not flat.get("lora"):
        raise CheckpointError(f"{step} is not a LoRA checkpoint (its config.yml has no lora key)")
    return step, flat


def export_peft(step: str, flat: dict, out_dir: str, base_name: str | None, architecture: str | None,
                force: bool) -> str:
    """Write the peft adapter directory; returns a one-line description."""
    from megatron_lite.checkpoint.hf_lora import save_peft_adapter  # imports peft and transformers

    cfg = config_from_flat(flat)
    architecture = export_architecture(cfg.model, architecture)  # before anything is written
    check_output_dir(step, out_dir, force)
    adapters = read_adapters(step, glu=cfg.model.activation in GLU_ACTIVATIONS)
    vocab = read_meta(step).vocab_size or cfg.model.padded_vocab_size
    base = flat["lora"].get("base")
    base_name = base_name or (base if base and is_hf_dir(base) else None)
    with replace_dir_when_done(out_dir) as tmp:
        modules = save_peft_adapter(cfg.model, adapters, flat["lora"], vocab, tmp, architecture, base_name)
    return (f"wrote {out_dir}: peft LoRA adapters (rank {flat['lora']['rank']}) on {architecture}'s "
            f"{', '.join(modules)}; base_model_name_or_path {base_name}")


def merge(args: argparse.Namespace) -> list[str]:
    """What the command line asks for; returns one line per output written."""
    step, flat = lora_step(args.input_dir, args.iteration)
    notes = []
    if args.peft_dir:
        notes.append(export_peft(step, flat, args.peft_dir, args.peft_base, args.architecture, args.force))
    if args.output_dir:
        meta = read_meta(step)
        tp = args.model_parallel_size or meta.model_parallel_size
        pp = meta.pipe_parallel_size if args.pipe_parallel_size is None else args.pipe_parallel_size
        written = _reshard_tool().reshard(step, args.output_dir, tp, pp, None, args.force)
        notes.append(f"wrote {written}: the adapters merged into {flat['lora'].get('base') or 'the initialisation'} "
                     f"(model_parallel_size {tp}, pipe_parallel_size {pp}, weights only)")
    return notes


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="merge_lora.py", description=__doc__.split("\n\n")[0],
                                epilog="example: python tools/merge_lora.py --input_dir checkpoints/lora "
                                       "--output_dir checkpoints/merged --peft_dir hf_adapter")
    p.add_argument("--input_dir", required=True, help="LoRA checkpoint directory (save/load) or one global_step<N> dir")
    p.add_argument("--output_dir", default=None, help="full checkpoint to write (new or empty)")
    p.add_argument("--iteration", type=int, default=None, help="step to merge (default: latest)")
    p.add_argument("--model_parallel_size", type=int, default=None, help="layout of --output_dir (default: the run's)")
    p.add_argument("--pipe_parallel_size", type=int, default=None, help="layout of --output_dir (default: the run's)")
    p.add_argument("--peft_dir", default=None, help="peft adapter directory to write (new or empty)")
    p.add_argument("--peft_base", default=None, help="base_model_name_or_path for adapter_config.json")
    p.add_argument("--architecture", choices=ARCHITECTURES, default=None,
                   help="Hugging Face class the peft adapters are for (default: as convert_to_hf.py chooses)")
    p.add_argument("--force", action="store_true", help="replace existing, non-empty output directories")
    args = p.parse_args(argv)
    if not (args.output_dir or args.peft_dir):
        p.error("give --output_dir (merged checkpoint), --peft_dir (peft adapters), or both")
    if args.model_parallel_size is not None and args.model_parallel_size < 1:
        p.error(f"--model_parallel_size must be >= 1, got {args.model_parallel_size}")
    if args.peft_dir:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    ok, notes = run_reporting_errors("merge_lora.py", "the checkpoint's config", lambda: merge(args),
                                     (CheckpointError, ConfigError, UnsupportedForHF))
    if not ok:
        return 1
    print("\n".join(notes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
