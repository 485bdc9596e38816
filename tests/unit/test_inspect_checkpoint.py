"""tools/inspect_checkpoint.py: the summary and parameter table of one checkpoint (any layout,
merged to tp = 1 names), the differences between two, and exit 1 for a missing or incomplete
checkpoint."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from megatron_lite.checkpoint.layout import META_FILE
from megatron_lite.checkpoint.weights import write_weights_checkpoint
from megatron_lite.config import config_from_flat, dump_yaml
from megatron_lite.config.derived import resolve
from megatron_lite.model.gpt import GPTModel

REPO = Path(__file__).resolve().parents[2]


def inspect(*args) -> int:
    """The tool's main() in this process (a subprocess costs seconds of imports)."""
    spec = importlib.util.spec_from_file_location("inspect_checkpoint", REPO / "tools" / "inspect_checkpoint.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module.main([str(a) for a in args])


def make_config(**keys):
    flat = {"num_layers": 2, "hidden_size": 32, "num_attention_heads": 4, "seq_length": 16,
            "padded_vocab_size": 512, "make_vocab_size_divisible_by": 128, "pos_emb": "rotary",
            "no_weight_tying": True, "tokenizer_type": "HFTokenizer", **keys}  # no file: padding as given
    return resolve(config_from_flat(flat), 1)


def write(path: Path, cfg, full: dict[str, torch.Tensor], tp: int = 1, pp: int = 0) -> None:
    write_weights_checkpoint(full, str(path), dump_yaml(cfg), tp, glu=False, iteration=4, vocab_size=300,
                             pipe_parallel_size=pp, consumed_train_samples=64)


@pytest.fixture
def weights() -> dict[str, torch.Tensor]:
    return GPTModel(make_config().model, seed=1).state_dict()


def test_one_checkpoint_summary_and_parameter_table(tmp_path, weights, capsys):
    write(tmp_path / "ckpt", make_config(), weights, tp=2, pp=1)
    assert inspect(tmp_path / "ckpt") == 0
    out = capsys.readouterr().out
    assert f"checkpoint        {tmp_path / 'ckpt' / 'global_step4'}" in out
    for line in ("iteration         4", "consumed samples  64", "vocabulary        300",
                 "layout            model_parallel_size 2, pipe_parallel_size 1",
                 "resume state      weights only (a resumed run starts a fresh optimizer)"):
        assert line in out.splitlines()
    model_line = next(line for line in out.splitlines() if line.startswith("model "))
    for item in ("num_layers 2", "hidden_size 32", "num_attention_heads 4", "pos_emb rotary",
                 "no_weight_tying True", "padded_vocab_size 512", "tokenizer_type HFTokenizer"):
        assert item in model_line
    rows = {line.split()[0]: line.split() for line in out.splitlines()[8:-1]}
    assert list(rows) == ["parameter", *weights], "full (tp = 1) names, in model order"
    for name, tensor in weights.items():  # merged from 2 shards x pipeline layer files
        shape = " x ".join(map(str, tensor.shape))
        assert " ".join(rows[name][1:-2]) == shape and rows[name][-2] == "float32", name
        assert float(rows[name][-1]) == pytest.approx(float(tensor.double().norm()), rel=1e-5), name
    total = sum(t.numel() for t in weights.values())
    assert out.splitlines()[-1] == f"total: {total:,} parameters in {len(weights)} tensors"


def test_a_checkpoint_and_its_reshard_do_not_differ(tmp_path, weights, capsys):
    write(tmp_path / "tp2", make_config(), weights, tp=2)
    cut = {**weights, "embedding.word_embeddings.weight": weights["embedding.word_embeddings.weight"][:384]}
    write(tmp_path / "tp1", make_config(padded_vocab_size=384), cut, tp=1)  # less vocabulary padding
    assert inspect(tmp_path / "tp2", tmp_path / "tp1") == 0
    out = capsys.readouterr().out
    assert "  model_parallel_size: 2 -> 1" in out and "  padded_vocab_size: 512 -> 384" in out
    assert "  embedding.word_embeddings.weight: 512 x 32 vs 384 x 32, first 384 rows compared (padding)" in out
    assert out.splitlines()[-1] == f"max abs diff: 0; 0 of {len(weights)} compared parameters differ"


def test_differences_config_missing_shapes_and_values(tmp_path, weights, capsys):
    write(tmp_path / "a", make_config(), weights)
    other = {k: v.clone() for k, v in weights.items() if k != "lm_head.embed_out.weight"}
    other["layers.0.attention.dense.weight"][3, 5] += 0.25
    other["layers.1.mlp.dense_h_to_4h.bias"] = torch.zeros(7)
    write(tmp_path / "b", make_config(no_weight_tying=False, seq_length=32), other)
    assert inspect(tmp_path / "a", "--iteration", 4, tmp_path / "b") == 0
    lines = capsys.readouterr().out.splitlines()
    for expected in ("  no_weight_tying: True -> False", "  seq_length: 16 -> 32", "  only in A: lm_head.embed_out.weight",
                     "  layers.1.mlp.dense_h_to_4h.bias: 128 vs 7, not compared"):
        assert expected in lines
    dense = next(line.split() for line in lines if line.startswith("layers.0.attention.dense.weight "))
    assert float(dense[1]) == pytest.approx(0.25) and float(dense[2]) == pytest.approx(0.25)
    compared = len(weights) - 2
    assert lines[-1] == f"max abs diff: 0.25 (layers.0.attention.dense.weight); 1 of {compared} compared parameters differ"


def test_missing_or_incomplete_checkpoint_exits_1(tmp_path, weights, capsys):
    write(tmp_path / "ckpt", make_config(), weights, tp=2)
    step = tmp_path / "ckpt" / "global_step4"
    cases = [((tmp_path / "absent",), f"checkpoint directory not found: {tmp_path / 'absent'}"),
             ((tmp_path / "ckpt", "--iteration", 9), "global_step9 has no megatron_lite.json"),
             ((tmp_path / "ckpt", tmp_path / "absent"), "checkpoint directory not found")]
    for args, message in cases:
        assert inspect(*args) == 1
        err = capsys.readouterr().err
        assert err.startswith("inspect_checkpoint.py: error: ") and message in err, err
    (step / "mp_rank_01_model_states.pt").unlink()  # half of every split tensor is gone
    assert inspect(tmp_path / "ckpt") == 1
    assert "lacks tensor-parallel rank(s) [1] of 2" in capsys.readouterr().err
    (step / META_FILE).unlink()  # an interrupted save
    result = subprocess.run([sys.executable, str(REPO / "tools" / "inspect_checkpoint.py"), str(tmp_path / "ckpt")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip() == (f"inspect_checkpoint.py: error: incomplete or missing checkpoint: {step} "
                                     f"has no {META_FILE}")
