"""LR schedules as GPT-NeoX computes them, and weight-decay parameter groups."""

from __future__ import annotations

import math

import pytest
import torch

from megatron_lite.config import config_from_flat
from megatron_lite.config.derived import resolve
from megatron_lite.model.gpt import GPTModel
from megatron_lite.training.lr_schedule import AnnealingLR
from megatron_lite.training.optimizer import param_groups


def lrs(style: str, warmup: int = 10, decay: int = 110, steps: int = 130) -> list[float]:
    sched = AnnealingLR(None, 1.0e-3, warmup, decay, style, min_lr=1.0e-4)
    out = [sched.get_lr()]
    for _ in range(steps):
        sched.step()
        out.append(sched.get_lr())
    return out


def test_warmup_is_linear_from_zero():
    values = lrs("cosine")
    assert values[0] == 0.0
    assert values[5] == pytest.approx(0.5e-3)
    assert values[10] == pytest.approx(1.0e-3)


@pytest.mark.parametrize("style", ["linear", "cosine", "exponential", "constant"])
def test_decay_styles(style):
    values = lrs(style)
    after = values[10:111]
    assert all(a >= b - 1e-12 for a, b in zip(after, after[1:])), "non-increasing after warmup"
    assert min(values[1:]) >= 1.0e-4 - 1e-12, "never below min_lr"
    mid = values[60]  # halfway through the decay
    expected = {
        "linear": max(1e-3 * 0.5, 1e-4),
        "cosine": 1e-4 + 0.9e-3 * 0.5 * (1 + math.cos(math.pi * 0.5)),
        "exponential": 1e-3 * math.exp(-0.693 * 0.5),
        "constant": 1e-3,
    }[style]
    assert mid == pytest.approx(expected)
    if style in ("linear", "cosine"):
        assert values[110] == pytest.approx(1.0e-4) and values[130] == pytest.approx(1.0e-4)


def test_state_dict_resumes_the_position():
    a = AnnealingLR(None, 1e-3, 10, 100, "cosine", 1e-4)
    for _ in range(37):
        a.step()
    b = AnnealingLR(None, 1e-3, 10, 100, "cosine", 1e-4)
    b.load_state_dict(a.state_dict())
    assert b.get_lr() == a.get_lr()


def test_scheduler_sets_optimizer_lr():
    param = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.AdamW([param], lr=123.0)
    sched = AnnealingLR(opt, 1e-3, 4, 10, "linear")
    sched.step(2)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5e-3)


def test_no_weight_decay_on_biases_and_norms():
    cfg = resolve(config_from_flat({
        "num_layers": 1, "hidden_size": 32, "num_attention_heads": 4, "seq_length": 8,
        "padded_vocab_size": 64, "make_vocab_size_divisible_by": 64,
        "train_micro_batch_size_per_gpu": 1, "optimizer": {"params": {"lr": 1e-3}}}), 1)
    model = GPTModel(cfg.model)
    decay, no_decay = param_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    no_decay_names = {names[id(p)] for p in no_decay["params"]}
    assert "layers.0.input_layernorm.weight" in no_decay_names
    assert "layers.0.attention.query_key_value.bias" in no_decay_names
    assert all(n.endswith(("bias", "layernorm.weight")) for n in no_decay_names)
    assert "embedding.word_embeddings.weight" in {names[id(p)] for p in decay["params"]}
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
