"""Run ``steps.train_step`` on one GPU and report every host-device synchronization inside it.

    PYTHONPATH=. python tests/gpu/sync_probe.py {fp32,bf16} REPORT.json

A process of its own (tests/gpu/test_gpu.py runs it, with PYTHONPATH set to the repository for
``tests``): the step needs a process group, which test processes do not have. The step is the
one ``tools/bench/train.py`` times: a DeepSpeed engine from ``training.engine.build_engine``
over ``GPTModel``. Syncs are caught two ways: implicit ones (``.item()``, ``bool(tensor)``,
device-to-host copies) through torch's sync debug mode, and explicit ``torch.cuda.synchronize``
calls by wrapping that function. Each is reported as the innermost frame outside torch,
"file:line".
"""

from __future__ import annotations

import json
import os
import sys
import traceback
import warnings
from pathlib import Path

import torch

from tests.bench_module import load_train_bench


def _caller() -> str:
    frames = [f for f in traceback.extract_stack()[:-2] if "/torch/" not in f.filename]
    return f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "?"


def main(precision: str, report: str) -> None:
    bench = load_train_bench()
    device = torch.device("cuda")
    shape = bench.Shape("probe", 2, 256, 4, 256, 4, 1024)
    args = bench.parse_args(["--suite", "gpu", "--impls", "megatron_lite"])
    bench._import_all(shape, args, device)
    cfg = bench.model_config(shape, precision == "bf16", False)
    step = bench.build_megatron_lite(cfg, bench.random_batches(shape, 4), device)
    for _ in range(3):  # warm up: first steps allocate optimizer state
        step()
    torch.cuda.synchronize()

    explicit: list[str] = []
    real_synchronize = torch.cuda.synchronize

    def recording_synchronize(*a, **kw):
        explicit.append(_caller())
        return real_synchronize(*a, **kw)

    torch.cuda.synchronize = recording_synchronize
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        results = [step() for _ in range(3)]
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize = real_synchronize
    implicit = [f"{w.filename}:{w.lineno}" for w in caught if "synchroniz" in str(w.message).lower()]
    losses = [float(r.loss) for r in results]
    Path(report).write_text(json.dumps({"precision": cfg.training.precision, "losses": losses,
                                        "implicit": implicit, "explicit": explicit}, indent=2))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
    sys.stdout.flush()
    os._exit(0)  # skip process-group teardown (see tests/distributed/spawn.py)
