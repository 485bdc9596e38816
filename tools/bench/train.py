#!/usr/bin/env python
"""Training-step throughput: megatron_lite vs transformers GPTNeoX vs a nanoGPT-style loop.

    python tools/bench/train.py                      # CPU suite (under 5 minutes on 2 cores)
    python tools/bench/train.py --suite gpu --out gpu.json   # bf16 on one GPU, with MFU
    python tools/bench/train.py --isolate [--bf16]           # CPU, each in its own process

All three train the same shape on the same random tokens (fixed seed) with the same optimizer
settings (AdamW lr 6e-4, betas 0.9/0.95, eps 1e-8, weight decay 0.1 on matrices, gradient
clipping 1.0), each in its own idiom:

- ``megatron_lite``: our real training step: ``GPTModel`` in a DeepSpeed engine built by
  ``training.engine.build_engine`` (our parameter groups, LR schedule and clipping) and stepped by
  ``steps.train_step``, the function ``train.py`` runs; one process, world size 1.
- ``transformers``: ``GPTNeoXForCausalLM`` with sdpa attention, built from the same model config
  (``hf_config_dict``: identical architecture and parameter count), torch's fused AdamW (Trainer's
  default optimizer), cosine schedule,
  autocast for bf16 (what ``Trainer(bf16=True)`` does).
- ``nanogpt_style``: ``tools/bench/nanogpt_style.py`` at the same layers, width, heads, context
  and vocabulary (its own architecture: learned positions, no biases, tied head), autocast bf16.

Each implementation is built and warmed up, then the timed repeats alternate between them
(the order rotates each repeat); medians are reported. On CPU the three stay resident and
``peak_mem_mb`` is the growth of the process's resident set while one implementation is built
and warmed up (approximate); on a GPU each repeat rebuilds one implementation at a time and
``peak_mem_mb`` is ``torch.cuda.max_memory_allocated``. MFU counts model FLOPs
(``megatron_lite.model.gpt.flops_per_token``, the same for all three) against ``--peak_tflops``.

The shapes, configs and the three steps are in ``train_impls.py``, timing and memory in
``train_measure.py``; this file runs them per shape and reports.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import statistics
import sys
from typing import Any

import torch
from train_impls import (
    ARCHS,
    BUILDERS,
    CPU_SHAPES,
    GPU_SHAPES,
    IMPLS,
    Shape,
    _import_all,
    _steps_for,
    build_megatron_lite,
    build_nanogpt,
    build_transformers,
    model_config,
    random_batches,
)
from train_measure import (
    Measured,
    _keeps_freed_memory,
    measure_isolated,
    measure_rebuilding,
    measure_resident,
)

from megatron_lite.config import Config
from megatron_lite.model.gpt import flops_per_token

# What tests and probes reach through this file loaded as a module (tests/bench_module.py),
# wherever it is defined.
__all__ = ["BUILDERS", "IMPLS", "Measured", "Shape", "_import_all", "_keeps_freed_memory",
           "build_megatron_lite", "build_nanogpt", "build_transformers", "main", "measure_resident",
           "model_config", "parse_args", "random_batches", "run_shape"]

H100_BF16_DENSE_TFLOPS = 989.0


# ---- one shape --------------------------------------------------------------------------------

def run_shape(shape: Shape, args: argparse.Namespace, device: torch.device) -> list[dict[str, Any]]:
    """Records for one shape; on a GPU out-of-memory halves the micro batch and starts over."""
    warmup, steps = _steps_for(shape, args)
    cfg = model_config(shape, args.bf16, args.compile, args.arch)
    if args.isolate:
        results = measure_isolated(shape, args, tuple(args.impls), steps, args.repeats)
    else:
        results, shape, cfg = _measure_halving_on_oom(shape, cfg, args, warmup, steps, device)
    records = [_record(shape, cfg, impl, m, args, device) | {"arch": arch_of(impl, args.arch)}
               for impl, m in results.items()]
    if args.isolate:
        for r in records:
            r["keep_freed_memory"] = _keeps_freed_memory(r["impl"], args)
    return records


def _measure_halving_on_oom(shape: Shape, cfg: Config, args: argparse.Namespace, warmup: int, steps: int,
                            device: torch.device) -> tuple[dict[str, Measured], Shape, Config]:
    """Measure in this process; on out-of-memory halve the micro batch and start over."""
    while True:
        batches = random_batches(shape, max(steps, 4))
        measure = measure_rebuilding if device.type == "cuda" else measure_resident
        try:
            return measure(cfg, batches, tuple(args.impls), warmup, steps, args.repeats, device), shape, cfg
        except torch.OutOfMemoryError:
            if shape.batch == 1:
                raise
        # Past the except block the exception's traceback, and the model its frames hold, are
        # gone: only now can collecting and emptying the cache give that memory back.
        gc.collect()
        torch.cuda.empty_cache()
        shape = Shape(shape.name, shape.layers, shape.hidden, shape.heads, shape.seq,
                      shape.batch // 2, shape.vocab)
        cfg = model_config(shape, args.bf16, args.compile, args.arch)
        print(f"{shape.name}: out of memory, retrying with micro batch {shape.batch}", flush=True)


def arch_of(impl: str, megatron_lite_arch: str) -> str:
    reference = "llama" if megatron_lite_arch == "llama" else "gpt_neox"
    return {"megatron_lite": megatron_lite_arch, "transformers": reference}.get(impl, "nanogpt")


def _record(shape: Shape, cfg: Config, impl: str, m: Measured, args: argparse.Namespace,
            device: torch.device) -> dict[str, Any]:
    ms = statistics.median(m.ms)
    tokens_per_s = shape.batch * shape.seq * 1000.0 / ms
    record: dict[str, Any] = {
        "shape": shape.name, "impl": impl, "tokens_per_s": tokens_per_s, "ms_per_step": ms,
        "peak_mem_mb": m.peak_mem_mb, "ms_per_step_repeats": m.ms,
        "layers": shape.layers, "hidden": shape.hidden, "heads": shape.heads, "seq": shape.seq,
        "micro_batch": shape.batch, "vocab": shape.vocab,
        "precision": cfg.training.precision,
    }
    if device.type == "cuda":
        record["mfu"] = flops_per_token(cfg.model) * tokens_per_s / (args.peak_tflops * 1e12)
    return record


# ---- report -----------------------------------------------------------------------------------

def add_ratios(records: list[dict[str, Any]]) -> None:
    """``vs_megatron_lite``: for each repeat, the record's ms/step over ours in the same repeat
    round (the rounds alternate between implementations, so a pair is measured minutes apart at
    most; this machine's speed drifts more than that), and their median."""
    for r in records:
        ours = next((o for o in records if o["shape"] == r["shape"] and o["impl"] == "megatron_lite"), None)
        if ours is None or r is ours:
            continue
        per_repeat = [a / b for a, b in zip(r["ms_per_step_repeats"], ours["ms_per_step_repeats"])]
        r["vs_megatron_lite_per_repeat"] = per_repeat
        r["vs_megatron_lite"] = statistics.median(per_repeat)


def print_table(records: list[dict[str, Any]]) -> None:
    mfu = any("mfu" in r for r in records)
    print(f"{'shape':<12}{'impl':<16}{'ms/step':>10}{'tokens/s':>12}{'peak MB':>10}"
          + (f"{'MFU':>8}" if mfu else "") + f"{'ours vs it':>12}")
    for r in records:
        ratio = f"{r['vs_megatron_lite']:.2f}x" if "vs_megatron_lite" in r else ""
        line = f"{r['shape']:<12}{r['impl']:<16}{r['ms_per_step']:>10.1f}{r['tokens_per_s']:>12.0f}"
        line += f"{r['peak_mem_mb']:>10.0f}" + (f"{100 * r['mfu']:>7.1f}%" if mfu else "")
        print(line + f"{ratio:>12}")
    print("ms/step: median of the repeats; ours vs it: median over repeat rounds of its ms/step over "
          "megatron_lite's in the same round (above 1 = megatron_lite is faster)")


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"host": platform.node(), "cpu_count": os.cpu_count(),
                            "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                            "python": platform.python_version(),
                            "date": datetime.datetime.now().isoformat(timespec="seconds")}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:
        pass
    info["load_avg_start"] = list(os.getloadavg())
    return info


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", choices=("cpu", "gpu"), default=None,
                        help="cpu: fp32 nanoGPT CPU shape + 125M at context 256 (the default without a "
                             "GPU); gpu: bf16 125M/350M/1.3B at context 2048")
    parser.add_argument("--shapes", nargs="+", default=None, help="subset of the suite's shape names")
    parser.add_argument("--impls", nargs="+", choices=IMPLS, default=list(IMPLS))
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats (default 5 CPU, 3 GPU)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per repeat (default per shape)")
    parser.add_argument("--warmup", type=int, default=2, help="warmup steps (with --steps)")
    parser.add_argument("--micro_batch", type=int, default=None, help="override every shape's micro batch")
    parser.add_argument("--arch", choices=tuple(ARCHS), default="gpt_neox",
                        help="megatron_lite's architecture: gpt_neox (= transformers' GPTNeoX), llama "
                             "(= transformers' LlamaForCausalLM, which the transformers column then "
                             "runs) or nanogpt (= nanogpt_style's model)")
    parser.add_argument("--compile", action="store_true", help="torch.compile all three models")
    parser.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                        help="train in bf16 (ours: DeepSpeed bf16; the references: autocast); "
                             "default: on for the GPU suite, off for the CPU suite")
    parser.add_argument("--isolate", action="store_true",
                        help="CPU: each implementation in a process of its own, ours keeping freed host "
                             "memory as train.py's workers do (the references: glibc's defaults)")
    parser.add_argument("--reference-keep-freed-memory", action="store_true",
                        help="with --isolate: the references keep freed memory too (same allocator)")
    parser.add_argument("--peak_tflops", type=float, default=H100_BF16_DENSE_TFLOPS,
                        help="device peak for MFU (default: H100 SXM bf16 dense)")
    parser.add_argument("--out", default=None, help="write the records as JSON here")
    args = parser.parse_args(argv)
    if args.suite is None:
        args.suite = "gpu" if torch.cuda.is_available() else "cpu"
    if args.bf16 is None:
        args.bf16 = args.suite == "gpu"
    if args.repeats is None:
        args.repeats = 5 if args.suite == "cpu" else 3
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.suite == "gpu" and not torch.cuda.is_available():
        print("--suite gpu needs CUDA", file=sys.stderr)
        return 2
    if args.isolate and args.suite != "cpu":
        print("--isolate is for the CPU suite (the GPU suite already builds one at a time)", file=sys.stderr)
        return 2
    if args.reference_keep_freed_memory and not args.isolate:
        print("--reference-keep-freed-memory needs --isolate", file=sys.stderr)
        return 2
    device = torch.device("cuda" if args.suite == "gpu" else "cpu")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # as nanoGPT and DeepSpeed runs do
    shapes = CPU_SHAPES if args.suite == "cpu" else GPU_SHAPES
    if args.shapes:
        shapes = tuple(s for s in shapes if s.name in args.shapes)
    if args.micro_batch:
        shapes = tuple(Shape(s.name, s.layers, s.hidden, s.heads, s.seq, args.micro_batch, s.vocab)
                       for s in shapes)
    meta = machine()
    if not args.isolate:  # isolated workers import and set up their own
        _import_all(shapes[0], args, device)
    records = []
    for shape in shapes:
        records += run_shape(shape, args, device)
    meta["load_avg_end"] = list(os.getloadavg())
    add_ratios(records)
    print_table(records)
    print(f"load average (1/5/15 min): start {meta['load_avg_start']}, end {meta['load_avg_end']}")
    if args.isolate:
        print("isolated processes; keeping freed memory: "
              + ", ".join(r["impl"] for r in records if r["keep_freed_memory"] and r["shape"] == shapes[0].name))
    if args.out:
        with open(args.out, "w") as handle:
            json.dump({"meta": meta, "suite": args.suite, "repeats": args.repeats,
                       "isolate": args.isolate, "records": records}, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
