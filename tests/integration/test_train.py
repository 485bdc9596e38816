"""train.py through deepy.py on CPU: parallel invariance, resume, save safety, exits."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.distributed.spawn import free_port

REPO = Path(__file__).resolve().parents[2]


def base_config(tmp_path: Path, data_prefix: str, **overrides) -> dict:
    cfg = {
        "num_layers": 2, "hidden_size": 32, "num_attention_heads": 4, "seq_length": 16,
        "pos_emb": "rotary", "tokenizer_type": "CharLevelTokenizer",
        "make_vocab_size_divisible_by": 64,
        "optimizer": {"type": "Adam", "params": {"lr": 0.003, "betas": [0.9, 0.95]}},
        "weight_decay": 0.1, "gradient_clipping": 1.0, "min_lr": 0.0003,
        "lr_decay_style": "cosine", "warmup": 0.2,
        "train_batch_size": 4, "train_iters": 6, "seed": 7,
        "data_path": data_prefix, "split": "90,10,0", "num_workers": 0,
        "eval_interval": 3, "eval_iters": 1, "log_interval": 1,
        "log_dir": str(tmp_path / "logs"), "master_port": free_port(), "num_gpus": 1,
    }
    cfg.update(overrides)
    return cfg


def run_train(tmp_path: Path, cfg: dict, name: str = "run.yml", timeout: int = 300,
              expect_ok: bool = True) -> subprocess.CompletedProcess:
    path = tmp_path / name
    path.write_text(json.dumps(cfg))
    result = subprocess.run(
        [sys.executable, str(REPO / "deepy.py"), str(REPO / "train.py"), str(path)],
        capture_output=True, text=True, cwd=tmp_path, timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    if expect_ok:
        assert result.returncode == 0, result.stderr[-4000:]
    return result


def records(tmp_path: Path, split: str | None = None) -> list[dict]:
    out: list[dict] = []
    if not (tmp_path / "logs").exists():
        return out
    for run_dir in sorted((tmp_path / "logs").iterdir()):
        metrics = run_dir / "metrics.jsonl"
        if metrics.exists():
            for line in metrics.read_text().splitlines():
                rec = json.loads(line)
                if rec.get("split") == split:
                    out.append(rec)
    return out


def train_losses(tmp_path: Path) -> dict[int, float]:
    return {r["iteration"]: r["loss"] for r in records(tmp_path)}


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, data_prefix) -> Path:
    """One uninterrupted run (6 iterations, validation at 3 and 6): its log directory."""
    tmp = tmp_path_factory.mktemp("reference")
    run_train(tmp, base_config(tmp, data_prefix, train_micro_batch_size_per_gpu=4))
    return tmp


@pytest.fixture(scope="module")
def reference(reference_run) -> dict[int, float]:
    losses = train_losses(reference_run)
    assert sorted(losses) == list(range(1, 7))
    assert losses[6] < losses[1], "the tiny model learns"
    return losses


LAYOUTS = {
    "dp2": {"num_gpus": 2, "train_micro_batch_size_per_gpu": 2},
    "tp2": {"num_gpus": 2, "model_parallel_size": 2, "train_micro_batch_size_per_gpu": 4},
    "pp2": {"num_gpus": 2, "pipe_parallel_size": 2, "train_micro_batch_size_per_gpu": 2},
    "tp2_pp2": {"num_gpus": 4, "model_parallel_size": 2, "pipe_parallel_size": 2,
                "train_micro_batch_size_per_gpu": 2},
    # Megatron-style sequence parallelism through the pipeline: rotary positions from chunks,
    # the final norm gathering the sequence, replicated gradients summed over the tp ranks.
    "tp2_pp2_sp": {"num_gpus": 4, "model_parallel_size": 2, "pipe_parallel_size": 2,
                   "sequence_parallel": True, "train_micro_batch_size_per_gpu": 2},
    "zero1_dp2": {"num_gpus": 2, "zero_optimization": {"stage": 1}, "train_micro_batch_size_per_gpu": 2},
    "zero2_dp2": {"num_gpus": 2, "zero_optimization": {"stage": 2}, "train_micro_batch_size_per_gpu": 2},
    "zero3_dp2": {"num_gpus": 2, "zero_optimization": {"stage": 3}, "train_micro_batch_size_per_gpu": 2},
    "gas2": {"train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": 2},
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_parallel_layouts_match_single_process(tmp_path, data_prefix, reference, layout):
    run_train(tmp_path, base_config(tmp_path, data_prefix, **LAYOUTS[layout]))
    losses = train_losses(tmp_path)
    assert sorted(losses) == sorted(reference)
    for it, loss in reference.items():
        assert losses[it] == pytest.approx(loss, rel=2e-5, abs=2e-5), f"{layout} iteration {it}"


def test_logging_records_and_evaluation(tmp_path, data_prefix):
    run_train(tmp_path, base_config(tmp_path, data_prefix, train_micro_batch_size_per_gpu=4,
                                    tensorboard_dir=str(tmp_path / "tb"), peak_theoretical_tflops=1.0))
    rec = records(tmp_path)[-1]
    for key in ("iteration", "loss", "lr", "grad_norm", "tokens_per_s", "ms_per_iter",
                "tflops_per_device", "mfu", "memory_mb"):
        assert key in rec, key
    valid, test = records(tmp_path, "valid"), records(tmp_path, "test")
    assert [r["iteration"] for r in valid] == [3, 6]
    assert all(abs(r["perplexity"] - np.exp(r["loss"])) < 1e-3 * r["perplexity"] for r in valid)
    assert test == []  # split "90,10,0" has no test documents
    assert any((tmp_path / "tb").rglob("events.out.tfevents.*"))
    run_dir = next((tmp_path / "logs").iterdir())
    assert (run_dir / "config.yml").exists() and (run_dir / "rank0.log").exists()


def test_resume_equals_uninterrupted_run(tmp_path, data_prefix, reference, reference_run):
    save = str(tmp_path / "ckpt")
    cfg = base_config(tmp_path, data_prefix, train_micro_batch_size_per_gpu=4, save=save,
                      load=save, exit_interval=3, checkpoint_factor=100)
    run_train(tmp_path, cfg, "first.yml")
    assert (Path(save) / "latest").read_text() == "global_step3"
    run_train(tmp_path, {**cfg, "exit_interval": None}, "second.yml")
    losses = train_losses(tmp_path)
    for it in range(1, 7):
        assert losses[it] == reference[it], f"iteration {it}: bit-for-bit after resume"
    # Validation continues where the uninterrupted run's was at iteration 3, not at its start.
    valid = {r["iteration"]: r["loss"] for r in records(tmp_path, "valid")}
    expected = {r["iteration"]: r["loss"] for r in records(reference_run, "valid")}
    assert sorted(valid) == sorted(expected) == [3, 6]
    assert valid[6] == expected[6], "validation after resume: same batches as without the stop"
    step6 = Path(save) / "global_step6"
    assert (step6 / "megatron_lite.json").exists() and (step6 / "config.yml").exists()


def test_keep_last_n_and_extra_save_iters(tmp_path, data_prefix):
    save = tmp_path / "ckpt"
    run_train(tmp_path, base_config(tmp_path, data_prefix, train_micro_batch_size_per_gpu=4,
                                    save=str(save), checkpoint_factor=2, extra_save_iters=[1],
                                    keep_last_n_checkpoints=2))
    assert sorted(p.name for p in save.glob("global_step*")) == ["global_step4", "global_step6"]
    assert (save / "latest").read_text() == "global_step6"


def test_nan_loss_stops_with_last_good_checkpoint(tmp_path, data_prefix):
    save = tmp_path / "ckpt"
    cfg = base_config(tmp_path, data_prefix, train_micro_batch_size_per_gpu=4, save=str(save),
                      checkpoint_factor=1, gradient_clipping=0.0, warmup=0.0, train_iters=20,
                      optimizer={"type": "SGD", "params": {"lr": 1.0e12}})
    result = run_train(tmp_path, cfg, expect_ok=False)
    assert result.returncode != 0
    assert "loss is nan" in result.stderr or "loss is inf" in result.stderr
    latest = (save / "latest").read_text()
    assert (save / latest / "megatron_lite.json").exists()


def test_sigterm_saves_then_exits(tmp_path, data_prefix):
    save = tmp_path / "ckpt"
    cfg = base_config(tmp_path, data_prefix, train_micro_batch_size_per_gpu=4, save=str(save),
                      train_iters=100000, checkpoint_factor=100000, eval_interval=0)
    path = tmp_path / "run.yml"
    path.write_text(json.dumps(cfg))
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "deepy.py"), str(REPO / "train.py"), str(path)],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 120
    while len(records(tmp_path)) < 3 and time.monotonic() < deadline:
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    latest = (save / "latest").read_text()
    stopped_at = int(latest.removeprefix("global_step"))
    assert stopped_at >= 3 and (save / latest / "megatron_lite.json").exists()
    assert "received signal" in err


# train.py with every save held for 4 s between DeepSpeed's files and the completeness mark:
# the window a crash-safe save must survive. The fault is injected from outside the library.
_SLOW_SAVE_TRAIN = """
import sys, time
from megatron_lite.checkpoint import engine
from megatron_lite.training.main import main

_finish = engine.finish_step_dir

def _slow_finish(*args, **kwargs):
    time.sleep(4)
    return _finish(*args, **kwargs)

engine.finish_step_dir = _slow_finish
sys.exit(main())
"""


def start_faulty_train(tmp_path: Path, cfg: dict, script_text: str) -> subprocess.Popen:
    """deepy.py running ``script_text`` (train.py's main with a fault injected around it)."""
    path, script = tmp_path / "run.yml", tmp_path / "faulty_train.py"
    path.write_text(json.dumps(cfg))
    script.write_text(script_text)
    return subprocess.Popen([sys.executable, str(REPO / "deepy.py"), str(script), str(path)],
                            cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_sigkill_during_save_keeps_previous_checkpoint(tmp_path, data_prefix):
    save = tmp_path / "ckpt"
    cfg = base_config(tmp_path, data_prefix, train_micro_batch_size_per_gpu=4, save=str(save),
                      load=str(save), checkpoint_factor=2, train_iters=6)
    proc = start_faulty_train(tmp_path, cfg, _SLOW_SAVE_TRAIN)
    # The pause comes after DeepSpeed wrote global_step4's files, before it is marked complete.
    deadline = time.monotonic() + 120
    while not (save / "global_step4").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)
    proc.kill()
    proc.wait(timeout=30)
    assert (save / "latest").read_text() == "global_step2"
    assert not (save / "global_step4" / "megatron_lite.json").exists()
    result = run_train(tmp_path, cfg, "resume.yml")
    assert "resumed from" in result.stderr and "global_step2" in result.stderr
    assert (save / "latest").read_text() == "global_step6"


def test_compile_matches_eager(tmp_path, data_prefix, reference):
    """``compile: true`` (torch.compile of the model inside the DeepSpeed engine) trains the
    same model: losses equal the eager run's up to kernel-fusion rounding."""
    run_train(tmp_path, base_config(tmp_path, data_prefix, train_micro_batch_size_per_gpu=4, compile=True),
              timeout=600)
    losses = train_losses(tmp_path)
    assert sorted(losses) == sorted(reference)
    for it, loss in reference.items():
        assert losses[it] == pytest.approx(loss, rel=1e-4, abs=1e-4), f"iteration {it}"


def test_bf16_training_tracks_fp32(tmp_path, data_prefix, reference):
    """``bf16: {enabled: true}`` trains through DeepSpeed's bf16 optimizer (bf16 weights and
    activations, fp32 master weights); on the CPU too, where it is slow but runs."""
    run_train(tmp_path, base_config(tmp_path, data_prefix, train_micro_batch_size_per_gpu=4,
                                    bf16={"enabled": True}))
    losses = train_losses(tmp_path)
    assert sorted(losses) == sorted(reference)
    for it, loss in reference.items():  # bf16 rounding: about 3 significant digits
        assert losses[it] == pytest.approx(loss, rel=2e-2), f"iteration {it}"
    assert losses != reference  # it did run in bf16


def test_document_resets_train_alike_plain_and_pipelined(tmp_path):
    """eod_mask_loss, reset_position_ids and reset_attention_mask reach train.py's batches (the
    losses change) and the pipeline engine (two stages pass positions and the mask between them:
    the losses equal the plain engine's)."""
    from megatron_lite.data.indexed_dataset import (
        MMapIndexedDatasetBuilder,
        data_file_path,
        index_file_path,
    )

    prefix = str(tmp_path / "short_docs_text_document")
    rng = np.random.default_rng(1)
    with MMapIndexedDatasetBuilder(data_file_path(prefix), np.uint16) as builder:
        for _ in range(80):  # documents of 3-10 bytes then eod (0): several per 16-token sample
            builder.add_item(np.append(rng.integers(97, 110, size=rng.integers(3, 11)), 0))
            builder.end_document()
        builder.finalize(index_file_path(prefix))
    keys = {"eod_mask_loss": True, "reset_position_ids": True, "reset_attention_mask": True}
    runs = {"plain": {}, "resets": keys, "resets_pp2": {**keys, "num_gpus": 2, "pipe_parallel_size": 2}}
    losses = {}
    for name, overrides in runs.items():
        run_dir = tmp_path / name
        run_dir.mkdir()
        # Micro batches of 2 everywhere: with eod_mask_loss the micro batches count different
        # numbers of tokens, and the step's loss is the mean of their means (as GPT-NeoX's).
        cfg = base_config(run_dir, prefix, train_iters=3, eval_interval=0,
                          train_micro_batch_size_per_gpu=2, **overrides)
        run_train(run_dir, cfg)
        losses[name] = train_losses(run_dir)
    assert sorted(losses["resets"]) == [1, 2, 3]
    # Same seed, same data: only the three keys differ (runs repeat to ~1e-6; near-uniform
    # predictions at the first step make the difference small, not zero).
    assert abs(losses["resets"][1] - losses["plain"][1]) > 1e-4
    for it, loss in losses["resets"].items():
        assert losses["resets_pp2"][it] == pytest.approx(loss, rel=2e-5, abs=2e-5), f"iteration {it}"
