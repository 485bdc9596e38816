"""launcher/allocator.py: freed host memory is reused instead of page-faulted in again."""

from __future__ import annotations

import subprocess
import sys

import pytest

# A 64 MiB tensor is above glibc's largest automatic mmap threshold (32 MiB), so by default
# every allocation maps fresh pages and faults each of them in (16k faults of 4 KiB).
CHILD = """
import resource, sys, torch
from megatron_lite.launcher.allocator import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
for _ in range(20):  # the heap grows to its working size first
    torch.ones(16 << 20)
start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    torch.ones(16 << 20)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start)
"""


def _faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1])


@pytest.mark.meta
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc settings")
def test_keep_freed_memory_stops_page_faults_on_reallocation():
    default, kept = _faults("default"), _faults("keep")
    assert default > 5 * 8000  # five 64 MiB tensors, each faulted in again
    assert kept < 1000


@pytest.mark.parametrize("keep", [True, False])
def test_cpu_worker_start_up_follows_cpu_keep_freed_memory(tmp_path, monkeypatch, keep):
    """Worker start-up sets the allocator on the CPU exactly when the config says so."""
    import torch

    from megatron_lite.launcher import worker

    calls = []
    monkeypatch.setattr(worker, "keep_freed_memory", lambda: calls.append(1) or True)
    monkeypatch.setattr(worker, "init_distributed", lambda cfg: "state")
    monkeypatch.setattr(worker, "setup_logging", lambda **kwargs: None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    path = tmp_path / "run.yml"
    path.write_text(
        "num_layers: 2\nhidden_size: 64\nnum_attention_heads: 4\nseq_length: 32\n"
        "padded_vocab_size: 128\ntrain_micro_batch_size_per_gpu: 1\n"
        f"cpu_keep_freed_memory: {str(keep).lower()}\n")
    args, state = worker.start_worker([f"--megatron_lite_config={path}", f"--run_dir={tmp_path}"])
    assert state == "state" and args.cfg.launcher.cpu_keep_freed_memory is keep
    assert calls == ([1] if keep else [])
