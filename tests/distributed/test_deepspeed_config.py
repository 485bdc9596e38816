"""The DeepSpeed config we build is accepted by ``deepspeed.initialize`` and trains the same
under ZeRO stages 0-3 on 2 gloo ranks as on one rank."""

from __future__ import annotations

import torch

from megatron_lite.config import config_from_flat
from megatron_lite.config.deepspeed_config import build_deepspeed_config
from megatron_lite.config.derived import resolve

from .spawn import run_distributed

FLAT = {
    "num_layers": 1, "hidden_size": 16, "num_attention_heads": 2, "seq_length": 8,
    "train_batch_size": 8, "gradient_accumulation_steps": 2,
    "optimizer": {"type": "Adam", "params": {"lr": 0.01, "betas": [0.9, 0.95]}},
    "weight_decay": 0.1, "gradient_clipping": 1.0,
}


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return torch.randn(8, 16, generator=gen), torch.randn(8, 1, generator=gen)


def _train(rank: int, world: int, stage: int) -> dict:
    import deepspeed
    import torch.distributed as dist

    from megatron_lite.launcher.worker import init_distributed

    cfg = resolve(config_from_flat({**FLAT, "zero_optimization": {"stage": stage}}), world)
    state = init_distributed(cfg)
    ds_config = build_deepspeed_config(cfg, on_gpu=False)
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.Linear(32, 1))
    engine, optimizer, _, _ = deepspeed.initialize(
        model=model, model_parameters=model.parameters(), config=ds_config, mpu=state
    )
    x, y = _data()
    micro = cfg.training.train_micro_batch_size_per_gpu
    losses = []
    for _step in range(2):
        for m in range(cfg.training.gradient_accumulation_steps):
            # global batch order: micro step m covers samples [m*micro*dp, (m+1)*micro*dp)
            start = m * micro * world + rank * micro
            loss = torch.nn.functional.mse_loss(engine(x[start:start + micro]), y[start:start + micro])
            engine.backward(loss)
            engine.step()
            losses.append(loss.item())
    if stage == 3:
        params = [p for p in engine.module.parameters()]
        with deepspeed.zero.GatheredParameters(params):
            flat = torch.cat([p.detach().flatten().clone() for p in params])
    else:
        flat = torch.cat([p.detach().flatten() for p in engine.module.parameters()])
    summary = {
        "train_batch_size": engine.train_batch_size(),
        "micro": engine.train_micro_batch_size_per_gpu(),
        "gas": engine.gradient_accumulation_steps(),
        "zero_stage": engine.zero_optimization_stage(),
        "optimizer": type(optimizer).__name__,
        "params": flat,
        "global_steps": engine.global_steps,
        # on a GPU it would synchronize the device at every forward and step
        "throughput_timer": engine.tput_timer.config.enabled,
    }
    dist.destroy_process_group()
    return summary


def test_deepspeed_accepts_config_and_zero_stages_agree():
    reference = run_distributed(_train, 1, 0)[0]
    assert reference["train_batch_size"] == 8 and reference["gas"] == 2 and reference["micro"] == 4
    assert reference["global_steps"] == 2
    assert reference["throughput_timer"] is False
    for stage in (0, 1, 2, 3):
        results = run_distributed(_train, 2, stage)
        for res in results:
            assert res["zero_stage"] == stage
            assert res["train_batch_size"] == 8 and res["micro"] == 2 and res["gas"] == 2
            torch.testing.assert_close(res["params"], reference["params"], rtol=1e-4, atol=1e-5)
