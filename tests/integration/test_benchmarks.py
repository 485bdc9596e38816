"""tools/bench/shakespeare.py, generate.py and arch_cost.py run end to end on tiny settings and
write the documented JSON (the figures themselves are measured by hand: see the README)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.meta
REPO = Path(__file__).resolve().parents[2]
ENV = {k: v for k, v in os.environ.items() if k != "MASTER_PORT"} | {"PYTHONPATH": str(REPO)}


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300,
                            cwd=cwd, env=ENV)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def test_shakespeare_bench_alternates_and_reports_both(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("First Citizen:\nBefore we proceed any further, hear me speak.\n\n" * 300)
    out = tmp_path / "r.json"
    result = _run([str(REPO / "tools" / "bench" / "shakespeare.py"), "--input", str(corpus), "--iters", "10",
                   "--eval_iters", "2", "--repeats", "2", "--out", str(out)], tmp_path)
    report = json.loads(out.read_text())
    assert report["iters"] == 10 and report["reference_keep_freed_memory"] is False
    for impl in ("megatron_lite", "nanogpt_style"):
        assert len(report[impl]) == 2
        for run in report[impl]:
            assert run["train_seconds"] > 0 and run["ms_per_iter"] > 0 and run["val_loss"] < 5.0
    assert len(report["ratios"]) == 2 and all(r > 0 for r in report["ratios"])
    assert "per repeat" in result.stdout and "median" in result.stdout


def test_generate_bench_reports_both_batches(tmp_path):
    out = tmp_path / "g.json"
    result = _run([str(REPO / "tools" / "bench" / "generate.py"), "--layers", "1", "--hidden", "64", "--heads", "2",
                   "--vocab", "1000", "--prompt-tokens", "4", "--new-tokens", "4", "--repeats", "1",
                   "--out", str(out)], tmp_path)
    report = json.loads(out.read_text())
    assert set(report) == {"1", "8"}
    for batch in report.values():
        assert batch["megatron_lite"] > 0 and batch["transformers"] > 0
    assert "ratio" in result.stdout


def test_arch_cost_times_every_architecture(tmp_path):
    out = tmp_path / "a.json"
    result = _run([str(REPO / "tools" / "bench" / "arch_cost.py"), "--blocks", "2", "--steps", "1",
                   "--out", str(out)], tmp_path)
    results = json.loads(out.read_text())["results"]
    assert list(results) == ["gpt_neox", "learned_positions", "no_biases", "nanogpt"]
    assert results["gpt_neox"]["gpt_neox_over_it"] == 1.0
    for r in results.values():
        assert len(r["ms_per_block"]) == 2 and r["ms_per_step"] > 0
    assert "gpt_neox / it" in result.stdout
