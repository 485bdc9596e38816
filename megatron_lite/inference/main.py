"""generate.py's body: unconditional, input-file and interactive generation.

Generation is tensor-parallel only: with pipeline stages in the config, every rank builds the
whole depth (weights from any layout are merged on load). All ranks sample identically (same
seeds, gathered logits); global rank 0 reads stdin and writes the output.
"""

from __future__ import annotations

import json
import os
from typing import Any

import torch.distributed as dist

from megatron_lite.config import Config
from megatron_lite.inference.generation import Generation, generate_records
from megatron_lite.launcher.worker import device_for, finish_worker, start_worker
from megatron_lite.model.gpt import GPTModel
from megatron_lite.parallel.random import seed_everything
from megatron_lite.utils.files import atomic_write_jsonl, read_utf8
from megatron_lite.utils.logging import get_logger

logger = get_logger(__name__)


class GenerationError(RuntimeError):
    """Bad generation input (empty prompt file, missing checkpoint, ...)."""


def read_prompts(path: str, prompt_end: str) -> list[str]:
    """Prompts split on ``prompt_end``; empty ones are skipped (and counted in a warning)."""
    if not path or not os.path.isfile(path):
        raise GenerationError(f"sample_input_file: {path} not found")
    try:
        parts = read_utf8(path).split(prompt_end or "\n")
    except ValueError as exc:
        raise GenerationError(str(exc)) from None
    prompts = [p for p in parts if p.strip()]
    # A final separator (the usual trailing newline) leaves one empty part: not a prompt.
    skipped = sum(1 for p in parts if not p.strip()) - (1 if parts and parts[-1] == "" else 0)
    if skipped:
        logger.warning("%s: skipped %d empty prompt(s)", path, skipped)
    if not prompts:
        raise GenerationError(f"sample_input_file: {path} holds no prompts")
    return prompts


def record(prompt: str, gen: Generation) -> dict[str, Any]:
    return {"context": prompt, "text": gen.text, "length": len(gen.tokens),
            "finished": gen.finished, "duration_seconds": round(gen.duration_seconds, 4)}


def _sampling(cfg: Config) -> dict[str, Any]:
    g = cfg.generation
    return {"max_new_tokens": g.maximum_tokens, "temperature": g.temperature, "top_k": g.top_k,
            "top_p": g.top_p, "stop_strings": g.stop_strings, "recompute": g.recompute,
            "seed": cfg.training.seed}


def _broadcast(obj: Any) -> Any:
    holder = [obj]
    if dist.get_world_size() > 1:
        dist.broadcast_object_list(holder, src=0)
    return holder[0]


def build_model(cfg: Config, state: Any, device: Any) -> GPTModel:
    from megatron_lite.checkpoint.loader import load_model_weights
    if not cfg.checkpoint.load:
        raise GenerationError("no checkpoint to generate from: set `load` (a training checkpoint "
                              "or a converted Hugging Face model)")
    # Decoding feeds one token at a time: never split along the sequence (the weights are the same).
    state = state.without_sequence_parallel()
    model = GPTModel(cfg.model, state, seed=cfg.training.seed)
    # A reward model's checkpoint is refused by name, not loaded as an LM without its head.
    load_model_weights(model, cfg, state.tp_rank, pipelined=False, lm_head_for=(
        "generate or score text (tools/convert_to_hf.py exports it as a ...ForSequenceClassification)"))
    return model.to(device).eval()


def run(cfg: Config, model: GPTModel, tokenizer: Any) -> int:
    g, rank0 = cfg.generation, dist.get_rank() == 0
    batch = g.generation_batch_size
    if g.text_gen_type == "interactive":
        return _interactive(model, tokenizer, cfg, rank0)
    prompts = [""] * g.num_samples if g.text_gen_type == "unconditional" else \
        read_prompts(g.sample_input_file, g.prompt_end)
    gens = generate_records(model, tokenizer, prompts, batch, **_sampling(cfg))
    records = [record(p, x) for p, x in zip(prompts, gens)]
    if rank0:
        if g.sample_output_file:
            atomic_write_jsonl(g.sample_output_file, records)
            logger.info("wrote %d samples to %s", len(records), g.sample_output_file)
        for rec in records[:10]:
            print(json.dumps(rec, ensure_ascii=False))
    return 0


def _interactive(model: GPTModel, tokenizer: Any, cfg: Config, rank0: bool) -> int:
    while True:
        prompt = None
        if rank0:
            try:
                prompt = input("Prompt (Ctrl-D to quit): ")
            except EOFError:
                prompt = None
        prompt = _broadcast(prompt)
        if prompt is None:
            return 0
        gen = generate_records(model, tokenizer, [prompt], 1, **_sampling(cfg))[0]
        if rank0:
            print(gen.text, flush=True)


def main(argv: list[str] | None = None) -> int:
    from megatron_lite.checkpoint.layout import CheckpointError
    from megatron_lite.tokenizer import build_tokenizer
    args, state = start_worker(argv)
    cfg = args.cfg
    seed_everything(cfg.training.seed, state.tp_rank)
    try:
        tokenizer = build_tokenizer(cfg.tokenizer)
        model = build_model(cfg, state, device_for(args.local_rank))
        code = run(cfg, model, tokenizer)
    except (GenerationError, CheckpointError, ValueError, FileNotFoundError) as exc:
        logger.error("%s", exc)
        code = 1
    finish_worker(code)
    return code  # not reached
