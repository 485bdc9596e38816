#!/usr/bin/env python
"""Export a megatron_lite checkpoint (any tensor/pipeline layout) as a Hugging Face model.

    python tools/convert_to_hf.py --input_dir checkpoints [--iteration N] --output_dir hf_model

Writes config.json, model.safetensors (transformers' save_pretrained) and, for a tokenizers
tokenizer (HFTokenizer, GPT2BPETokenizer, HFGPT2Tokenizer), tokenizer.json +
tokenizer_config.json (PreTrainedTokenizerFast with eos/bos/pad): a directory that
``from_pretrained`` / ``AutoTokenizer.from_pretrained`` load offline. Written to a temporary
directory and renamed when complete.

The architecture is the model's: GPTNeoXForCausalLM (LayerNorm, GeLU-family MLP, biases),
LlamaForCausalLM (rmsnorm, swiglu, full rotary, sequential residual) or, with a sliding
window, MistralForCausalLM; ``--architecture`` chooses one (a Llama-shaped model can be written
as Mistral). A model no architecture expresses (alibi, learned positions, ...) is an error
naming, per architecture, the options it lacks.

A reward model (``train_impl: rm``) is written as the matching sequence classifier,
GPTNeoX/Llama/MistralForSequenceClassification with ``num_labels: 1``, its head as
``score.weight`` and ``pad_token_id`` set so that transformers reads the reward where the model
does (``megatron_lite/checkpoint/hf_reward.py``); ``--architecture`` takes either spelling.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys

from megatron_lite.checkpoint.hf import (
    ARCHITECTURES,
    UnsupportedForHF,
    export_architecture,
    save_hf_model,
)
from megatron_lite.checkpoint.hf_reward import (
    CLASSIFIER,
    causal_architecture,
    classifier_architecture,
    is_reward_state_dict,
    save_reward_model,
)
from megatron_lite.checkpoint.layout import (
    CONFIG_FILE,
    TOKENIZER_DIR,
    CheckpointError,
    check_output_dir,
    replace_dir_when_done,
    resolve_step_dir,
)
from megatron_lite.checkpoint.loader import check_shapes, load_weights
from megatron_lite.utils.cli import run_reporting_errors


def _tokenizer_json(step: str, flat: dict, tokenizer, out_path: str) -> bool:
    """Write tokenizer.json; False when the tokenizer has no ``tokenizers`` form."""
    kind = flat.get("tokenizer_type")
    if kind == "HFTokenizer":  # the original file, byte for byte
        local = os.path.join(step, TOKENIZER_DIR, os.path.basename(flat.get("vocab_file") or ""))
        source = local if os.path.isfile(local) else flat.get("vocab_file")
        shutil.copy2(source, out_path)
        return True
    backend = getattr(tokenizer, "backend", None)  # GPT-2 vocab/merges types: the tokenizers object
    if backend is None:
        return False
    backend.save(out_path)
    return True


def write_tokenizer(step: str, out: str, tokenizer) -> str:
    """tokenizer.json + a PreTrainedTokenizerFast config (eos/bos = end of document, pad);
    returns what was written, for the report."""
    import yaml
    from tokenizers import Tokenizer

    if tokenizer is None:
        return "no tokenizer (the checkpoint carries none)"
    with open(os.path.join(step, CONFIG_FILE), encoding="utf-8") as handle:
        flat = yaml.safe_load(handle)
    path = os.path.join(out, "tokenizer.json")
    if not _tokenizer_json(step, flat, tokenizer, path):
        return f"no tokenizer ({flat.get('tokenizer_type')} has no transformers equivalent)"
    saved = Tokenizer.from_file(path)
    eos = saved.id_to_token(tokenizer.eod)
    special = {"eos_token": eos, "bos_token": eos, "unk_token": eos,
               "pad_token": saved.id_to_token(tokenizer.pad)}
    with open(os.path.join(out, "tokenizer_config.json"), "w", encoding="utf-8") as handle:
        json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "clean_up_tokenization_spaces": False,
                   **special}, handle, indent=2)
    with open(os.path.join(out, "special_tokens_map.json"), "w", encoding="utf-8") as handle:
        json.dump(special, handle, indent=2)
    return "tokenizer.json + tokenizer_config.json"


def convert(input_dir: str, output_dir: str, iteration: int | None, force: bool = False,
            architecture: str | None = None) -> str:
    """Write the HF directory; returns a one-line description of what was written."""
    check_output_dir(input_dir, output_dir, force)
    step = resolve_step_dir(input_dir, iteration)
    cfg, full, tokenizer, vocab = load_weights(step)
    reward = is_reward_state_dict(full)  # train_impl: rm -> a sequence classifier
    if architecture and architecture.endswith(CLASSIFIER) and not reward:
        raise UnsupportedForHF(f"{architecture} is for reward models (train_impl: rm); {step} is a language "
                               f"model: choose {causal_architecture(architecture)}")
    # Before writing anything: an architecture that fits, weights that fit the config.
    architecture = export_architecture(cfg, causal_architecture(architecture))
    check_shapes(cfg, full, step)
    eod, pad = getattr(tokenizer, "eod", None), getattr(tokenizer, "pad", None)
    with replace_dir_when_done(output_dir) as tmp:
        if reward:
            written = save_reward_model(cfg, full, vocab, tmp, eod, pad, architecture)
        else:
            save_hf_model(cfg, full, vocab, tmp, eod=eod, pad=pad, architecture=architecture)
            written = architecture
        tok_note = write_tokenizer(step, tmp, tokenizer)
    return f"{written}: {cfg.num_layers} layers, hidden {cfg.hidden_size}, vocab {vocab}; {tok_note}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog="example: python tools/convert_to_hf.py --input_dir checkpoints --output_dir hf_model")
    p.add_argument("--input_dir", required=True, help="checkpoint directory (save/load) or one global_step<N> dir")
    p.add_argument("--output_dir", required=True, help="HF directory to write (new or empty)")
    p.add_argument("--force", action="store_true", help="replace an existing, non-empty --output_dir")
    p.add_argument("--iteration", type=int, default=None, help="step to export (default: latest)")
    p.add_argument("--architecture", choices=ARCHITECTURES + tuple(map(classifier_architecture, ARCHITECTURES)),
                   default=None,
                   help="Hugging Face class to write (default: the one the model's options fit, "
                        "GPTNeoX, then Llama, then Mistral; ...ForSequenceClassification for a reward model)")
    args = p.parse_args(argv)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # one summary line instead of a progress bar per file
    ok, note = run_reporting_errors("convert_to_hf.py", "the checkpoint's config",
                                    lambda: convert(args.input_dir, args.output_dir, args.iteration, args.force,
                                                    args.architecture),
                                    (CheckpointError, UnsupportedForHF))
    if not ok:
        return 1
    print(f"wrote {args.output_dir} ({note})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
