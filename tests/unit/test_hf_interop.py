"""Hugging Face GPTNeoX interop: logits parity, exact round trips, both config.json styles,
the convert tools, load_model, and clear errors for what GPTNeoX cannot express."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

import megatron_lite
from megatron_lite.config import config_from_flat
from megatron_lite.config.derived import resolve
from megatron_lite.model.hf_interop import UnsupportedForHF, check_exportable

REPO = Path(__file__).resolve().parents[2]
VARIANTS = [
    {"rotary_pct": 0.25, "parallel": True, "tied": False},
    {"rotary_pct": 1.0, "parallel": False, "tied": False},
    {"rotary_pct": 0.25, "parallel": False, "tied": True},
    {"rotary_pct": 1.0, "parallel": True, "tied": True},
]


def hf_model(tmp: Path, rotary_pct: float, parallel: bool, tied: bool, vocab: int = 300) -> Path:
    torch.manual_seed(0)
    cfg = GPTNeoXConfig(
        vocab_size=vocab, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=256, max_position_embeddings=64, use_parallel_residual=parallel,
        tie_word_embeddings=tied, hidden_dropout=0.0, attention_dropout=0.0,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": rotary_pct},
    )
    model = GPTNeoXForCausalLM(cfg).eval()
    with torch.no_grad():  # non-trivial norms and biases
        for name, p in model.named_parameters():
            if "layernorm" in name or "layer_norm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    out = tmp / "hf"
    model.save_pretrained(out)
    return out


def tokens() -> torch.Tensor:
    return torch.randint(0, 300, (2, 24), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "-".join(f"{k}={w}" for k, w in v.items()))
def test_hf_to_ours_logits_and_exact_round_trip(tmp_path, variant):
    hf_dir = hf_model(tmp_path, **variant)
    ref = GPTNeoXForCausalLM.from_pretrained(hf_dir).eval()
    ours, _ = megatron_lite.load_model(str(hf_dir))
    x = tokens()
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x).logits, rtol=1e-5, atol=1e-5)
    # ours -> our checkpoint -> HF -> ours: bit-equal weights
    ckpt, back = tmp_path / "ckpt", tmp_path / "back"
    assert tool("convert_from_hf.py", "--input_dir", hf_dir, "--output_dir", ckpt).returncode == 0
    result = tool("convert_to_hf.py", "--input_dir", ckpt, "--output_dir", back)
    assert result.returncode == 0, result.stderr
    again, _ = megatron_lite.load_model(str(back))
    for (name, a), b in zip(ours.gpt.state_dict().items(), again.gpt.state_dict().values()):
        assert torch.equal(a, b), name
    reloaded = GPTNeoXForCausalLM.from_pretrained(back).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(x).logits, ref(x).logits, rtol=0, atol=0)


def tool(name: str, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "tools" / name), *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def test_legacy_config_style_and_lm_head_name(tmp_path):
    hf_dir = hf_model(tmp_path, rotary_pct=0.5, parallel=True, tied=False)
    ref = GPTNeoXForCausalLM.from_pretrained(hf_dir).eval()
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    config = json.loads((hf_dir / "config.json").read_text())
    rope = config.pop("rope_parameters")
    config.update(rotary_pct=rope["partial_rotary_factor"], rotary_emb_base=int(rope["rope_theta"]))
    (legacy / "config.json").write_text(json.dumps(config))
    weights = load_file(hf_dir / "model.safetensors")
    weights["lm_head.weight"] = weights.pop("embed_out.weight")  # the in-memory name
    save_file(weights, legacy / "model.safetensors")
    ours, _ = megatron_lite.load_model(str(legacy))
    assert ours.gpt.cfg.rotary_pct == 0.5
    with torch.no_grad():
        torch.testing.assert_close(ours(tokens()), ref(tokens()).logits, rtol=1e-5, atol=1e-5)


def test_convert_from_hf_tp2_writes_ready_config_and_same_logits(tmp_path):
    from tokenizers import ByteLevelBPETokenizer

    hf_dir = hf_model(tmp_path, rotary_pct=0.25, parallel=True, tied=False)
    tok = ByteLevelBPETokenizer()
    tok.train_from_iterator(["hello world tokens"] * 50, vocab_size=280,
                            special_tokens=["<|endoftext|>", "<|padding|>"])
    tok.save(str(hf_dir / "tokenizer.json"))
    ckpt = tmp_path / "ckpt"
    result = tool("convert_from_hf.py", "--input_dir", hf_dir, "--output_dir", ckpt, "--model_parallel_size", "2")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (ckpt / "global_step0").glob("mp_rank_*")) == [
        "mp_rank_00_model_states.pt", "mp_rank_01_model_states.pt"]
    printed = subprocess.run([sys.executable, "-m", "megatron_lite.config", str(ckpt / "config.yml"),
                              "--world_size", "2"], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert printed.returncode == 0, printed.stderr
    assert f"load: {ckpt}" in printed.stdout and "tokenizer_type: HFTokenizer" in printed.stdout
    ours, tokenizer = megatron_lite.load_model(str(ckpt))
    assert tokenizer is not None and tokenizer.vocab_size == tok.get_vocab_size()
    ref = GPTNeoXForCausalLM.from_pretrained(hf_dir).eval()
    with torch.no_grad():
        torch.testing.assert_close(ours(tokens()), ref(tokens()).logits, rtol=1e-5, atol=1e-5)
    back = tmp_path / "back"
    assert tool("convert_to_hf.py", "--input_dir", ckpt, "--output_dir", back).returncode == 0
    from transformers import AutoTokenizer

    hf_tok = AutoTokenizer.from_pretrained(back)
    assert hf_tok("hello world").input_ids == tokenizer.tokenize("hello world")


@pytest.mark.parametrize("option", [{"pos_emb": "alibi"}, {"norm": "rmsnorm"}, {"activation": "swiglu"},
                                    {"num_kv_heads": 2}, {"use_bias_in_mlp": False}])
def test_unexportable_options_are_clear_errors(option):
    cfg = resolve(config_from_flat({"num_layers": 1, "hidden_size": 32, "num_attention_heads": 4,
                                    "seq_length": 8, "padded_vocab_size": 64, "pos_emb": "rotary",
                                    "make_vocab_size_divisible_by": 64, **option}), 1)
    with pytest.raises(UnsupportedForHF, match="cannot express"):
        check_exportable(cfg.model)


def test_tool_errors_exit_nonzero(tmp_path):
    for name in ("convert_to_hf.py", "convert_from_hf.py"):
        result = tool(name, "--input_dir", tmp_path / "absent", "--output_dir", tmp_path / "out")
        assert result.returncode == 1 and "error:" in result.stderr and "Traceback" not in result.stderr
