"""``tools/bench/train.py`` as an importable module (tools/bench is scripts, not a package, and
its name would clash with the repository's train.py).

Run as a script, train.py imports its sibling modules by their plain names (Python puts the
script's directory first on sys.path); here each sibling is loaded from its file and registered
in ``sys.modules`` under that name first, so nothing touches sys.path."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "tools" / "bench"
# train.py's siblings, each after those it imports.
SIBLINGS = ("nanogpt_style", "train_impls", "train_measure")


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # its dataclasses, and the modules importing it, look it up there
    spec.loader.exec_module(module)
    return module


def load_train_bench() -> ModuleType:
    for name in SIBLINGS:
        _load(name, BENCH / f"{name}.py")
    return _load("bench_train", BENCH / "train.py")
