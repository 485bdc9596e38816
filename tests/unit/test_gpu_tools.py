"""tools/gpu/check.sh fails clearly, before any test, where DeepSpeed is missing and no wheel
kit was brought along (its GPU work itself runs on a GPU machine: see tests/gpu)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.meta
REPO = Path(__file__).resolve().parents[2]


def test_check_sh_without_deepspeed_or_kit_names_the_fix(tmp_path):
    result = subprocess.run(
        ["bash", str(REPO / "tools" / "gpu" / "check.sh"), "tests"], capture_output=True, text=True,
        timeout=60, env={"PATH": "/usr/bin:/bin", "PY": "false",  # a Python where nothing imports
                         "KIT": str(tmp_path / "no-kit"), "OUT": str(tmp_path / "out")},
    )
    assert result.returncode == 2
    assert "DeepSpeed is not installed" in result.stderr and "offline_kit.sh" in result.stderr
    assert not (tmp_path / "out" / "gpu_tests.log").exists()
