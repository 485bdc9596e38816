#!/usr/bin/env python
"""Generation throughput: megatron_lite vs ``transformers`` ``generate`` on the same weights.

    python tools/bench/generate.py [--layers 6 --hidden 512 --heads 8] [--new-tokens 64] [--repeats 3]

A random-init GPTNeoXForCausalLM (Pythia-70M's shape by default) is saved, loaded by both
(megatron_lite through ``load_model``), and asked for greedy continuations of 32-token prompts
at batch 1 and 8, in alternation; medians of generated tokens/s are printed side by side
with the ratio. Both use a KV cache and run on the CPU (or the GPU if there is one).

``--without-cpu-decoding`` adds a third column: megatron_lite with plain ``F.linear`` products
(``inference/cpu_decoding.py`` switched off), to measure what that trick pays.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time

import torch

import megatron_lite
from megatron_lite.inference import generation
from megatron_lite.inference.generation import SamplingParams, generate_batch


class _Ids:
    """A tokenizer stand-in: the benchmark works on token ids."""

    def __init__(self, vocab: int) -> None:
        self.vocab_size, self.eod = vocab, None

    def detokenize(self, ids: list[int]) -> str:
        return ""


def ours_tokens_per_s(model, prompts: torch.Tensor, new: int) -> float:
    params = SamplingParams(max_new_tokens=new, temperature=0.0)
    start = time.perf_counter()
    out = generate_batch(model.gpt, _Ids(model.vocab_size), prompts.tolist(), params)
    seconds = time.perf_counter() - start
    return sum(len(g.tokens) for g in out) / seconds


def plain_tokens_per_s(model, prompts: torch.Tensor, new: int) -> float:
    """Ours with plain F.linear products (the CPU decoding product switched off)."""
    real = generation.few_row_products
    generation.few_row_products = lambda device: contextlib.nullcontext()
    try:
        return ours_tokens_per_s(model, prompts, new)
    finally:
        generation.few_row_products = real


@torch.no_grad()
def hf_tokens_per_s(model, prompts: torch.Tensor, new: int) -> float:
    start = time.perf_counter()
    out = model.generate(prompts, max_new_tokens=new, min_new_tokens=new, do_sample=False,
                         pad_token_id=0, attention_mask=torch.ones_like(prompts))
    seconds = time.perf_counter() - start
    return (out.shape[1] - prompts.shape[1]) * prompts.shape[0] / seconds


def main() -> int:
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--vocab", type=int, default=50304)
    p.add_argument("--prompt-tokens", type=int, default=32)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=None)
    p.add_argument("--without-cpu-decoding", action="store_true",
                   help="also time megatron_lite with plain F.linear products (a third column)")
    args = p.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    cfg = GPTNeoXConfig(vocab_size=args.vocab, hidden_size=args.hidden, num_hidden_layers=args.layers,
                        num_attention_heads=args.heads, intermediate_size=4 * args.hidden,
                        max_position_embeddings=2048, use_parallel_residual=True)
    results = {}
    with tempfile.TemporaryDirectory() as work:
        GPTNeoXForCausalLM(cfg).save_pretrained(work)
        hf = GPTNeoXForCausalLM.from_pretrained(work, attn_implementation="sdpa").to(device).eval()
        ours, _ = megatron_lite.load_model(work, device=device)
    for batch in (1, 8):
        prompts = torch.randint(0, args.vocab, (batch, args.prompt_tokens),
                                generator=torch.Generator().manual_seed(batch)).to(device)
        ours_tokens_per_s(ours, prompts, 4), hf_tokens_per_s(hf, prompts, 4)  # warm-up
        timers = {"megatron_lite": (ours_tokens_per_s, ours), "transformers": (hf_tokens_per_s, hf)}
        if args.without_cpu_decoding:
            timers["megatron_lite_plain_linear"] = (plain_tokens_per_s, ours)
        runs: dict[str, list[float]] = {name: [] for name in timers}
        for _ in range(args.repeats):
            for name, (timer, model) in timers.items():
                runs[name].append(timer(model, prompts, args.new_tokens))
        results[batch] = {k: statistics.median(v) for k, v in runs.items()}
    print(f"{args.layers} layers x {args.hidden}, vocab {args.vocab}, {args.prompt_tokens}-token prompts, "
          f"{args.new_tokens} new tokens, greedy, {device}, median of {args.repeats}")
    print(f"{'batch':>6}{'megatron_lite tok/s':>22}{'transformers tok/s':>21}{'ratio':>8}")
    for batch, r in results.items():
        print(f"{batch:>6}{r['megatron_lite']:>22.1f}{r['transformers']:>21.1f}"
              f"{r['megatron_lite'] / r['transformers']:>7.2f}x")
        if "megatron_lite_plain_linear" in r:
            plain = r["megatron_lite_plain_linear"]
            print(f"{'':>6}  without the CPU decoding product: {plain:.1f} tok/s; "
                  f"with it {r['megatron_lite'] / plain:.2f}x")
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(results, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
