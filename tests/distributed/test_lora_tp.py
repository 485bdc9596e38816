"""LoRA under tensor parallelism (issue #20): on 2 gloo ranks the adapters start from the same
numbers as on one process (layout-independent init), and with the same adapters the logits,
loss, adapter gradients (gathered and merged) and the clipped gradient norm equal the tp = 1
model's, for a GPTNeoX-style model and a Llama-style one (GLU ``[value_r; gate_r]`` rows, GQA),
with and without sequence parallelism."""

from __future__ import annotations

import torch

from .spawn import run_distributed

VARIANTS = {
    "neox": {"pos_emb": "rotary", "rotary_pct": 0.25, "gpt_j_residual": True},
    # intermediate_size 576 -> the gated width 192, divisible by tp 2
    "llama": {"pos_emb": "rotary", "norm": "rmsnorm", "activation": "swiglu", "num_kv_heads": 2,
              "use_bias_in_mlp": False, "intermediate_size": 576, "no_weight_tying": True},
}


def _cfg(variant: str, tp: int, world: int):
    from megatron_lite.config import config_from_flat
    from megatron_lite.config.derived import resolve

    return resolve(config_from_flat({
        "num_layers": 2, "hidden_size": 64, "num_attention_heads": 4, "seq_length": 16,
        "train_micro_batch_size_per_gpu": 2, "optimizer": {"params": {"lr": 1e-3}},
        "padded_vocab_size": 128, "make_vocab_size_divisible_by": 32, "model_parallel_size": tp,
        "lora": {"rank": 4, "alpha": 8}, **VARIANTS[variant]}), world)


def _trained_adapters(cfg) -> dict[str, torch.Tensor]:
    """Full (tp = 1) adapters with B not zero, the same in every process."""
    from megatron_lite.config.lora import LoraSettings
    from megatron_lite.model.gpt import GPTModel
    from megatron_lite.model.lora import apply_lora

    one = apply_lora(GPTModel(cfg.model, seed=7), LoraSettings.of(cfg.post_training.lora))
    gen = torch.Generator().manual_seed(11)
    return {name: torch.randn(p.shape, generator=gen) * 0.05 for name, p in one.named_parameters() if p.requires_grad}


def _measure(cfg, state, tp: int) -> dict:
    import torch.distributed as dist

    from megatron_lite.checkpoint.sharding import cut_shard, merge_shards
    from megatron_lite.config.lora import LoraSettings
    from megatron_lite.model.gpt import GPTModel
    from megatron_lite.model.lora import apply_lora
    from megatron_lite.parallel.cross_entropy import masked_mean_loss
    from megatron_lite.training.optimizer import clip_grad_norm

    def gathered(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {}
        for name, t in tensors.items():
            parts = [t.contiguous()] if tp == 1 else [torch.empty_like(t) for _ in range(tp)]
            if tp > 1:
                dist.all_gather(parts, t.contiguous(), group=state.tp_group)
            out[name] = merge_shards(name, parts, glu=glu)
        return out

    glu = cfg.model.activation == "swiglu"
    model = apply_lora(GPTModel(cfg.model, state, seed=7), LoraSettings.of(cfg.post_training.lora))
    adapters = {n: p for n, p in model.named_parameters() if p.requires_grad}
    initial = gathered({n: p.detach().clone() for n, p in adapters.items()})
    with torch.no_grad():
        for name, param in adapters.items():
            param.copy_(cut_shard(name, _trained_adapters(cfg)[name], tp, state.tp_rank, glu=glu))
    gen = torch.Generator().manual_seed(3)
    tokens, labels = torch.randint(0, 120, (2, 16), generator=gen), torch.randint(0, 120, (2, 16), generator=gen)
    with torch.no_grad():
        logits = model(tokens, gather_logits=True)
    loss = masked_mean_loss(model(tokens), labels, torch.ones(2, 16), state)
    loss.backward()
    grads = gathered({n: p.grad for n, p in adapters.items()})
    norm = clip_grad_norm(list(adapters.values()), 1e9, state)
    return {"initial": initial, "logits": logits, "loss": loss.detach(), "grads": grads, "norm": norm}


def _run(rank: int, world: int, tp: int) -> dict:
    import dataclasses

    import torch.distributed as dist

    from megatron_lite.launcher.worker import init_distributed

    results, state = {}, None
    for variant in VARIANTS:
        cfg = _cfg(variant, tp, world)
        state = state or init_distributed(cfg)
        results[variant] = _measure(cfg, state, tp)
        results[f"{variant}+sp"] = _measure(cfg, dataclasses.replace(state, sequence_parallel=True), tp)
    dist.destroy_process_group()
    return results


def test_lora_tp2_equals_tp1():
    from megatron_lite.parallel.state import ParallelState

    reference = {v: _measure(_cfg(v, 1, 1), ParallelState.single(), 1) for v in VARIANTS}
    reference.update({f"{v}+sp": ref for v, ref in reference.items()})
    for got in run_distributed(_run, 2, 2):
        for variant, ref in reference.items():
            for name, value in ref["initial"].items():
                assert torch.equal(got[variant]["initial"][name], value), f"{variant} {name}: init differs"
            torch.testing.assert_close(got[variant]["logits"], ref["logits"], rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(got[variant]["loss"], ref["loss"], rtol=1e-6, atol=1e-6)
            torch.testing.assert_close(got[variant]["norm"], ref["norm"], rtol=1e-5, atol=1e-6)
            for name, grad in ref["grads"].items():
                torch.testing.assert_close(got[variant]["grads"][name], grad, rtol=1e-4, atol=1e-6,
                                           msg=lambda m, n=name, v=variant: f"{v} {n}: {m}")
