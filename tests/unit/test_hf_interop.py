"""Hugging Face GPTNeoX interop: logits parity, exact round trips, both config.json styles,
the convert tools (in-process for speed, and as subprocesses for the command line and its
errors), load_model, and clear errors for what GPTNeoX cannot express."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

import megatron_lite
from megatron_lite.checkpoint.hf import UnsupportedForHF, check_exportable, model_keys_from_hf
from megatron_lite.checkpoint.layout import resolve_step_dir
from megatron_lite.checkpoint.weights import read_full_state_dict, write_weights_checkpoint
from megatron_lite.config import config_from_flat, dump_yaml, load_resolved
from megatron_lite.config.derived import resolve
from megatron_lite.model.gpt import GPTModel

REPO = Path(__file__).resolve().parents[2]
VOCAB = 300
VARIANTS = [
    {"rotary_pct": 0.25, "parallel": True, "tied": False},
    {"rotary_pct": 1.0, "parallel": False, "tied": False},
    {"rotary_pct": 0.25, "parallel": False, "tied": True},
    {"rotary_pct": 1.0, "parallel": True, "tied": True},
    {"rotary_pct": 0.5, "parallel": True, "tied": False, "hidden_act": "relu", "attention_bias": False},
    {"rotary_pct": 1.0, "parallel": True, "tied": False, "hidden_act": "gelu_new"},  # bias_gelu_fusion
]


def hf_model(tmp: Path, rotary_pct: float, parallel: bool, tied: bool, **extra) -> Path:
    """A random-init GPTNeoXForCausalLM saved with save_pretrained (transformers 5 style)."""
    torch.manual_seed(0)
    cfg = GPTNeoXConfig(
        vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=256, max_position_embeddings=64, use_parallel_residual=parallel,
        tie_word_embeddings=tied, hidden_dropout=0.0, attention_dropout=0.0,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": rotary_pct},
        **extra,
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
    return torch.randint(0, VOCAB, (2, 24), generator=torch.Generator().manual_seed(1))


def tool_main(name: str, *args) -> int:
    """Run a tool's main() in this process (a subprocess costs seconds of imports)."""
    spec = importlib.util.spec_from_file_location(name.removesuffix(".py"), REPO / "tools" / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main([str(a) for a in args])


def tool(name: str, *args) -> subprocess.Popen:
    """The tool as a subprocess, started (communicate() to wait): several run at once."""
    return subprocess.Popen([sys.executable, str(REPO / "tools" / name), *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out, err


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert sorted(a) == sorted(b)
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "-".join(f"{k}={w}" for k, w in v.items()))
def test_hf_to_ours_logits_and_exact_round_trip(tmp_path, variant):
    hf_dir = hf_model(tmp_path, **variant)
    ref = GPTNeoXForCausalLM.from_pretrained(hf_dir).eval()
    ours, _ = megatron_lite.load_model(str(hf_dir))
    x = tokens()
    with torch.no_grad():
        expected = ref(x).logits
        torch.testing.assert_close(ours(x), expected, rtol=1e-5, atol=1e-5)
    # HF -> our checkpoint -> HF: bit-equal weights, identical logits.
    ckpt, back = tmp_path / "ckpt", tmp_path / "back"
    assert tool_main("convert_from_hf.py", "--input_dir", hf_dir, "--output_dir", ckpt) == 0
    assert tool_main("convert_to_hf.py", "--input_dir", ckpt, "--output_dir", back) == 0
    assert_same(load_file(hf_dir / "model.safetensors"), load_file(back / "model.safetensors"))
    again, _ = megatron_lite.load_model(str(back))
    assert_same(ours.gpt.state_dict(), again.gpt.state_dict())
    reloaded = GPTNeoXForCausalLM.from_pretrained(back).eval()
    with torch.no_grad():
        assert torch.equal(reloaded(x).logits, expected)
    written = json.loads((back / "config.json").read_text())  # both rotary spellings
    assert written["rotary_pct"] == written["rope_parameters"]["partial_rotary_factor"] == variant["rotary_pct"]
    assert written["rotary_emb_base"] == 10000


def test_ours_to_hf_to_ours_is_exact(tmp_path):
    """From one of our random-init models (tp 2 on disk): export, import, bit-equal weights."""
    cfg = resolve(config_from_flat({
        "num_layers": 2, "hidden_size": 64, "num_attention_heads": 4, "seq_length": 32,
        "padded_vocab_size": 512, "make_vocab_size_divisible_by": 128, "pos_emb": "rotary",
        "rotary_pct": 0.25, "gpt_j_residual": True, "no_weight_tying": True,
        "tokenizer_type": "CharLevelTokenizer"}), 1)
    full = GPTModel(cfg.model, seed=7).state_dict()
    for key in ("embedding.word_embeddings.weight", "lm_head.embed_out.weight"):
        full[key][VOCAB:] = 0  # padding rows are never a token's: export drops them
    write_weights_checkpoint(full, str(tmp_path / "ours"), dump_yaml(cfg), 2, glu=False, vocab_size=VOCAB)
    assert tool_main("convert_to_hf.py", "--input_dir", tmp_path / "ours", "--output_dir", tmp_path / "hf") == 0
    assert tool_main("convert_from_hf.py", "--input_dir", tmp_path / "hf", "--output_dir", tmp_path / "back",
                     "--model_parallel_size", 2) == 0
    assert_same(read_full_state_dict(resolve_step_dir(str(tmp_path / "back")), glu=False), full)
    ours, _ = megatron_lite.load_model(str(tmp_path / "ours"))
    hf = GPTNeoXForCausalLM.from_pretrained(tmp_path / "hf").eval()
    with torch.no_grad():
        torch.testing.assert_close(hf(tokens()).logits, ours(tokens()), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("head", ["embed_out.weight", "lm_head.weight"])
def test_legacy_config_style_bin_weights_and_head_names(tmp_path, head):
    """Older config.json (rotary_pct / rotary_emb_base at top level) with pytorch_model.bin,
    and the head under either name."""
    hf_dir = hf_model(tmp_path, rotary_pct=0.5, parallel=True, tied=False)
    ref = GPTNeoXForCausalLM.from_pretrained(hf_dir).eval()
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    config = json.loads((hf_dir / "config.json").read_text())
    rope = config.pop("rope_parameters")
    config.update(rotary_pct=rope["partial_rotary_factor"], rotary_emb_base=int(rope["rope_theta"]))
    (legacy / "config.json").write_text(json.dumps(config))
    weights = load_file(hf_dir / "model.safetensors")
    weights[head] = weights.pop("embed_out.weight")
    torch.save(weights, legacy / "pytorch_model.bin")
    ours, _ = megatron_lite.load_model(str(legacy))
    assert ours.gpt.cfg.rotary_pct == 0.5
    with torch.no_grad():
        torch.testing.assert_close(ours(tokens()), ref(tokens()).logits, rtol=1e-5, atol=1e-5)
    assert model_keys_from_hf(config)["rotary_emb_base"] == 10000


def add_tokenizer(hf_dir: Path):
    from tokenizers import ByteLevelBPETokenizer

    tok = ByteLevelBPETokenizer()
    tok.train_from_iterator(["hello world tokens"] * 50, vocab_size=280,
                            special_tokens=["<|endoftext|>", "<|padding|>"])
    tok.save(str(hf_dir / "tokenizer.json"))
    return tok


def test_convert_from_hf_command_tp2_with_tokenizer_and_back(tmp_path):
    hf_dir = hf_model(tmp_path, rotary_pct=0.25, parallel=True, tied=False)
    tok = add_tokenizer(hf_dir)
    ckpt = tmp_path / "ckpt"
    code, out, err = finish(tool("convert_from_hf.py", "--input_dir", hf_dir, "--output_dir", ckpt,
                                 "--model_parallel_size", "2"))
    assert code == 0, err
    assert sorted(p.name for p in (ckpt / "global_step0").glob("mp_rank_*")) == [
        "mp_rank_00_model_states.pt", "mp_rank_01_model_states.pt"]
    cfg = load_resolved(str(ckpt / "config.yml"), 2)  # the ready config resolves as written
    assert cfg.checkpoint.load == str(ckpt) and cfg.tokenizer.tokenizer_type == "HFTokenizer"
    assert cfg.tokenizer.vocab_file == str(ckpt / "tokenizer.json") and cfg.parallel.model_parallel_size == 2
    assert cfg.model.padded_vocab_size == 512 and cfg.model.gpt_j_residual and cfg.model.rotary_pct == 0.25
    ours, tokenizer = megatron_lite.load_model(str(ckpt))
    assert tokenizer is not None and tokenizer.vocab_size == tok.get_vocab_size()
    ref = GPTNeoXForCausalLM.from_pretrained(hf_dir).eval()
    with torch.no_grad():
        torch.testing.assert_close(ours(tokens()), ref(tokens()).logits, rtol=1e-5, atol=1e-5)
    back = tmp_path / "back"  # in-process: the command line is covered by the error test
    assert tool_main("convert_to_hf.py", "--input_dir", ckpt, "--output_dir", back) == 0
    assert not (tmp_path / "back.tmp").exists()
    from transformers import AutoTokenizer

    hf_tok = AutoTokenizer.from_pretrained(back)
    assert hf_tok("hello world").input_ids == tokenizer.tokenize("hello world")
    assert hf_tok.eos_token == "<|endoftext|>" and hf_tok.pad_token == "<|padding|>"
    assert json.loads((back / "config.json").read_text())["eos_token_id"] == tokenizer.eod


def test_model_vocab_larger_than_tokenizer_pads_from_the_tokenizer(tmp_path):
    """GPT-NeoX-20B-like: the embedding has rows past the tokenizer's (and past its 128-padding)."""
    from megatron_lite.checkpoint.hf import read_hf_dir

    hf_dir = hf_model(tmp_path, rotary_pct=0.25, parallel=True, tied=True)
    add_tokenizer(hf_dir)  # 280 tokens -> 384 rows at divisor 128, but the model has 300... fits
    config = json.loads((hf_dir / "config.json").read_text())
    config["vocab_size"] = 400  # > 384: needs divisor 256 (512 rows)
    (hf_dir / "config.json").write_text(json.dumps(config))
    _, weights = read_hf_dir(str(hf_dir))
    weights["gpt_neox.embed_in.weight"] = torch.cat([weights["gpt_neox.embed_in.weight"], torch.randn(100, 64)])
    save_file(weights, hf_dir / "model.safetensors")
    assert tool_main("convert_from_hf.py", "--input_dir", hf_dir, "--output_dir", tmp_path / "ckpt") == 0
    cfg = load_resolved(str(tmp_path / "ckpt" / "config.yml"), 1)
    assert cfg.model.padded_vocab_size == 512
    ours, _ = megatron_lite.load_model(str(tmp_path / "ckpt"))
    with torch.no_grad():
        assert ours(tokens()).shape == (2, 24, 400)


@pytest.mark.parametrize("option, named", [
    ({"pos_emb": "alibi"}, "pos_emb: alibi"), ({"pos_emb": "learned"}, "pos_emb: learned"),
    ({"pos_emb": "sinusoidal"}, "pos_emb: sinusoidal"), ({"pos_emb": "none"}, "pos_emb: none"),
    ({"norm": "rmsnorm"}, "norm: rmsnorm"), ({"activation": "swiglu"}, "activation: swiglu"),
    ({"activation": "geglu"}, "activation: geglu"), ({"num_kv_heads": 2}, "num_kv_heads: 2"),
    ({"use_bias_in_mlp": False}, "use_bias_in_mlp"), ({"use_bias_in_norms": False}, "use_bias_in_norms"),
])
def test_unexportable_options_are_clear_errors(option, named):
    cfg = resolve(config_from_flat({"num_layers": 1, "hidden_size": 32, "num_attention_heads": 4,
                                    "seq_length": 8, "padded_vocab_size": 64, "pos_emb": "rotary",
                                    "make_vocab_size_divisible_by": 64, **option}), 1)
    with pytest.raises(UnsupportedForHF, match=f"cannot express: .*{named}"):
        check_exportable(cfg.model)


@pytest.mark.parametrize("change, named", [
    ({"model_type": "gpt2"}, "model_type 'gpt2'"), ({"hidden_act": "gelu_fast"}, "hidden_act 'gelu_fast'"),
    ({"rope_parameters": {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 1e4}}, "rope_type 'dynamic'"),
])
def test_unconvertible_hf_configs_are_clear_errors(change, named):
    config = {"model_type": "gpt_neox", "num_hidden_layers": 1, "hidden_size": 32, "num_attention_heads": 4,
              "intermediate_size": 128, "max_position_embeddings": 16, **change}
    with pytest.raises(UnsupportedForHF, match=named):
        model_keys_from_hf(config)


@pytest.mark.parametrize("name", ["convert_to_hf.py", "convert_from_hf.py"])
def test_tool_help(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        tool_main(name, "--help")
    out = capsys.readouterr().out
    assert exit_info.value.code == 0 and "--input_dir" in out and "--output_dir" in out and "example:" in out


def test_tool_command_line_errors(tmp_path):
    """A missing directory, an unsupported architecture: one line on stderr, exit 1."""
    swiglu = resolve(config_from_flat({"num_layers": 1, "hidden_size": 32, "num_attention_heads": 4,
                                       "seq_length": 8, "padded_vocab_size": 512, "activation": "swiglu",
                                       "pos_emb": "rotary", "tokenizer_type": "CharLevelTokenizer"}), 1)
    write_weights_checkpoint(GPTModel(swiglu.model).state_dict(), str(tmp_path / "swiglu"),
                             dump_yaml(swiglu), 1, glu=True)
    gpt2 = tmp_path / "gpt2"
    gpt2.mkdir()
    (gpt2 / "config.json").write_text(json.dumps({"model_type": "gpt2", "max_position_embeddings": 8}))
    save_file({"x": torch.zeros(1)}, gpt2 / "model.safetensors")
    neox = hf_model(tmp_path, rotary_pct=0.25, parallel=True, tied=True)  # 4 heads
    runs = {
        "from-tp3": tool("convert_from_hf.py", "--input_dir", neox, "--output_dir", tmp_path / "o5",
                         "--model_parallel_size", "3"),
        "to-missing": tool("convert_to_hf.py", "--input_dir", tmp_path / "absent", "--output_dir", tmp_path / "o1"),
        "from-missing": tool("convert_from_hf.py", "--input_dir", tmp_path / "absent", "--output_dir", tmp_path / "o2"),
        "to-swiglu": tool("convert_to_hf.py", "--input_dir", tmp_path / "swiglu", "--output_dir", tmp_path / "o3"),
        "from-gpt2": tool("convert_from_hf.py", "--input_dir", gpt2, "--output_dir", tmp_path / "o4"),
    }
    results = {name: finish(proc) for name, proc in runs.items()}
    expected = {"to-missing": "absent", "from-missing": "absent", "to-swiglu": "activation: swiglu",
                "from-gpt2": "model_type 'gpt2'", "from-tp3": "not divisible by model_parallel_size (3)"}
    for name, text in expected.items():
        code, _, err = results[name]
        assert code == 1 and "error:" in err and text in err, (name, err)
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, (name, err)
    assert not any((tmp_path / o).exists() for o in ("o1", "o2", "o3", "o3.tmp", "o4", "o5")), "nothing written on error"


@pytest.mark.parametrize("kind", ["GPT2BPETokenizer", "HFGPT2Tokenizer"])
def test_gpt2_vocab_merges_tokenizer_exports_as_tokenizer_json(tmp_path, kind):
    from tokenizers import ByteLevelBPETokenizer
    from transformers import AutoTokenizer

    trained = ByteLevelBPETokenizer()
    trained.train_from_iterator(["hello world tokens again"] * 50, vocab_size=280, special_tokens=["<|endoftext|>"])
    trained.save_model(str(tmp_path))
    files = [str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt")]
    cfg = resolve(config_from_flat({"num_layers": 1, "hidden_size": 32, "num_attention_heads": 4,
                                    "seq_length": 16, "pos_emb": "rotary", "tokenizer_type": kind,
                                    "vocab_file": files[0], "merge_file": files[1]}), 1)
    write_weights_checkpoint(GPTModel(cfg.model).state_dict(), str(tmp_path / "ckpt"), dump_yaml(cfg), 1,
                             glu=False, tokenizer_files=files)
    assert tool_main("convert_to_hf.py", "--input_dir", tmp_path / "ckpt", "--output_dir", tmp_path / "hf") == 0
    model, tokenizer = megatron_lite.load_model(str(tmp_path / "ckpt"))
    hf_tok = AutoTokenizer.from_pretrained(tmp_path / "hf")
    text = "hello world, tokens again! <|endoftext|> x"
    assert hf_tok(text).input_ids == tokenizer.tokenize(text)
    assert hf_tok.eos_token == "<|endoftext|>" and hf_tok.eos_token_id == tokenizer.eod
    hf = GPTNeoXForCausalLM.from_pretrained(tmp_path / "hf").eval()
    x = torch.tensor([tokenizer.tokenize(text)])
    with torch.no_grad():
        torch.testing.assert_close(hf(x).logits, model(x), rtol=1e-5, atol=1e-5)
    # And back: an HF directory with vocab.json + merges.txt imports as GPT2BPETokenizer.
    (tmp_path / "hf" / "tokenizer.json").unlink()
    for file in files:
        shutil.copy(file, tmp_path / "hf")
    assert tool_main("convert_from_hf.py", "--input_dir", tmp_path / "hf", "--output_dir", tmp_path / "back") == 0
    back_cfg = load_resolved(str(tmp_path / "back" / "config.yml"), 1)
    assert back_cfg.tokenizer.tokenizer_type == "GPT2BPETokenizer"
    assert back_cfg.tokenizer.merge_file == str(tmp_path / "back" / "merges.txt")
    _, back_tokenizer = megatron_lite.load_model(str(tmp_path / "back"))
    assert back_tokenizer.tokenize(text) == tokenizer.tokenize(text)


def test_loading_hf_weights_into_a_different_architecture_is_an_error():
    from megatron_lite.checkpoint.layout import CheckpointError
    from megatron_lite.checkpoint.loader import check_same_architecture
    cfg = resolve(config_from_flat({"num_layers": 2, "hidden_size": 64, "num_attention_heads": 4,
                                    "seq_length": 8, "padded_vocab_size": 64, "pos_emb": "rotary",
                                    "rotary_pct": 1.0, "make_vocab_size_divisible_by": 64}), 1)
    hf_keys = {"num_layers": 2, "hidden_size": 64, "rotary_pct": 0.25, "gpt_j_residual": False}
    with pytest.raises(CheckpointError, match="rotary_pct: config 1.0, hf_dir 0.25"):
        check_same_architecture("hf_dir", hf_keys, cfg)
    check_same_architecture("hf_dir", {**hf_keys, "rotary_pct": 1.0}, cfg)


def test_converters_refuse_a_non_empty_output_without_force(tmp_path, capsys):
    """convert_to_hf.py never deletes a non-empty --output_dir, convert_from_hf.py never writes
    into an existing training directory (its `latest`, its config.yml), unless --force."""
    hf_dir = hf_model(tmp_path, rotary_pct=0.25, parallel=True, tied=False)
    ckpt = tmp_path / "ckpt"
    assert tool_main("convert_from_hf.py", "--input_dir", hf_dir, "--output_dir", ckpt) == 0
    training = tmp_path / "training"
    shutil.copytree(ckpt, training)
    (training / "latest").write_text("global_step7")
    (training / "config.yml").write_text("# a training run's own config\n")
    assert tool_main("convert_from_hf.py", "--input_dir", hf_dir, "--output_dir", training) == 1
    assert "holds a checkpoint: choose another directory, or pass --force" in capsys.readouterr().err
    assert (training / "latest").read_text() == "global_step7"
    assert (training / "config.yml").read_text() == "# a training run's own config\n"
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("mine")
    assert tool_main("convert_to_hf.py", "--input_dir", ckpt, "--output_dir", precious) == 1
    assert "is not empty: choose another directory, or pass --force" in capsys.readouterr().err
    assert (precious / "notes.txt").read_text() == "mine"
    assert tool_main("convert_to_hf.py", "--input_dir", ckpt, "--output_dir", precious, "--force") == 0
    assert not (precious / "notes.txt").exists() and (precious / "config.json").exists()
    assert tool_main("convert_from_hf.py", "--input_dir", hf_dir, "--output_dir", training, "--force") == 0
    assert (training / "latest").read_text() == "global_step0"
