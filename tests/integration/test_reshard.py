"""tools/reshard_checkpoint.py: a tp2 x pp2 -> tp1 x pp1 -> tp4 round trip keeps the logits and
writes the trainer's file layout; clear errors; and training resumes from a resharded
checkpoint (iteration, data position, LR schedule kept, fresh optimizer)."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import megatron_lite
from megatron_lite.checkpoint.layout import read_meta, read_step_config
from megatron_lite.checkpoint.weights import write_weights_checkpoint
from megatron_lite.config import config_from_flat, dump_yaml
from megatron_lite.config.derived import resolve
from megatron_lite.model.gpt import GPTModel
from tests.integration.test_train import base_config, records, run_train

REPO = Path(__file__).resolve().parents[2]
LAYERS, HIDDEN, FFN = 2, 32, 128


def reshard(*args) -> int:
    """The tool's main() in this process (a subprocess costs seconds of imports)."""
    spec = importlib.util.spec_from_file_location("reshard_checkpoint", REPO / "tools" / "reshard_checkpoint.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main([str(a) for a in args])


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """A tp2 x pp2 checkpoint at iteration 5 (80 samples consumed): GQA, SwiGLU, untied head
    (a pipeline file of its own), and a BPE tokenizer of 300 tokens, whose padding differs per
    tp (384 rows at tp 1, 512 at tp 2 and 4)."""
    from tokenizers import ByteLevelBPETokenizer

    root = tmp_path_factory.mktemp("source")
    tok = ByteLevelBPETokenizer()
    tok.train_from_iterator(["the model reads a token and then predicts the next one"] * 40, vocab_size=300,
                            special_tokens=["<|endoftext|>", "<|padding|>"])
    tok.save(str(root / "tokenizer.json"))
    flat = {"num_layers": LAYERS, "hidden_size": HIDDEN, "num_attention_heads": 8, "num_kv_heads": 4,
            "ffn_hidden_size": FFN, "activation": "swiglu", "no_weight_tying": True, "seq_length": 16,
            "pos_emb": "rotary", "tokenizer_type": "HFTokenizer", "vocab_file": str(root / "tokenizer.json"),
            "make_vocab_size_divisible_by": 128, "model_parallel_size": 2, "pipe_parallel_size": 2,
            "train_batch_size": 16, "optimizer": {"type": "Adam", "params": {"lr": 0.001}}}
    cfg = resolve(config_from_flat(flat), 4)
    assert cfg.model.padded_vocab_size == 512
    full = GPTModel(cfg.model, seed=3).state_dict()
    with torch.no_grad():  # non-trivial norms and biases
        for key, value in full.items():
            if "norm" in key or key.endswith("bias"):
                value.add_(0.1 * torch.randn_like(value))
    write_weights_checkpoint(full, str(root / "ckpt"), dump_yaml(cfg), 2, glu=True, iteration=5,
                             tokenizer_files=[str(root / "tokenizer.json")], vocab_size=tok.get_vocab_size(),
                             pipe_parallel_size=2, consumed_train_samples=80)
    return root / "ckpt"


def model_files(step: Path) -> list[str]:
    return sorted(p.name for p in step.iterdir() if p.suffix == ".pt")


def check_on_disk(out: Path, tp: int, pp: int, rows: int) -> None:
    """The layout the trainer writes for (tp, pp), shards of the right shapes, the metadata and
    config of the new layout, the tokenizer copy."""
    step = out / "global_step5"
    assert (out / "latest").read_text() == "global_step5"
    if pp == 0:
        assert model_files(step) == [f"mp_rank_{r:02d}_model_states.pt" for r in range(tp)]
        shards = [torch.load(step / f"mp_rank_{r:02d}_model_states.pt", weights_only=True)["module"]
                  for r in range(tp)]
        layer0 = [{k.removeprefix("layers.0."): v for k, v in s.items()} for s in shards]
        embed = [s["embedding.word_embeddings.weight"] for s in shards]
    else:  # embedding, the layers, final norm, untied head: one file per layer index and tp rank
        assert model_files(step) == [f"layer_{i:02d}-model_{r:02d}-model_states.pt"
                                     for i in range(LAYERS + 3) for r in range(tp)]
        layer0 = [torch.load(step / f"layer_01-model_{r:02d}-model_states.pt", weights_only=True) for r in range(tp)]
        embed = [torch.load(step / f"layer_00-model_{r:02d}-model_states.pt", weights_only=True)["word_embeddings.weight"]
                 for r in range(tp)]
    kv_rows = (8 + 2 * 4) * HIDDEN // 8  # 8 query heads + 4 key + 4 value heads of 4 dims
    for shard, emb in zip(layer0, embed):
        assert shard["attention.query_key_value.weight"].shape == (kv_rows // tp, HIDDEN)
        assert shard["attention.dense.weight"].shape == (HIDDEN, HIDDEN // tp)
        assert shard["mlp.dense_h_to_4h.weight"].shape == (2 * FFN // tp, HIDDEN)
        assert shard["mlp.dense_4h_to_h.weight"].shape == (HIDDEN, FFN // tp)
        assert emb.shape == (rows // tp, HIDDEN)
    meta = read_meta(str(step))
    assert (meta.iteration, meta.consumed_train_samples, meta.model_parallel_size, meta.pipe_parallel_size,
            meta.weights_only) == (5, 80, tp, pp, True)
    config = read_step_config(str(step))
    assert (config["model_parallel_size"], config["pipe_parallel_size"], config["padded_vocab_size"]) == (tp, pp, rows)
    assert config["load"] == config["save"] == str(out)
    assert (step / "tokenizer" / "tokenizer.json").is_file()
    assert not list(out.parent.glob("*.tmp")) and not list(out.glob("*.tmp"))


def test_round_trip_tp2pp2_tp1pp1_tp4_keeps_logits_and_writes_the_layout(tmp_path, source):
    reference, _ = megatron_lite.load_model(str(source))
    tokens = torch.randint(0, reference.vocab_size, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = reference(tokens)
    previous = source
    for name, tp, pp, rows in (("tp1_pp1", 1, 1, 384), ("tp4_pp0", 4, 0, 512)):
        out = tmp_path / name
        assert reshard("--input_dir", previous, "--output_dir", out, "--model_parallel_size", tp,
                       "--pipe_parallel_size", pp) == 0
        check_on_disk(out, tp, pp, rows)
        model, tokenizer = megatron_lite.load_model(str(out))
        assert tokenizer is not None and model.vocab_size == reference.vocab_size
        with torch.no_grad():
            assert torch.equal(model(tokens), expected), name
        previous = out


@pytest.mark.parametrize("args, message", [
    (["--model_parallel_size", "3"], "num_attention_heads (8) is not divisible by model_parallel_size (3)"),
    (["--model_parallel_size", "8"], "num_kv_heads (4) must divide num_attention_heads (8) and be divisible "
                                     "by model_parallel_size (8)"),
    (["--pipe_parallel_size", "3"], "pipe_parallel_size (3) exceeds num_layers (2)"),
    (["--input_dir", "{tmp}/absent"], "checkpoint directory not found: {tmp}/absent"),
    (["--output_dir", "{source}"], "must lie outside --input_dir"),
    (["--output_dir", "{tmp}/full"], "--output_dir {tmp}/full holds a checkpoint: choose another directory, "
                                     "or pass --force"),
    (["--output_dir", "{tmp}/other"], "--output_dir {tmp}/other is not empty"),
], ids=["tp3-heads", "tp8-kv-heads", "pp3-layers", "missing-input", "output-is-input", "output-has-checkpoint",
        "output-not-empty"])
def test_errors_name_the_value_and_write_nothing(tmp_path, source, capsys, args, message):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "latest").write_text("global_step1")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("keep me")
    options = {"--input_dir": str(source), "--output_dir": str(tmp_path / "out"),
               "--model_parallel_size": "1", "--pipe_parallel_size": "0"}
    options.update(zip(args[::2], (a.format(tmp=tmp_path, source=source) for a in args[1::2])))
    assert reshard(*[x for pair in options.items() for x in pair]) == 1
    err = capsys.readouterr().err
    assert err.startswith("reshard_checkpoint.py: error: ") and len(err.strip().splitlines()) == 1
    assert message.format(tmp=tmp_path, source=source) in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full", "other"], "nothing written"
    assert (tmp_path / "other" / "notes.txt").read_text() == "keep me"
    assert (source / "global_step5").is_dir()


def test_force_replaces_an_existing_output(tmp_path, source):
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    assert reshard("--input_dir", source, "--output_dir", out, "--model_parallel_size", 1,
                   "--pipe_parallel_size", 0, "--force") == 0
    assert not (out / "stale.txt").exists()
    check_on_disk(out, 1, 0, 384)


def test_resharded_checkpoint_resumes_training(tmp_path, data_prefix):  # noqa: F811
    """tp2 run for 6 iterations (saving at 3 and 6); reshard step 3 to tp1; a tp1 run with `load`
    there starts at iteration 4 on the same data with the same LR: its first loss (weights of
    step 3, before any update) equals the tp2 run's; later ones stay close with a fresh Adam."""
    first, second = tmp_path / "tp2", tmp_path / "tp1"
    first.mkdir()
    second.mkdir()
    run_train(first, base_config(first, data_prefix, num_gpus=2, model_parallel_size=2,
                                 train_micro_batch_size_per_gpu=4, save=str(first / "ckpt"), checkpoint_factor=3))
    uninterrupted = {r["iteration"]: r for r in records(first)}
    resharded = tmp_path / "resharded"
    tool = subprocess.run([sys.executable, str(REPO / "tools" / "reshard_checkpoint.py"), "--input_dir",
                           str(first / "ckpt"), "--iteration", "3", "--output_dir", str(resharded),
                           "--model_parallel_size", "1", "--pipe_parallel_size", "0"],
                          capture_output=True, text=True, timeout=120)
    assert tool.returncode == 0, tool.stderr
    assert "iteration 3, 12 samples consumed" in tool.stdout
    result = run_train(second, base_config(second, data_prefix, train_micro_batch_size_per_gpu=4,
                                           load=str(resharded), save=str(second / "ckpt")))
    assert "holds weights only" in result.stderr and "FRESH optimizer state" in result.stderr
    resumed = {r["iteration"]: r for r in records(second)}
    assert sorted(resumed) == [4, 5, 6], "starts after the saved iteration"
    for it, rec in resumed.items():
        assert math.isfinite(rec["loss"])
        assert rec["lr"] == pytest.approx(uninterrupted[it]["lr"], rel=1e-6), f"LR schedule at {it}"
        assert rec["loss"] == pytest.approx(uninterrupted[it]["loss"], rel=0.02), f"iteration {it}"
    assert resumed[4]["loss"] == pytest.approx(uninterrupted[4]["loss"], rel=2e-5, abs=2e-5)
    meta = json.loads((second / "ckpt" / "global_step6" / "megatron_lite.json").read_text())
    assert (meta["iteration"], meta["consumed_train_samples"], meta["weights_only"]) == (6, 24, False)
