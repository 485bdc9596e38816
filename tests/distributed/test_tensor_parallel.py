"""Tensor-parallel invariance: tp=2 and tp=4 give the tp=1 logits, loss and parameter
gradients (gathered and merged) for sequential and parallel residual, GQA and SwiGLU; and so
does sequence parallelism (``sequence_parallel``) on top of each, where the replicated
parameters (norms, row-parallel biases) must also get the same gradient on every rank."""

from __future__ import annotations

import pytest
import torch

from .spawn import run_distributed

VARIANTS = {
    "sequential": {"gpt_j_residual": False, "pos_emb": "rotary", "rotary_pct": 0.25},
    "parallel_residual": {"gpt_j_residual": True, "pos_emb": "rotary", "no_weight_tying": True},
    "gqa": {"num_kv_heads": 4, "pos_emb": "rotary"},
    # intermediate_size 576 -> GPT-NeoX's gated width 192, divisible by tp 4 (its default, 85, is not)
    "swiglu_alibi_rms": {"activation": "swiglu", "pos_emb": "alibi", "norm": "rmsnorm",
                          "use_bias_in_mlp": False, "intermediate_size": 576},
    "learned_untied": {"pos_emb": "learned", "no_weight_tying": True},
}


def _flat(variant: str) -> dict:
    return {
        "num_layers": 2, "hidden_size": 64, "num_attention_heads": 8, "seq_length": 16,
        "train_micro_batch_size_per_gpu": 2, "optimizer": {"params": {"lr": 1e-3}},
        "padded_vocab_size": 128, "make_vocab_size_divisible_by": 32, **VARIANTS[variant],
    }


def _run(rank: int, world: int, tp: int) -> dict:
    import dataclasses

    import torch.distributed as dist

    from megatron_lite.config import config_from_flat
    from megatron_lite.config.derived import resolve
    from megatron_lite.launcher.worker import init_distributed

    results = {}
    state = None
    for variant in VARIANTS:
        cfg = resolve(config_from_flat({**_flat(variant), "model_parallel_size": tp}), world)
        if state is None:
            state = init_distributed(cfg)
        results[variant] = _measure(cfg, state, tp)
        if tp > 1:
            results[f"{variant}+sp"] = _measure(cfg, dataclasses.replace(state, sequence_parallel=True), tp)
    dist.destroy_process_group()
    return results


def _measure(cfg, state, tp: int) -> dict:
    """Logits, loss and merged gradients of one model; ``spread``: for each replicated
    parameter, the largest difference between two ranks' gradients."""
    import torch.distributed as dist

    from megatron_lite.checkpoint.sharding import merge_shards, split_dim
    from megatron_lite.model.gpt import GPTModel
    from megatron_lite.parallel.cross_entropy import masked_mean_loss

    model = GPTModel(cfg.model, state, seed=7)
    gen = torch.Generator().manual_seed(3)
    tokens = torch.randint(0, 120, (2, 16), generator=gen)
    labels = torch.randint(0, 120, (2, 16), generator=gen)
    mask = (torch.rand(2, 16, generator=gen) > 0.2).long()
    with torch.no_grad():
        logits = model(tokens, gather_logits=True)
    loss = masked_mean_loss(model(tokens), labels, mask, state)
    loss.backward()
    grads, spread = {}, {}
    glu = cfg.model.activation in ("swiglu", "geglu")
    for name, param in model.named_parameters():
        parts = [torch.empty_like(param.grad) for _ in range(tp)]
        dist.all_gather(parts, param.grad.contiguous(), group=state.tp_group)
        grads[name] = merge_shards(name, parts, glu=glu)
        if split_dim(name) is None:
            spread[name] = max(float((part - parts[0]).abs().max()) for part in parts)
    return {"logits": logits, "loss": loss.detach(), "grads": grads, "spread": spread}


@pytest.fixture(scope="module")
def reference():
    return run_distributed(_run, 1, 1)[0]


@pytest.mark.parametrize("tp", [2, 4])
def test_tp_matches_single_rank(reference, tp):
    per_rank = run_distributed(_run, tp, tp)
    checked = [(v, ref) for v, ref in reference.items()] + [(f"{v}+sp", ref) for v, ref in reference.items()]
    for variant, ref in checked:
        for rank_result in per_rank:
            got = rank_result[variant]
            assert max(got["spread"].values()) <= 1e-6, f"{variant}: replicated gradients differ: {got['spread']}"
            torch.testing.assert_close(got["logits"], ref["logits"], rtol=1e-5, atol=1e-5,
                                       msg=lambda m, v=variant: f"{v} logits: {m}")
            torch.testing.assert_close(got["loss"], ref["loss"], rtol=1e-6, atol=1e-6)
            assert got["grads"].keys() == ref["grads"].keys()
            for name, grad in ref["grads"].items():
                torch.testing.assert_close(got["grads"][name], grad, rtol=1e-4, atol=1e-6,
                                           msg=lambda m, n=name, v=variant: f"{v} {n}: {m}")
