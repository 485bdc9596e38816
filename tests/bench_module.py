"""``tools/bench/train.py`` as an importable module (tools/bench is scripts, not a package, and
its name would clash with the repository's train.py)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]


def load_train_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_train", REPO / "tools" / "bench" / "train.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module
