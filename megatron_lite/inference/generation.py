"""Batched text generation with a KV cache.

Prompts of different lengths are left-padded into one batch. Each sequence keeps its own
positions (0 at its first real token) and never attends to padding, so a prompt generates the
same text alone or in a batch; each sequence also has its own random generator (seeded by
``seed`` and its index in the request), so sampling is reproducible and batch-independent.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch

from megatron_lite.inference.cpu_decoding import few_row_products
from megatron_lite.inference.sampling import sample_next
from megatron_lite.model.gpt import GPTModel
from megatron_lite.utils.logging import get_logger

logger = get_logger(__name__)


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int = 64
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 0.0
    stop_strings: tuple[str, ...] = ()
    recompute: bool = False
    seed: int = 1234


@dataclass
class Generation:
    """One finished request: the (possibly truncated) prompt ids, the new ids and text."""

    prompt_tokens: list[int]
    tokens: list[int] = field(default_factory=list)
    text: str = ""
    finished: bool = False  # stopped at end-of-document or a stop string (not the length limit)
    duration_seconds: float = 0.0


def _left_pad(prompts: list[list[int]], pad: int, device: torch.device):
    width = max(len(p) for p in prompts)
    tokens = torch.full((len(prompts), width), pad, dtype=torch.long, device=device)
    real = torch.zeros((len(prompts), width), dtype=torch.bool, device=device)
    for row, prompt in enumerate(prompts):
        tokens[row, width - len(prompt):] = torch.tensor(prompt, dtype=torch.long, device=device)
        real[row, width - len(prompt):] = True
    return tokens, real


def _prefill_mask(real: torch.Tensor) -> torch.Tensor:
    """[b, 1, s, s]: causal, no padding keys; a padding query sees itself (never an empty row)."""
    s = real.shape[1]
    causal = torch.ones(s, s, dtype=torch.bool, device=real.device).tril()
    eye = torch.eye(s, dtype=torch.bool, device=real.device)
    return (causal & real[:, None, None, :]) | eye


class _Stops:
    """End-of-document and stop-string bookkeeping for a batch."""

    def __init__(self, tokenizer: Any, eod: int | None, stop_strings: tuple[str, ...], batch: int) -> None:
        # An empty stop string would match at once (e.g. an end-of-document token that decodes
        # to ""): it stops nothing; the end-of-document token itself is checked by id.
        self.tokenizer, self.eod = tokenizer, eod
        self.stop_strings = tuple(s for s in stop_strings if s)
        self.done = [False] * batch

    def update(self, row: int, generated: list[int]) -> None:
        if self.eod is not None and generated and generated[-1] == self.eod:
            self.done[row] = True
        elif self.stop_strings and any(s in self.tokenizer.detokenize(generated) for s in self.stop_strings):
            self.done[row] = True

    def text(self, generated: list[int]) -> str:
        ids = [t for t in generated if t != self.eod]
        text = self.tokenizer.detokenize(ids) if ids else ""
        cuts = [text.index(s) for s in self.stop_strings if s in text]
        return text[: min(cuts)] if cuts else text


@torch.no_grad()
def generate_batch(model: GPTModel, tokenizer: Any, prompts: list[list[int]], params: SamplingParams,
                   first_index: int = 0) -> list[Generation]:
    """Generate for a batch of tokenized prompts (each non-empty, already fitted to the context)."""
    start = time.perf_counter()
    device = next(model.parameters()).device
    eod = getattr(tokenizer, "eod", None)
    pad = eod if eod is not None else 0
    tokens, real = _left_pad(prompts, pad, device)
    b, width = tokens.shape  # [b, s]
    max_len = width + params.max_new_tokens
    gens = [torch.Generator().manual_seed(params.seed + first_index + i) for i in range(b)]
    stops = _Stops(tokenizer, eod, params.stop_strings, b)
    cache = None if params.recompute else model.new_kv_cache(b, max_len)
    with few_row_products(device):
        out = _decode(model, tokenizer, tokens, real, cache, params, gens, stops)
    seconds = time.perf_counter() - start
    return [Generation(prompt_tokens=p, tokens=o, text=stops.text(o), finished=stops.done[i],
                       duration_seconds=seconds) for i, (p, o) in enumerate(zip(prompts, out))]


def _decode(model: GPTModel, tokenizer: Any, tokens: torch.Tensor, real: torch.Tensor, cache: Any,
            params: SamplingParams, gens: list[torch.Generator], stops: _Stops) -> list[list[int]]:
    """The generation loop: prefill, then one token per step (all of it when ``recompute``)."""
    b, vocab, device = tokens.shape[0], tokenizer.vocab_size, tokens.device
    out: list[list[int]] = [[] for _ in range(b)]
    step_in, mask = tokens, _prefill_mask(real)
    positions = (real.long().cumsum(-1) - 1).clamp(min=0)
    for _ in range(params.max_new_tokens):
        logits = model(step_in, position_ids=positions, cache=cache, attention_mask=mask,
                       gather_logits=True, last_only=True)[:, -1, :vocab]  # [b, V]
        nxt = sample_next(logits, params.temperature, params.top_k, params.top_p, gens)
        for row in range(b):
            if not stops.done[row]:
                out[row].append(int(nxt[row]))
                stops.update(row, out[row])
        if all(stops.done):
            break
        tokens = torch.cat([tokens, nxt.unsqueeze(1)], dim=1)
        real = torch.cat([real, torch.ones(b, 1, dtype=torch.bool, device=device)], dim=1)
        if cache is None:  # recompute: the whole sequence again, no cache
            step_in, mask = tokens, _prefill_mask(real)
            positions = (real.long().cumsum(-1) - 1).clamp(min=0)
        else:
            step_in, mask = nxt.unsqueeze(1), real[:, None, None, :]
            positions = positions[:, -1:] + 1
    return out


def fit_prompt(ids: list[int], context: int, max_new_tokens: int, eod: int | None) -> list[int]:
    """Left-truncate to leave room for the new tokens; an empty prompt becomes end-of-document."""
    if not ids:
        return [eod if eod is not None else 0]
    room = max(context - max_new_tokens, 1)
    if len(ids) > room:
        logger.warning("prompt of %d tokens left-truncated to its last %d (context %d, %d new)",
                       len(ids), room, context, max_new_tokens)
        ids = ids[-room:]
    return ids


def generate(model: Any, tokenizer: Any, prompts: list[str], batch_size: int = 8,
             **sampling: Any) -> list[str]:
    """Texts generated for ``prompts`` (the Python API). ``sampling``: SamplingParams fields."""
    return [g.text for g in generate_records(model, tokenizer, prompts, batch_size, **sampling)]


def generate_records(model: Any, tokenizer: Any, prompts: list[str], batch_size: int = 8,
                     **sampling: Any) -> list[Generation]:
    """Like :func:`generate`, with token ids, finished flags and timing per prompt."""
    gpt: GPTModel = getattr(model, "gpt", model)
    gpt.eval()
    params = SamplingParams(**{k: tuple(v) if k == "stop_strings" and v else v
                               for k, v in sampling.items() if v is not None})
    max_new = min(params.max_new_tokens, gpt.cfg.max_position_embeddings - 1)
    params = SamplingParams(**{**params.__dict__, "max_new_tokens": max_new})
    eod = getattr(tokenizer, "eod", None)
    ids = [fit_prompt(tokenizer.tokenize(p), gpt.cfg.max_position_embeddings, max_new, eod) for p in prompts]
    results: list[Generation] = []
    for start in range(0, len(ids), batch_size):
        results += generate_batch(gpt, tokenizer, ids[start:start + batch_size], params, first_index=start)
    return results
