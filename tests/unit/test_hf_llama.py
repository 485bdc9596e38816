"""Hugging Face LlamaForCausalLM / MistralForCausalLM interop: logits equal transformers' (GQA,
tied and untied, rope_theta, linear and llama3 rope scaling, Mistral's sliding window shorter
than the text), HF -> ours (tp 2 on disk) -> HF exact, ours -> HF -> ours exact, the
architecture choice on export, greedy generation token for token, the errors; and GPTNeoX with
rope scaling."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file
from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM

import megatron_lite
from megatron_lite.checkpoint.hf import UnsupportedForHF, model_keys_from_hf, read_hf_dir
from megatron_lite.checkpoint.layout import CheckpointError, resolve_step_dir
from megatron_lite.checkpoint.loader import load_model_weights
from megatron_lite.checkpoint.weights import read_full_state_dict, write_weights_checkpoint
from megatron_lite.config import config_from_flat, dump_yaml, load_resolved
from megatron_lite.config.derived import resolve
from megatron_lite.inference.generation import generate_records
from megatron_lite.model.causal_lm import CausalLM
from megatron_lite.model.gpt import GPTModel
from tests.unit.test_hf_interop import VOCAB, add_tokenizer, assert_same, tokens, tool_main

LLAMA3 = {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
          "high_freq_factor": 4.0, "original_max_position_embeddings": 8}
VARIANTS = {  # tokens(): 24 positions, so Mistral's window of 5 matters
    "llama-gqa-untied-theta": {"num_key_value_heads": 2, "rope_parameters": {"rope_type": "default", "rope_theta": 500000.0}},
    "llama-mha-tied-linear-sharded": {"num_key_value_heads": 4, "tie_word_embeddings": True, "shard": True,
                                      "rope_parameters": {"rope_type": "linear", "rope_theta": 10000.0, "factor": 4.0}},
    "llama-llama3-biases-legacy-config": {"num_key_value_heads": 2, "attention_bias": True, "mlp_bias": True,
                                          "rope_parameters": LLAMA3, "legacy": True},
    "mistral-window": {"mistral": True, "num_key_value_heads": 2, "sliding_window": 5},
}
# What each variant's feature is in our config, to show it changes the logits.
FEATURE = {"llama-mha-tied-linear-sharded": "rope_scaling", "llama-llama3-biases-legacy-config": "rope_scaling",
           "mistral-window": "sliding_window_width"}


def hf_llama(tmp: Path, mistral: bool = False, shard: bool = False, legacy: bool = False, vocab_size: int = VOCAB,
             **config) -> tuple[Path, torch.nn.Module]:
    """A random-init Llama / Mistral saved with save_pretrained (``shard``: in several files;
    ``legacy``: config.json rewritten in transformers 4's style, top-level rope_theta and
    rope_scaling). Returns the directory and the model (in memory, the reference)."""
    torch.manual_seed(0)
    config_cls, model_cls = (MistralConfig, MistralForCausalLM) if mistral else (LlamaConfig, LlamaForCausalLM)
    cfg = config_cls(vocab_size=vocab_size, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                     num_attention_heads=4, max_position_embeddings=64, rms_norm_eps=1e-5,
                     initializer_range=0.1, **config)  # larger than 0.02: logits of order 1, sharp attention
    model = model_cls(cfg).eval()
    with torch.no_grad():  # non-trivial norms and biases
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    out = tmp / ("mistral" if mistral else "llama")
    model.save_pretrained(out, max_shard_size="40KB" if shard else "1GB")
    assert (out / "model.safetensors.index.json").exists() == shard
    if legacy:
        written = json.loads((out / "config.json").read_text())
        rope = written.pop("rope_parameters")
        written.update(rope_theta=rope.pop("rope_theta"), rope_scaling={**rope, "type": rope.pop("rope_type")})
        (out / "config.json").write_text(json.dumps(written))
    return out, model


def hf_class(path: Path) -> type:
    return {"llama": LlamaForCausalLM, "mistral": MistralForCausalLM}[json.loads((path / "config.json").read_text())["model_type"]]


@pytest.mark.parametrize("name", list(VARIANTS))
def test_hf_to_ours_logits_and_exact_round_trip_through_tp2(tmp_path, name):
    hf_dir, ref = hf_llama(tmp_path, **VARIANTS[name])
    ours, _ = megatron_lite.load_model(str(hf_dir))
    x = tokens()
    with torch.no_grad():
        expected = ref(x).logits
        torch.testing.assert_close(ours(x), expected, rtol=1e-5, atol=1e-5)
        if name in FEATURE:  # the feature matters: without it, the logits are not transformers'
            plain = GPTModel(dataclasses.replace(ours.gpt.cfg, **{FEATURE[name]: None}))
            plain.load_state_dict(ours.gpt.state_dict())
            assert (CausalLM(plain, VOCAB).eval()(x) - expected).abs().max() > 1e-3
    ckpt, back = tmp_path / "ckpt", tmp_path / "back"
    assert tool_main("convert_from_hf.py", "--input_dir", hf_dir, "--output_dir", ckpt, "--model_parallel_size", 2) == 0
    cfg = load_resolved(str(ckpt / "config.yml"), 2)  # the ready config resolves as written
    assert cfg.model == dataclasses.replace(ours.gpt.cfg, padded_vocab_size=cfg.model.padded_vocab_size,
                                            make_vocab_size_divisible_by=cfg.model.make_vocab_size_divisible_by,
                                            seq_length=cfg.model.seq_length)
    assert tool_main("convert_to_hf.py", "--input_dir", ckpt, "--output_dir", back) == 0
    assert_same(read_hf_dir(str(hf_dir))[1], read_hf_dir(str(back))[1])  # bit-equal weights
    written = json.loads((back / "config.json").read_text())
    assert written["architectures"] == [hf_class(hf_dir).__name__]
    assert written.get("sliding_window") == VARIANTS[name].get("sliding_window")
    reloaded = hf_class(back).from_pretrained(back).eval()
    with torch.no_grad():
        assert torch.equal(reloaded(x).logits, expected)


def our_llama(tmp_path: Path, **keys) -> tuple[Path, dict]:
    """One of our random-init Llama-shaped models, written tp 2 on disk."""
    cfg = resolve(config_from_flat({
        "num_layers": 2, "hidden_size": 64, "num_attention_heads": 4, "num_kv_heads": 2, "seq_length": 32,
        "padded_vocab_size": 512, "make_vocab_size_divisible_by": 128, "pos_emb": "rotary", "rotary_pct": 1.0,
        "norm": "rmsnorm", "rms_norm_epsilon": 1e-5, "activation": "swiglu", "ffn_hidden_size": 96,
        "use_bias_in_attn_linear": False, "use_bias_in_mlp": False, "use_bias_in_norms": False,
        "no_weight_tying": True, "tokenizer_type": "CharLevelTokenizer", **keys}), 1)
    full = GPTModel(cfg.model, seed=7).state_dict()
    for key in {"embedding.word_embeddings.weight", "lm_head.embed_out.weight"} & set(full):
        full[key][VOCAB:] = 0  # padding rows are never a token's: export drops them
    out = tmp_path / "ours"
    write_weights_checkpoint(full, str(out), dump_yaml(cfg), 2, glu=True, vocab_size=VOCAB)
    return out, full


def test_ours_to_mistral_to_ours_is_exact_and_the_architecture_follows_the_model(tmp_path, capsys):
    ours_dir, full = our_llama(tmp_path, sliding_window_width=4, rope_scaling={"type": "linear", "factor": 2.0})
    assert tool_main("convert_to_hf.py", "--input_dir", ours_dir, "--output_dir", tmp_path / "hf") == 0
    assert "MistralForCausalLM: 2 layers" in capsys.readouterr().out  # a window: Mistral, automatically
    written = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert written["sliding_window"] == 5 and written["rope_scaling"] == {"rope_type": "linear", "factor": 2.0}
    assert tool_main("convert_from_hf.py", "--input_dir", tmp_path / "hf", "--output_dir", tmp_path / "back",
                     "--model_parallel_size", 2) == 0
    assert_same(read_full_state_dict(resolve_step_dir(str(tmp_path / "back")), glu=True), full)
    model, _ = megatron_lite.load_model(str(ours_dir))
    hf = MistralForCausalLM.from_pretrained(tmp_path / "hf").eval()
    with torch.no_grad():
        torch.testing.assert_close(hf(tokens()).logits, model(tokens()), rtol=1e-5, atol=1e-5)
    # Llama cannot hold the window: asked for, it is an error naming the option.
    assert tool_main("convert_to_hf.py", "--input_dir", ours_dir, "--output_dir", tmp_path / "o1",
                     "--architecture", "LlamaForCausalLM") == 1
    assert "LlamaForCausalLM cannot express: sliding_window_width: 4" in capsys.readouterr().err


def test_llama_shaped_model_exports_as_llama_or_as_chosen(tmp_path, capsys):
    ours_dir, _ = our_llama(tmp_path, no_weight_tying=False)
    model, _ = megatron_lite.load_model(str(ours_dir))
    for arch, cls in (("auto", LlamaForCausalLM), ("MistralForCausalLM", MistralForCausalLM)):
        extra = [] if arch == "auto" else ["--architecture", arch]
        assert tool_main("convert_to_hf.py", "--input_dir", ours_dir, "--output_dir", tmp_path / arch, *extra) == 0
        assert f"{cls.__name__}: 2 layers" in capsys.readouterr().out
        with torch.no_grad():
            torch.testing.assert_close(cls.from_pretrained(tmp_path / arch).eval()(tokens()).logits, model(tokens()),
                                       rtol=1e-5, atol=1e-5)
    assert tool_main("convert_to_hf.py", "--input_dir", ours_dir, "--output_dir", tmp_path / "o2",
                     "--architecture", "GPTNeoXForCausalLM") == 1
    assert "GPTNeoXForCausalLM cannot express: norm: rmsnorm" in capsys.readouterr().err
    alibi_dir, _ = our_llama(tmp_path / "alibi", pos_emb="alibi")
    assert tool_main("convert_to_hf.py", "--input_dir", alibi_dir, "--output_dir", tmp_path / "o3") == 1
    err = capsys.readouterr().err
    assert "no Hugging Face architecture expresses this model" in err
    assert "GPTNeoXForCausalLM lacks pos_emb: alibi" in err and "LlamaForCausalLM lacks pos_emb: alibi" in err


@pytest.mark.parametrize("name", ["llama-gqa-untied-theta", "mistral-window"])
def test_greedy_generation_equals_transformers_token_for_token(tmp_path, name):
    """Through our generation path (KV cache, left-padded batch; Mistral decodes past its window)."""
    hf_dir, ref = hf_llama(tmp_path, **VARIANTS[name])
    add_tokenizer(hf_dir)
    model, tokenizer = megatron_lite.load_model(str(hf_dir))
    records = generate_records(model, tokenizer, ["hello world tokens", "world"], max_new_tokens=16)
    for record in records:
        ids = torch.tensor([record.prompt_tokens])
        # Ours picks among the tokenizer's tokens (280), not the embedding's rows (300).
        out = ref.generate(ids, max_new_tokens=16, do_sample=False, pad_token_id=tokenizer.eod, eos_token_id=None,
                           suppress_tokens=list(range(tokenizer.vocab_size, VOCAB)))
        expected = out[0, ids.shape[1]:].tolist()
        expected = expected[: expected.index(tokenizer.eod) + 1] if tokenizer.eod in expected else expected
        assert record.tokens == expected and len(expected) > 8


def test_load_weights_from_a_llama_directory_into_a_run(tmp_path):
    """`load: <HF Llama dir>` (fine-tuning, generate.py, evaluate.py) reads the weights into the
    run's model; a run config that differs in the window is an error naming it."""
    hf_dir, ref = hf_llama(tmp_path, **VARIANTS["mistral-window"])
    assert tool_main("convert_from_hf.py", "--input_dir", hf_dir, "--output_dir", tmp_path / "ckpt") == 0
    flat = yaml.safe_load((tmp_path / "ckpt" / "config.yml").read_text())
    assert flat["sliding_window_width"] == 4 and flat["mlp_inner_size"] == 96 and flat["num_kv_heads"] == 2
    cfg = resolve(config_from_flat({**flat, "load": str(hf_dir), "padded_vocab_size": 512}), 1)
    module = GPTModel(cfg.model).eval()
    load_model_weights(module, cfg, tp_rank=0, pipelined=False)
    with torch.no_grad():
        torch.testing.assert_close(module(tokens(), gather_logits=True)[..., :VOCAB], ref(tokens()).logits,
                                   rtol=1e-5, atol=1e-5)
    other = resolve(config_from_flat({**flat, "load": str(hf_dir), "padded_vocab_size": 512,
                                      "sliding_window_width": 8}), 1)
    with pytest.raises(CheckpointError, match="sliding_window_width: config 8, .* 4"):
        load_model_weights(GPTModel(other.model), other, tp_rank=0, pipelined=False)


def test_unsupported_architecture_names_its_model_type_and_the_supported_ones(tmp_path):
    qwen = {"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"], "num_hidden_layers": 1,
            "hidden_size": 32, "num_attention_heads": 4, "intermediate_size": 64, "max_position_embeddings": 16}
    expected = ("model_type 'qwen2' (Qwen2ForCausalLM) is not supported: supported model_types are "
                "gpt_neox (GPTNeoXForCausalLM), llama (LlamaForCausalLM), mistral (MistralForCausalLM)")
    with pytest.raises(UnsupportedForHF, match=expected.replace("(", r"\(").replace(")", r"\)")):
        model_keys_from_hf(qwen)
    (tmp_path / "config.json").write_text(json.dumps(qwen))
    save_file({"x": torch.zeros(1)}, tmp_path / "model.safetensors")
    with pytest.raises(UnsupportedForHF, match="model_type 'qwen2'"):
        megatron_lite.load_model(str(tmp_path))


@pytest.mark.parametrize("change, named", [
    ({"hidden_act": "gelu"}, "hidden_act 'gelu'"),
    ({"head_dim": 32}, "head_dim 32 x num_attention_heads 4 != hidden_size 64"),
    ({"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4, "factor": 2.0}}, "rope_type 'yarn'"),
    ({"rope_parameters": {"rope_type": "default", "rope_theta": 1e4, "partial_rotary_factor": 0.5}},
     "partial_rotary_factor 0.5"),
])
def test_unconvertible_llama_configs_are_clear_errors(change, named):
    config = {"model_type": "llama", "num_hidden_layers": 1, "hidden_size": 64, "num_attention_heads": 4,
              "intermediate_size": 128, "max_position_embeddings": 16, **change}
    with pytest.raises(UnsupportedForHF, match=named):
        model_keys_from_hf(config)


def test_shapes_that_disagree_with_the_config_name_the_first_parameter(tmp_path, capsys):
    hf_dir, _ = hf_llama(tmp_path, **VARIANTS["llama-gqa-untied-theta"])
    weights = load_file(hf_dir / "model.safetensors")
    weights["model.layers.1.self_attn.k_proj.weight"] = torch.zeros(48, 64)  # 3 kv heads, config says 2
    weights["model.layers.1.mlp.up_proj.weight"] = torch.zeros(64, 64)
    save_file(weights, hf_dir / "model.safetensors")
    message = "model.layers.1.self_attn.k_proj.weight has shape (48, 64) but config.json implies (32, 64)"
    with pytest.raises(UnsupportedForHF, match=message.replace("(", r"\(").replace(")", r"\)")):
        megatron_lite.load_model(str(hf_dir))
    assert tool_main("convert_from_hf.py", "--input_dir", hf_dir, "--output_dir", tmp_path / "o") == 1
    assert message in capsys.readouterr().err and not (tmp_path / "o").exists()
    # Our checkpoint whose config says another MLP width: the first differing parameter, named.
    ours_dir, full = our_llama(tmp_path)
    step = Path(resolve_step_dir(str(ours_dir)))
    config = yaml.safe_load((step / "config.yml").read_text())
    (step / "config.yml").write_text(yaml.safe_dump({**config, "mlp_inner_size": 128}))
    assert tool_main("convert_to_hf.py", "--input_dir", ours_dir, "--output_dir", tmp_path / "o2") == 1
    err = capsys.readouterr().err
    assert "shape: layers.0.mlp.dense_h_to_4h.weight is (192, 64), the config gives (256, 64)" in err
    assert not (tmp_path / "o2").exists()


@pytest.mark.parametrize("rope", [{"rope_type": "linear", "factor": 4.0}, {**LLAMA3, "rope_theta": 500000.0}],
                         ids=["linear", "llama3"])
def test_gpt_neox_with_rope_scaling_converts_both_ways(tmp_path, rope):
    """Rotary scaling is not Llama's alone: transformers' GPTNeoX has it too (with a partial
    rotary fraction), and it converts the same way."""
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(0)
    ref = GPTNeoXForCausalLM(GPTNeoXConfig(
        vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
        max_position_embeddings=64, initializer_range=0.1,
        rope_parameters={"rope_theta": 10000.0, **rope, "partial_rotary_factor": 0.5})).eval()
    hf_dir = tmp_path / "neox"
    ref.save_pretrained(hf_dir)
    ours, _ = megatron_lite.load_model(str(hf_dir))
    assert ours.gpt.cfg.rope_scaling["type"] == rope["rope_type"]
    with torch.no_grad():
        expected = ref(tokens()).logits
        torch.testing.assert_close(ours(tokens()), expected, rtol=1e-5, atol=1e-5)
    assert tool_main("convert_from_hf.py", "--input_dir", hf_dir, "--output_dir", tmp_path / "ckpt") == 0
    assert tool_main("convert_to_hf.py", "--input_dir", tmp_path / "ckpt", "--output_dir", tmp_path / "back") == 0
    with torch.no_grad():
        assert torch.equal(GPTNeoXForCausalLM.from_pretrained(tmp_path / "back").eval()(tokens()).logits, expected)
