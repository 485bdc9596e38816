"""What only a GPU shows: the flash attention kernel, bf16, parity with transformers on the
device, a training step that never waits for the device, and the GPU benchmark suite.

Marked ``gpu``: skipped without CUDA. On a GPU machine: ``bash tools/gpu/check.sh`` (or
``pytest -m gpu tests/gpu``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from megatron_lite.config import config_from_flat
from megatron_lite.config.derived import resolve
from megatron_lite.model.gpt import GPTModel

pytestmark = pytest.mark.gpu
REPO = Path(__file__).resolve().parents[2]
VOCAB = 512


def model_cfg(**overrides):
    # head_dim 64 and fp16/bf16: shapes the flash kernel takes
    flat = {"num_layers": 2, "hidden_size": 256, "num_attention_heads": 4, "seq_length": 128,
            "padded_vocab_size": VOCAB, "train_micro_batch_size_per_gpu": 2,
            "hidden_dropout": 0.0, "attention_dropout": 0.0,
            "optimizer": {"params": {"lr": 1e-3}}, **overrides}
    return resolve(config_from_flat(flat), 1).model


def tokens(batch: int = 2, seq: int = 128) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, seq), generator=torch.Generator().manual_seed(0)).cuda()


@pytest.fixture(autouse=True)
def full_fp32_matmuls():
    """fp32 references in full fp32: TF32 would put them near 3e-4 of the truth."""
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32 = before


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    return ((out.float() - ref.float()).norm() / ref.float().norm()).item()


@pytest.mark.parametrize("num_kv_heads", [None, 2])
def test_training_forward_and_backward_take_the_flash_kernel(num_kv_heads):
    # Restricted to FLASH_ATTENTION, SDPA raises "no available kernel" if our call is not
    # eligible (an explicit mask, a bad layout or dtype): plain causal training must be.
    model = GPTModel(model_cfg(num_kv_heads=num_kv_heads), seed=1).cuda().to(torch.bfloat16)
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
        logits = model(tokens())
        logits.float().square().mean().backward()
    assert torch.isfinite(logits).all()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_bf16_logits_are_close_to_fp32():
    model = GPTModel(model_cfg(), seed=2).cuda().eval()
    x = tokens()
    with torch.no_grad():
        ref = model(x)
        out = model.to(torch.bfloat16)(x)
    assert 0 < rel_err(out, ref) < 2e-2  # bf16 operands: 1e-3 to 1e-2


def test_logits_match_transformers_on_the_gpu():
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    from megatron_lite.checkpoint.hf import hf_config_dict, state_dict_to_hf

    cfg = model_cfg(pos_emb="rotary", rotary_pct=0.25, gpt_j_residual=True, no_weight_tying=True)
    ours = GPTModel(cfg, seed=3).eval()
    hf = GPTNeoXForCausalLM._from_config(GPTNeoXConfig(**hf_config_dict(cfg, VOCAB, None, None)),
                                         attn_implementation="sdpa").eval()
    hf.load_state_dict(state_dict_to_hf(ours.state_dict(), VOCAB, head_name="lm_head.weight"))
    ours, hf, x = ours.cuda(), hf.cuda(), tokens()
    with torch.no_grad():
        ref = hf(input_ids=x).logits
        assert rel_err(ours(x), ref) < 1e-4
        ours, hf = ours.to(torch.bfloat16), hf.to(torch.bfloat16)
        assert rel_err(ours(x), hf(input_ids=x).logits) < 2e-2


def _probe(tmp_path: Path, precision: str) -> dict:
    report = tmp_path / f"{precision}.json"
    env = {k: v for k, v in os.environ.items() if k != "MASTER_PORT"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    result = subprocess.run([sys.executable, str(REPO / "tests" / "gpu" / "sync_probe.py"), precision,
                             str(report)], capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(report.read_text())


@pytest.mark.timeout(900)  # the first DeepSpeed engine on a machine JIT-builds fused Adam
def test_fp32_training_step_never_waits_for_the_device(tmp_path):
    report = _probe(tmp_path, "fp32")
    assert all(map(torch.isfinite, torch.tensor(report["losses"])))
    assert report["implicit"] == [] and report["explicit"] == [], report


@pytest.mark.timeout(900)
def test_bf16_training_step_waits_only_in_deepspeeds_optimizer(tmp_path):
    # DeepSpeed's bf16 optimizer decides on the host whether the gradient norm is finite (to
    # skip the step) and whether to clip; nothing of ours, in forward, backward, the loss or
    # the clipping, may wait for the device.
    report = _probe(tmp_path, "bf16")
    assert report["precision"] == "bfloat16"
    assert all(map(torch.isfinite, torch.tensor(report["losses"])))
    assert report["explicit"] == [], report
    assert all("/deepspeed/runtime/" in where for where in report["implicit"]), report


@pytest.mark.meta
@pytest.mark.timeout(900)
def test_gpu_benchmark_records_mfu(tmp_path):
    out = tmp_path / "gpu.json"
    env = {k: v for k, v in os.environ.items() if k != "MASTER_PORT"}
    result = subprocess.run(
        [sys.executable, str(REPO / "tools" / "bench" / "train.py"), "--suite", "gpu", "--shapes", "125M",
         "--micro_batch", "2", "--repeats", "1", "--steps", "2", "--warmup", "1", "--out", str(out)],
        capture_output=True, text=True, timeout=900, cwd=tmp_path, env=env | {"PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 0, result.stderr[-4000:]
    records = json.loads(out.read_text())["records"]
    assert {r["impl"] for r in records} == {"megatron_lite", "transformers", "nanogpt_style"}
    for r in records:
        assert r["precision"] == "bfloat16" and 0 < r["mfu"] < 1 and r["peak_mem_mb"] > 0
