"""LoRA on one process (issue #20): the adapted model starts as its base and only the adapters
train; merged weights give the adapter model's logits; adapters off give the base; the adapters'
tensor-parallel shards merge like their weights (GLU too); the peft export, loaded by peft on the
Hugging Face export of the base, gives our logits (GPTNeoX and Llama: q/k/v and up/gate split);
a bad ``lora`` key is one line."""

from __future__ import annotations

import pytest
import torch

from megatron_lite.checkpoint.lora import adapter_key, merge_adapters
from megatron_lite.checkpoint.sharding import cut_shard, merge_shards
from megatron_lite.config import ConfigError, config_from_flat
from megatron_lite.config.derived import resolve
from megatron_lite.config.lora import LoraSettings
from megatron_lite.model.gpt import GPTModel
from megatron_lite.parallel.lora import delta_weight

VOCAB = 90
MODELS = {
    "neox": {"pos_emb": "rotary", "rotary_pct": 0.25, "gpt_j_residual": True},
    "llama": {"pos_emb": "rotary", "norm": "rmsnorm", "activation": "swiglu", "num_kv_heads": 2,
              "use_bias_in_attn_linear": False, "use_bias_in_mlp": False, "use_bias_in_norms": False,
              "no_weight_tying": True},
}


def run_cfg(model: str = "neox", **lora):
    flat = {"num_layers": 2, "hidden_size": 64, "num_attention_heads": 4, "seq_length": 16,
            "padded_vocab_size": 96, "make_vocab_size_divisible_by": 32, "train_micro_batch_size_per_gpu": 1,
            "optimizer": {"params": {"lr": 1e-3}}, "lora": {"rank": 4, "alpha": 8, **lora}, **MODELS[model]}
    return resolve(config_from_flat(flat), 1)


def tokens() -> torch.Tensor:
    return torch.randint(0, VOCAB, (2, 16), generator=torch.Generator().manual_seed(1))


def adapted(cfg, randomize: bool = True) -> tuple[GPTModel, dict[str, torch.Tensor]]:
    """(the model with adapters, its base state dict); ``randomize``: B not zero."""
    from megatron_lite.model.lora import apply_lora

    model = GPTModel(cfg.model, seed=3)
    base = {k: v.clone() for k, v in model.state_dict().items()}
    apply_lora(model, LoraSettings.of(cfg.post_training.lora))
    if randomize:
        gen = torch.Generator().manual_seed(5)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "lora_B" in name:
                    param.copy_(torch.randn(param.shape, generator=gen) * 0.05)
    return model, base


def adapters_of(model) -> dict[str, torch.Tensor]:
    return {adapter_key(n): p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def test_adapters_start_at_the_base_and_only_they_train():
    from megatron_lite.model.lora import BaseModelView
    from megatron_lite.training.optimizer import param_groups

    cfg = run_cfg(dropout=0.1)
    model, base = adapted(cfg, randomize=False)
    plain = GPTModel(cfg.model, seed=3).eval()
    with torch.no_grad():
        assert torch.equal(model.eval()(tokens()), plain(tokens()))  # B = 0: the base exactly
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trained and all(".lora_A." in n or ".lora_B." in n for n in trained)
    assert {p for g in param_groups(model, 0.1) for p in g["params"]} == {
        p for p in model.parameters() if p.requires_grad}
    before = adapters_of(model)
    optimizer = torch.optim.AdamW(param_groups(model, 0.1), lr=1e-2)
    model.train()
    for _ in range(3):
        model(tokens()).float().logsumexp(-1).mean().backward()
        optimizer.step()
        optimizer.zero_grad()
    after = {k.replace(".base_layer.", "."): v for k, v in model.state_dict().items() if ".lora_" not in k}
    assert after.keys() == base.keys()
    assert all(torch.equal(after[k], base[k]) for k in base), "a frozen weight changed"
    changed = {k for k, v in adapters_of(model).items() if not torch.equal(v, before[k])}
    assert changed == set(before)  # every A and B moved (B from zero)
    with torch.no_grad():  # adapters off: the base, without a copy
        assert torch.equal(BaseModelView(model.eval())(tokens()), plain(tokens()))


@pytest.mark.parametrize("model_kind", list(MODELS))
def test_merged_weights_give_the_adapter_models_logits(model_kind):
    cfg = run_cfg(model_kind)
    model, base = adapted(cfg)
    merged = GPTModel(cfg.model, seed=99)
    merged.load_state_dict(merge_adapters(base, adapters_of(model), LoraSettings.of(cfg.post_training.lora).scaling))
    with torch.no_grad():
        ours, theirs = model.eval()(tokens()), merged.eval()(tokens())
    assert (ours - theirs).abs().max() <= 1e-5
    assert (ours - GPTModel(cfg.model, seed=3).eval()(tokens())).abs().max() > 1e-3  # the adapters matter


def test_adapter_shards_split_and_merge_like_their_weights():
    """tp 2 (GLU order included): each rank's B_r A_r is its shard of B A."""
    gen = torch.Generator().manual_seed(0)
    cases = {"layers.0.mlp.dense_h_to_4h": (512, 64), "layers.0.mlp.dense_4h_to_h": (64, 256),
             "layers.0.attention.query_key_value": (192, 64), "layers.0.attention.dense": (64, 64)}
    for layer, (out, inp) in cases.items():
        a, b = torch.randn(4, inp, generator=gen), torch.randn(out, 4, generator=gen)
        deltas = [delta_weight(cut_shard(f"{layer}.lora_A.default.weight", a, 2, r, glu=True),
                               cut_shard(f"{layer}.lora_B.default.weight", b, 2, r, glu=True), 2.0) for r in range(2)]
        torch.testing.assert_close(merge_shards(f"{layer}.weight", deltas, glu=True), delta_weight(a, b, 2.0))
        for factor, full in (("lora_A", a), ("lora_B", b)):
            name = f"{layer}.{factor}.weight"
            shards = [cut_shard(name, full, 2, r, glu=True) for r in range(2)]
            assert torch.equal(merge_shards(name, shards, glu=True), full)


@pytest.mark.parametrize("model_kind", list(MODELS))
def test_peft_export_on_the_hf_base_gives_our_logits(tmp_path, model_kind):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from megatron_lite.checkpoint.hf import export_architecture, save_hf_model
    from megatron_lite.checkpoint.hf_lora import save_peft_adapter

    cfg = run_cfg(model_kind, dropout=0.05)
    model, base = adapted(cfg)
    architecture = export_architecture(cfg.model)
    save_hf_model(cfg.model, base, VOCAB, str(tmp_path / "hf"), architecture=architecture)
    modules = save_peft_adapter(cfg.model, adapters_of(model), cfg.post_training.lora, VOCAB,
                                str(tmp_path / "peft"), architecture, str(tmp_path / "hf"))
    assert modules == (["dense", "dense_4h_to_h", "dense_h_to_4h", "query_key_value"] if model_kind == "neox"
                       else ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"])
    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tmp_path / "hf"), tmp_path / "peft")
    assert peft_model.peft_config["default"].base_model_name_or_path == str(tmp_path / "hf")
    with torch.no_grad():
        theirs = peft_model.eval()(tokens()).logits
        ours = model.eval()(tokens(), gather_logits=True)[..., :VOCAB]
    assert (theirs - ours).abs().max() <= 1e-5


@pytest.mark.parametrize(("lora", "message"), [
    ({"targets": ["query_key_value", "dense_4h_to_x"]},
     "lora.targets: 'dense_4h_to_x' names no layer; the layers are query_key_value, dense, dense_h_to_4h, dense_4h_to_h"),
    ({"rank": 0}, "lora.rank must be an integer > 0, got 0"),
    ({"ranks": 8}, "lora.ranks is not a LoRA key: the keys are rank, alpha, dropout, targets, base"),
    ({"dropout": 1.0}, "lora.dropout must be in [0, 1), got 1.0"),
])
def test_a_bad_lora_key_is_one_line_naming_it(lora, message):
    with pytest.raises(ConfigError) as info:
        run_cfg(**lora)
    assert str(info.value) == message


def test_lora_keys_take_defaults_and_one_canonical_form():
    lora = run_cfg(targets=["dense_4h_to_h", "query_key_value", "dense_4h_to_h"]).post_training.lora
    assert lora == {"rank": 4, "alpha": 8.0, "dropout": 0.0, "targets": ["query_key_value", "dense_4h_to_h"],
                    "base": None}
    assert LoraSettings.of(lora).scaling == 2.0
