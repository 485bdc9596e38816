"""LoRA through deepy.py on CPU (issue #20): adapters trained on a frozen base checkpoint, a
resumed LoRA run (dropout on) equal to the uninterrupted one bit for bit, the checkpoint holding
the adapters only (a few percent of a full one) and naming its base; tools/merge_lora.py's
merged checkpoint and peft export give the adapter model's logits (ours and transformers'/peft's);
DPO with LoRA compares against the base (the policy with its adapters off); a bad target is one
line. The tp = 2 invariance: tests/distributed/test_lora_tp.py."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch
import yaml

from tests.integration.test_post_training import dpo_config, preference_pairs, write_pairs
from tests.integration.test_train import base_config, records, run_train, train_losses
from tests.unit.test_hf_interop import tool_main

LORA = {"rank": 2, "alpha": 4, "dropout": 0.1}
SHAPE = {"hidden_size": 128, "seq_length": 32, "train_micro_batch_size_per_gpu": 4, "lr_decay_style": "constant",
         "warmup": 0.0, "eval_interval": 100}


def lora_config(tmp_path: Path, data_prefix: str, base: Path, **overrides) -> dict:
    keys = {"load": str(base), "finetune": True, "lora": LORA, "train_iters": 4, "save": str(tmp_path / "lora"),
            "checkpoint_factor": 2, **overrides}
    return base_config(tmp_path, data_prefix, **SHAPE, **keys)


def step_bytes(step: Path) -> int:
    return sum(f.stat().st_size for f in step.rglob("*") if f.is_file())


@pytest.fixture(scope="module")
def base_ckpt(tmp_path_factory, data_prefix) -> Path:
    """A full trainer checkpoint (weights and Adam states) of a briefly trained model: the base."""
    tmp = tmp_path_factory.mktemp("base")
    run_train(tmp, base_config(tmp, data_prefix, **SHAPE, train_iters=2, save=str(tmp / "ckpt")))
    return tmp / "ckpt"


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, data_prefix, base_ckpt) -> Path:
    """LoRA on the base for 4 iterations, saved at 2 and 4."""
    tmp = tmp_path_factory.mktemp("lora")
    run_train(tmp, lora_config(tmp, data_prefix, base_ckpt))
    return tmp


def test_lora_resume_is_bit_exact(tmp_path, data_prefix, base_ckpt, lora_run):
    cfg = lora_config(tmp_path, data_prefix, base_ckpt, finetune=False, load=str(lora_run / "lora"), iteration=2)
    run_train(tmp_path, cfg)
    assert train_losses(tmp_path) == {it: loss for it, loss in train_losses(lora_run).items() if it > 2}


def test_lora_checkpoint_holds_adapters_names_its_base_and_is_small(lora_run, base_ckpt):
    step = lora_run / "lora" / "global_step4"
    saved = yaml.safe_load((step / "config.yml").read_text())
    assert saved["lora"] == {**LORA, "alpha": 4.0, "base": str(base_ckpt / "global_step2"),
                             "targets": ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"]}
    module = torch.load(step / "mp_rank_00_model_states.pt", weights_only=False)["module"]
    assert module and all(k.endswith((".lora_A.default.weight", ".lora_B.default.weight")) for k in module)
    ratio = step_bytes(step) / step_bytes(base_ckpt / "global_step2")
    print(f"LoRA checkpoint / full checkpoint: {ratio:.2%}")
    assert ratio < 0.05, ratio


def test_merged_checkpoint_and_peft_export_give_the_adapter_models_logits(tmp_path, lora_run, base_ckpt):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from megatron_lite import load_model
    from megatron_lite.checkpoint.loader import load_weights
    from megatron_lite.checkpoint.lora import read_adapters
    from megatron_lite.config.lora import LoraSettings
    from megatron_lite.model.gpt import GPTModel
    from megatron_lite.model.lora import apply_lora

    lora, merged = lora_run / "lora", tmp_path / "merged"
    assert tool_main("merge_lora.py", "--input_dir", lora, "--output_dir", merged, "--model_parallel_size", 2,
                     "--peft_dir", tmp_path / "peft", "--peft_base", tmp_path / "hf_base") == 0
    assert json.loads((merged / "global_step4" / "megatron_lite.json").read_text())["model_parallel_size"] == 2
    assert yaml.safe_load((merged / "global_step4" / "config.yml").read_text())["lora"] is None
    for source, out in ((base_ckpt, "hf_base"), (merged, "hf_merged")):
        assert tool_main("convert_to_hf.py", "--input_dir", source, "--output_dir", tmp_path / out) == 0
    # The adapter model, unmerged: the base, peft's layers, the checkpoint's adapters.
    cfg, base, _, vocab = load_weights(str(base_ckpt))
    adapter_model = GPTModel(cfg)
    adapter_model.load_state_dict(base)
    apply_lora(adapter_model, LoraSettings.of(yaml.safe_load((lora / "global_step4" / "config.yml").read_text())["lora"]))
    adapters = {k.replace(".lora_A.", ".lora_A.default.").replace(".lora_B.", ".lora_B.default."): v
                for k, v in read_adapters(str(lora / "global_step4"), glu=False).items()}
    assert not adapter_model.load_state_dict(adapters, strict=False).unexpected_keys
    tokens = torch.randint(1, 60, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = adapter_model.eval()(tokens, gather_logits=True)[..., :vocab]
        got = {"merged (ours)": load_model(str(merged))[0](tokens), "LoRA checkpoint (ours)": load_model(str(lora))[0](tokens),
               "merged (transformers)": AutoModelForCausalLM.from_pretrained(tmp_path / "hf_merged")(tokens).logits,
               "peft on the base": PeftModel.from_pretrained(
                   AutoModelForCausalLM.from_pretrained(tmp_path / "hf_base"), tmp_path / "peft").eval()(tokens).logits}
    assert (want - GPTModel(cfg).eval()(tokens, gather_logits=True)[..., :vocab].detach()).abs().max() > 1e-4
    for what, logits in got.items():
        diff = (logits - want).abs().max().item()
        print(f"{what}: max |logits - adapter model's| = {diff:.2e}")
        assert diff <= 1e-5, what


def test_dpo_with_lora_compares_against_the_base(tmp_path, base_ckpt):
    root = tmp_path / "pairs"
    root.mkdir()
    data = {"train": write_pairs(str(root / "train"), preference_pairs(32, seed=0)),
            "valid": write_pairs(str(root / "valid"), preference_pairs(8, seed=1))}
    cfg = dpo_config(tmp_path, data, **{k: v for k, v in SHAPE.items() if k != "eval_interval"}, load=str(base_ckpt),
                     finetune=True, lora=LORA, train_iters=2, eval_interval=2, eval_iters=1, save=str(tmp_path / "ckpt"))
    cfg["train_micro_batch_size_per_gpu"] = 8
    run_train(tmp_path, cfg)
    first, second = records(tmp_path)[:2]
    # The reference is the base: the policy before its first update, so the loss is log(2).
    assert abs(first["loss"] - math.log(2)) < 1e-6 and first["reward_margin"] == 0.0
    assert second["reward_margin"] != 0.0 and math.isfinite(second["loss"])
    saved = yaml.safe_load((tmp_path / "ckpt" / "global_step2" / "config.yml").read_text())
    assert saved["reference_load"] == saved["lora"]["base"] == str(base_ckpt / "global_step2")


def test_a_target_that_names_no_layer_is_one_line(tmp_path, data_prefix, base_ckpt):
    cfg = lora_config(tmp_path, data_prefix, base_ckpt, lora={**LORA, "targets": ["dense_4h_to_x"]})
    result = run_train(tmp_path, cfg, expect_ok=False)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        "deepy.py: error: lora.targets: 'dense_4h_to_x' names no layer; the layers are query_key_value, dense, "
        "dense_h_to_4h, dense_4h_to_h"]
    assert not os.path.exists(tmp_path / "lora")
