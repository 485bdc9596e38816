"""Sampling and batched KV-cache generation on one process (a byte-level toy tokenizer)."""

from __future__ import annotations

import logging

import pytest
import torch

from megatron_lite.config import config_from_flat
from megatron_lite.config.derived import resolve
from megatron_lite.inference.generation import fit_prompt, generate, generate_records
from megatron_lite.inference.sampling import filter_logits, sample_next
from megatron_lite.model.gpt import GPTModel


class ByteTokenizer:
    vocab_size = 257
    eod = 256

    def tokenize(self, text: str) -> list[int]:
        return list(text.encode())

    def detokenize(self, ids: list[int]) -> str:
        return bytes(i for i in ids if i < 256).decode("utf-8", "replace")


def tiny_model(pos_emb: str = "rotary") -> GPTModel:
    cfg = resolve(config_from_flat({
        "num_layers": 2, "hidden_size": 32, "num_attention_heads": 4, "seq_length": 48,
        "padded_vocab_size": 320, "make_vocab_size_divisible_by": 64, "pos_emb": pos_emb,
        "train_micro_batch_size_per_gpu": 1, "optimizer": {"params": {"lr": 1e-3}}}), 1)
    return GPTModel(cfg.model, seed=3).eval()


PROMPTS = ["hello", "a much longer prompt than the others", "x", "the end"]


@pytest.mark.parametrize("pos_emb", ["rotary", "learned", "alibi"])
@pytest.mark.parametrize("sampling", [{"temperature": 0.0}, {"temperature": 0.9, "top_k": 40, "top_p": 0.9}])
def test_batched_equals_one_at_a_time_and_cache_equals_recompute(pos_emb, sampling):
    model, tok = tiny_model(pos_emb), ByteTokenizer()
    batched = generate_records(model, tok, PROMPTS, batch_size=4, max_new_tokens=10, seed=9, **sampling)
    single = generate_records(model, tok, PROMPTS, batch_size=1, max_new_tokens=10, seed=9, **sampling)
    recompute = generate_records(model, tok, PROMPTS, batch_size=3, max_new_tokens=10, seed=9,
                                 recompute=True, **sampling)
    assert [g.tokens for g in batched] == [g.tokens for g in single]
    assert [g.tokens for g in batched] == [g.tokens for g in recompute]
    assert all(len(g.tokens) == 10 for g in batched)


def test_greedy_matches_argmax_of_full_forward():
    model, tok = tiny_model(), ByteTokenizer()
    [gen] = generate_records(model, tok, ["abc"], max_new_tokens=5)
    ids = tok.tokenize("abc")
    for _ in range(5):
        logits = model(torch.tensor([ids]))[0, -1, : tok.vocab_size]
        ids.append(int(logits.argmax()))
    assert gen.tokens == ids[3:]


def test_seed_reproducible_and_different_seeds_differ():
    model, tok = tiny_model(), ByteTokenizer()
    kw = {"temperature": 1.5, "max_new_tokens": 16}
    a = generate(model, tok, ["q"] * 3, seed=1, **kw)
    assert a == generate(model, tok, ["q"] * 3, seed=1, **kw)
    assert a != generate(model, tok, ["q"] * 3, seed=2, **kw)


def test_filter_logits_top_k_and_top_p():
    logits = torch.log(torch.tensor([[0.5, 0.2, 0.15, 0.1, 0.05]]))
    assert torch.isfinite(filter_logits(logits, top_k=2)).sum() == 2
    kept = torch.isfinite(filter_logits(logits, top_p=0.8))
    assert kept.tolist() == [[True, True, True, False, False]]  # 0.5+0.2 < 0.8 <= +0.15
    assert torch.isfinite(filter_logits(logits, top_p=0.01)).sum() == 1
    gen = torch.Generator().manual_seed(0)
    picks = {int(sample_next(logits, 1.0, top_k=2, generators=[gen])[0]) for _ in range(50)}
    assert picks <= {0, 1}



def test_stop_strings_and_eod_end_a_sample():
    model, tok = tiny_model(), ByteTokenizer()
    [free] = generate_records(model, tok, ["zz"], max_new_tokens=12)
    assert not free.finished
    text = tok.detokenize(free.tokens)
    stop = text[3:5]
    [stopped] = generate_records(model, tok, ["zz"], max_new_tokens=12, stop_strings=[stop])
    assert stopped.finished and stop not in stopped.text and stopped.text == text[: text.index(stop)]


def test_long_prompt_is_left_truncated_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="megatron_lite"):
        ids = fit_prompt(list(range(100)), context=48, max_new_tokens=8, eod=0)
    assert ids == list(range(60, 100))
    assert "left-truncated" in caplog.text
    assert fit_prompt([], 48, 8, eod=7) == [7]
    model, tok = tiny_model(), ByteTokenizer()
    [gen] = generate_records(model, tok, ["y" * 200], max_new_tokens=8)
    assert len(gen.prompt_tokens) == 40 and len(gen.tokens) == 8


def test_empty_stop_string_stops_nothing():
    # lm-eval adds the end-of-document token's text to a task's stop strings; a tokenizer that
    # decodes it to "" must not end every generation before its first token.
    model, tok = tiny_model(), ByteTokenizer()
    plain = generate_records(model, tok, PROMPTS, batch_size=4, max_new_tokens=6, seed=1)
    with_empty = generate_records(model, tok, PROMPTS, batch_size=4, max_new_tokens=6, seed=1,
                                  stop_strings=["", "\x00never"])
    assert [g.tokens for g in with_empty] == [g.tokens for g in plain]
    assert all(len(g.tokens) == 6 for g in with_empty)
