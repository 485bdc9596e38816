"""utils/allocator.py: freed host memory is reused instead of page-faulted in again."""

from __future__ import annotations

import subprocess
import sys

import pytest

# A 64 MiB tensor is above glibc's largest automatic mmap threshold (32 MiB), so by default
# every allocation maps fresh pages and faults each of them in (16k faults of 4 KiB).
CHILD = """
import resource, sys, torch
from megatron_lite.utils.allocator import keep_freed_memory
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


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc settings")
def test_keep_freed_memory_stops_page_faults_on_reallocation():
    default, kept = _faults("default"), _faults("keep")
    assert default > 5 * 8000  # five 64 MiB tensors, each faulted in again
    assert kept < 1000
