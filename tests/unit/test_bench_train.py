"""tools/bench/train.py writes one record per (shape, implementation) with the documented keys,
and on out-of-memory halves the micro batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.bench_module import load_train_bench

pytestmark = pytest.mark.meta
REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("isolate", [False, True], ids=["resident_fp32", "isolated_bf16"])
def test_bench_json_records(tmp_path, isolate):
    out = tmp_path / "bench.json"
    # A subprocess: the bench starts a (one-rank) process group, which unit tests do not have.
    result = subprocess.run(
        [sys.executable, str(REPO / "tools" / "bench" / "train.py"), "--shapes", "nanogpt_cpu",
         "--repeats", "2", "--steps", "1", "--warmup", "1", "--micro_batch", "2", "--out", str(out)]
        + (["--isolate", "--bf16"] if isolate else []),
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if k != "MASTER_PORT"} | {"PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(out.read_text())
    records = report["records"]
    assert [(r["shape"], r["impl"]) for r in records] == [
        ("nanogpt_cpu", impl) for impl in ("megatron_lite", "transformers", "nanogpt_style")]
    for r in records:
        assert r["tokens_per_s"] > 0 and r["ms_per_step"] > 0 and r["peak_mem_mb"] >= 0
        assert len(r["ms_per_step_repeats"]) == 2
        assert r["tokens_per_s"] == r["micro_batch"] * r["seq"] * 1000.0 / r["ms_per_step"]
        assert "mfu" not in r  # MFU only on a GPU
        assert r["arch"] == {"transformers": "gpt_neox", "nanogpt_style": "nanogpt"}.get(r["impl"], "gpt_neox")
        assert r["precision"] == ("bfloat16" if isolate else "fp32")
        if r["impl"] != "megatron_lite":  # per repeat round, its time over ours, and the median
            assert len(r["vs_megatron_lite_per_repeat"]) == 2 and r["vs_megatron_lite"] > 0
        if isolate:  # ours keeps freed memory as train.py's workers do; the references do not
            assert r["keep_freed_memory"] == (r["impl"] == "megatron_lite")
    assert report["suite"] == "cpu" and "load_avg_start" in report["meta"]
    assert report["isolate"] is isolate
    assert "megatron_lite" in result.stdout and "ours vs it" in result.stdout


def test_isolated_allocator_choice_and_option_errors(capsys):
    bench = load_train_bench()
    same = bench.parse_args(["--isolate", "--reference-keep-freed-memory"])
    assert all(bench._keeps_freed_memory(impl, same) for impl in bench.IMPLS)
    assert bench.main(["--reference-keep-freed-memory"]) == 2
    assert "needs --isolate" in capsys.readouterr().err


def test_out_of_memory_halves_the_micro_batch_until_it_fits(monkeypatch, capsys):
    bench = load_train_bench()
    tried, limit = [], {"fits": 2}

    def measure(cfg, batches, impls, warmup, steps, repeats, device):
        micro = cfg.training.train_micro_batch_size_per_gpu
        tried.append(micro)
        if micro > limit["fits"]:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return {impl: bench.Measured(ms=[10.0], peak_mem_mb=1.0) for impl in impls}

    monkeypatch.setattr(bench, "measure_resident", measure)
    args = bench.parse_args(["--suite", "cpu", "--steps", "1", "--impls", "megatron_lite"])
    shape = bench.Shape("tiny", 1, 32, 2, 16, 8, 64)
    records = bench.run_shape(shape, args, torch.device("cpu"))
    assert tried == [8, 4, 2]
    assert [r["micro_batch"] for r in records] == [2]
    assert records[0]["tokens_per_s"] == 2 * 16 * 1000.0 / 10.0
    assert "retrying with micro batch 2" in capsys.readouterr().out
    tried.clear()
    limit["fits"] = 0
    with pytest.raises(torch.OutOfMemoryError):  # nothing fits: 4, 2, 1, then the error itself
        bench.run_shape(bench.Shape("tiny", 1, 32, 2, 16, 4, 64), args, torch.device("cpu"))
    assert tried == [4, 2, 1]
