#!/usr/bin/env python
"""What each GPT-NeoX architecture feature costs a training step, in megatron_lite's own model.

    python tools/bench/arch_cost.py [--blocks 12] [--steps 10] [--out FILE]

Builds ``GPTModel`` at nanoGPT's CPU shape (4 layers x 128, 4 heads, context 64, batch 12,
65-token vocabulary) in four architectures: GPT-NeoX's (rotary, biases, untied head; what
``transformers``' GPTNeoX builds), with learned positions instead of rotary, without biases, and
nanoGPT's (learned positions, no biases, tied head). Times forward + backward + zero_grad (no
optimizer) in blocks of ``--steps`` steps, alternating between the four (order reversed every
other round), and reports each one's median ms/step and the median over rounds of GPT-NeoX's
time over its own (above 1: cheaper than GPT-NeoX's architecture).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from megatron_lite.config import config_from_flat
from megatron_lite.config.derived import resolve
from megatron_lite.model.gpt import GPTModel

SHAPE = {"num_layers": 4, "hidden_size": 128, "num_attention_heads": 4, "seq_length": 64,
         "max_position_embeddings": 64, "padded_vocab_size": 65, "train_micro_batch_size_per_gpu": 12}
NO_BIAS = {"use_bias_in_attn_linear": False, "use_bias_in_mlp": False, "use_bias_in_norms": False}
VARIANTS = {
    "gpt_neox": {},
    "learned_positions": {"pos_emb": "learned"},
    "no_biases": NO_BIAS,
    "nanogpt": {"pos_emb": "learned", "no_weight_tying": False, **NO_BIAS},
}


def build(variant: str) -> GPTModel:
    flat = {**SHAPE, "pos_emb": "rotary", "no_weight_tying": True, "hidden_dropout": 0.0,
            "attention_dropout": 0.0, "optimizer": {"params": {"lr": 1e-3}}, **VARIANTS[variant]}
    return GPTModel(resolve(config_from_flat(flat), 1).model, seed=1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=12, help="timed rounds (each times every variant once)")
    parser.add_argument("--steps", type=int, default=10, help="steps per timed block")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)

    models = {name: build(name) for name in VARIANTS}
    vocab, batch, seq = SHAPE["padded_vocab_size"], SHAPE["train_micro_batch_size_per_gpu"], SHAPE["seq_length"]
    tokens = torch.randint(vocab, (batch, seq + 1), generator=torch.Generator().manual_seed(0))
    x, y = tokens[:, :-1], tokens[:, 1:]

    def block(model: GPTModel, steps: int) -> float:
        start = time.perf_counter()
        for _ in range(steps):
            F.cross_entropy(model(x).reshape(-1, vocab), y.reshape(-1)).backward()
            model.zero_grad(set_to_none=True)
        return 1000.0 * (time.perf_counter() - start) / steps

    for model in models.values():  # warm up
        block(model, 3)
    times: dict[str, list[float]] = {name: [] for name in models}
    for r in range(args.blocks):
        for name in (list(models) if r % 2 == 0 else list(models)[::-1]):
            times[name].append(block(models[name], args.steps))
    results = {}
    print(f"{'architecture':<20}{'ms/step':>10}{'gpt_neox / it':>15}")
    for name, ms in times.items():
        ratio = statistics.median(a / b for a, b in zip(times["gpt_neox"], ms))
        results[name] = {"ms_per_step": statistics.median(ms), "gpt_neox_over_it": ratio, "ms_per_block": ms}
        print(f"{name:<20}{statistics.median(ms):>10.2f}{ratio:>14.3f}x")
    if args.out:
        with open(args.out, "w") as handle:
            json.dump({"shape": SHAPE, "blocks": args.blocks, "steps": args.steps, "torch": torch.__version__,
                       "threads": torch.get_num_threads(), "results": results}, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
