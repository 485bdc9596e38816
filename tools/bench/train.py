#!/usr/bin/env python
"""Training-step throughput: megatron_lite vs transformers GPTNeoX vs a nanoGPT-style loop.

    python tools/bench/train.py                      # CPU suite (under 5 minutes on 2 cores)
    python tools/bench/train.py --suite gpu --out gpu.json   # bf16 on one GPU, with MFU
    python tools/bench/train.py --isolate [--bf16]           # CPU, each in its own process

All three train the same shape on the same random tokens (fixed seed) with the same optimizer
settings (AdamW lr 6e-4, betas 0.9/0.95, eps 1e-8, weight decay 0.1 on matrices, gradient
clipping 1.0), each in its own idiom:

- ``megatron_lite``: our real training step: ``GPTModel`` in a DeepSpeed engine built by
  ``trainer.build_engine`` (our parameter groups, LR schedule and clipping) and stepped by
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
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import dataclasses
import datetime
import gc
import json
import multiprocessing
import os
import platform
import socket
import statistics
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import nanogpt_style  # noqa: E402

from megatron_lite.config import Config, config_from_flat  # noqa: E402
from megatron_lite.config.derived import resolve  # noqa: E402
from megatron_lite.model.gpt import GPTModel, flops_per_token  # noqa: E402
from megatron_lite.utils.allocator import keep_freed_memory  # noqa: E402

IMPLS = ("megatron_lite", "transformers", "nanogpt_style")
LR, MIN_LR, BETAS, EPS, WEIGHT_DECAY, GRAD_CLIP = 6e-4, 6e-5, (0.9, 0.95), 1e-8, 0.1, 1.0
H100_BF16_DENSE_TFLOPS = 989.0


@dataclass(frozen=True)
class Shape:
    name: str
    layers: int
    hidden: int
    heads: int
    seq: int
    batch: int
    vocab: int


# nanoGPT's shakespeare-char CPU config (its vocabulary is 65 characters) and GPT-NeoX's 125M
# at a CPU-sized context; the GPU shapes are GPT-NeoX's configs at context 2048 with a micro
# batch that fills an 80 GB H100 (halved automatically on out-of-memory).
CPU_SHAPES = (Shape("nanogpt_cpu", 4, 128, 4, 64, 12, 65), Shape("125M", 12, 768, 12, 256, 1, 50304))
GPU_SHAPES = (Shape("125M", 12, 768, 12, 2048, 32, 50304), Shape("350M", 24, 1024, 16, 2048, 16, 50304),
              Shape("1.3B", 24, 2048, 16, 2048, 8, 50304))
# (warmup steps, timed steps per repeat) by shape; CPU figures keep the suite under 5 minutes
# (a 125M step takes seconds on 2 cores; its first two steps still allocate optimizer state).
STEPS = {"nanogpt_cpu": (5, 20), "125M": (2, 2)}


# megatron_lite's architecture options: GPT-NeoX's (what transformers' GPTNeoX builds: rotary,
# biases everywhere, untied head) or nanoGPT's (what nanogpt_style builds: learned positions,
# no biases, tied head; configs/cpu_shakespeare.yml is this with an untied head).
ARCHS = {
    "gpt_neox": {"pos_emb": "rotary", "no_weight_tying": True},
    "nanogpt": {"pos_emb": "learned", "no_weight_tying": False, "use_bias_in_norms": False,
                "use_bias_in_attn_linear": False, "use_bias_in_mlp": False,
                "init_method": "normal", "output_layer_init_method": "scaled_normal"},
}


def model_config(shape: Shape, bf16: bool, compile_model: bool, arch: str = "gpt_neox") -> Config:
    """megatron_lite's config for ``shape`` in architecture ``arch`` (LayerNorm, GELU MLP of
    width 4h, sequential residual), our AdamW settings, no dropout."""
    flat: dict[str, Any] = {
        "pipe_parallel_size": 0, "model_parallel_size": 1, "num_layers": shape.layers,
        "hidden_size": shape.hidden, "num_attention_heads": shape.heads, "seq_length": shape.seq,
        "max_position_embeddings": shape.seq, "padded_vocab_size": shape.vocab,
        "norm": "layernorm", "gpt_j_residual": False, **ARCHS[arch],
        "hidden_dropout": 0.0, "attention_dropout": 0.0,
        "optimizer": {"type": "AdamW", "params": {"lr": LR, "betas": list(BETAS), "eps": EPS}},
        "min_lr": MIN_LR, "weight_decay": WEIGHT_DECAY, "gradient_clipping": GRAD_CLIP,
        "zero_optimization": {"stage": 0}, "train_micro_batch_size_per_gpu": shape.batch,
        "gradient_accumulation_steps": 1, "train_iters": 100000, "lr_decay_style": "cosine",
        "warmup": 0.01, "compile": compile_model, "steps_per_print": 10**9,
    }
    if bf16:
        flat["bf16"] = {"enabled": True}
    return resolve(config_from_flat(flat), 1)


def random_batches(shape: Shape, count: int, seed: int = 1234) -> list[torch.Tensor]:
    """``count`` batches of token windows [b, s + 1] (inputs are [:, :-1], targets [:, 1:])."""
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(shape.vocab, (shape.batch, shape.seq + 1), generator=gen) for _ in range(count)]


def cycle(batches: list[torch.Tensor]) -> Iterator[torch.Tensor]:
    while True:
        yield from batches


# ---- the three implementations: each returns a step() that runs one optimizer step ---------

Step = Callable[[], Any]


def _free_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return str(sock.getsockname()[1])


def build_megatron_lite(cfg: Config, batches: list[torch.Tensor], device: torch.device) -> Step:
    from megatron_lite.training import steps
    from megatron_lite.training.trainer import build_engine
    from megatron_lite.utils.distributed import init_distributed

    state = init_distributed(cfg)  # the group exists (_import_all): this builds our groups
    module = GPTModel(cfg.model, state, seed=cfg.training.seed)
    engine, _, lr_scheduler = build_engine(cfg, state, module, cfg.training.train_iters,
                                           on_gpu=device.type == "cuda")
    # What steps.train_step reads from the Trainer; the batches are dataset samples.
    trainer = SimpleNamespace(engine=engine, lr_scheduler=lr_scheduler, state=state,
                              pipelined=False, tokenizer=None,
                              train_iter=({"text": t} for t in cycle(batches)))
    return lambda: steps.train_step(trainer)


def _xy(batches: list[torch.Tensor], device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Inputs and targets as the references' own loaders make them: contiguous, on the device
    (prepared once, so their steps carry no data work; ours runs the real ``get_batch``)."""
    pairs = [(t[:, :-1].contiguous().to(device), t[:, 1:].contiguous().to(device)) for t in batches]
    while True:
        yield from pairs


def build_transformers(cfg: Config, batches: list[torch.Tensor], device: torch.device) -> Step:
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, get_cosine_schedule_with_warmup

    from megatron_lite.model.hf_interop import hf_config_dict

    # GPTNeoX cannot express the nanoGPT architecture: transformers always builds GPT-NeoX's.
    neox = dataclasses.replace(cfg.model, pos_emb="rotary", no_weight_tying=True, use_bias_in_norms=True,
                               use_bias_in_attn_linear=True, use_bias_in_mlp=True)
    hf = GPTNeoXConfig(**hf_config_dict(neox, cfg.model.padded_vocab_size, None, None))
    hf.use_cache = False
    torch.manual_seed(cfg.training.seed)
    model = GPTNeoXForCausalLM._from_config(hf, attn_implementation="sdpa").to(device).train()
    if cfg.training.compile:
        model.compile()
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    # fused=True: what Trainer uses by default (optim="adamw_torch_fused" with torch >= 2.8),
    # on the CPU as on a GPU.
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": WEIGHT_DECAY},
                             {"params": no_decay, "weight_decay": 0.0}], lr=LR, betas=BETAS, eps=EPS,
                            fused=True)
    sched = get_cosine_schedule_with_warmup(opt, 1000, cfg.training.train_iters)
    data, dtype = _xy(batches, device), _autocast_dtype(cfg)

    def step() -> torch.Tensor:
        x, y = next(data)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            logits = model(input_ids=x).logits
        # Same tokens and loss as the others (HF's labels= path would drop the last position).
        loss = F.cross_entropy(logits.float().view(-1, logits.shape[-1]), y.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    return step


def build_nanogpt(cfg: Config, batches: list[torch.Tensor], device: torch.device) -> Step:
    m = cfg.model
    nano_cfg = nanogpt_style.NanoConfig(vocab_size=m.padded_vocab_size, block_size=m.seq_length,
                                        n_layer=m.num_layers, n_head=m.num_attention_heads,
                                        n_embd=m.hidden_size)
    torch.manual_seed(cfg.training.seed)
    model = nanogpt_style.NanoGPT(nano_cfg).to(device)
    if cfg.training.compile:
        model.compile()
    opt = nanogpt_style.make_optimizer(model, LR, WEIGHT_DECAY, BETAS, EPS)
    data, dtype, it = _xy(batches, device), _autocast_dtype(cfg), iter(range(10**9))

    def step() -> torch.Tensor:
        lr = nanogpt_style.cosine_lr(next(it), LR, MIN_LR, 1000, cfg.training.train_iters)
        for group in opt.param_groups:
            group["lr"] = lr
        x, y = next(data)
        return nanogpt_style.train_step(model, opt, x, y, GRAD_CLIP, dtype)

    return step


BUILDERS = {"megatron_lite": build_megatron_lite, "transformers": build_transformers,
            "nanogpt_style": build_nanogpt}


def _autocast_dtype(cfg: Config) -> torch.dtype | None:
    return torch.bfloat16 if cfg.training.precision == "bfloat16" else None


# ---- measurement ------------------------------------------------------------------------------

def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class PeakRSS:
    """Peak resident set growth (MB) while the block runs, sampled every millisecond."""

    def __enter__(self) -> PeakRSS:
        try:  # hand freed heap back first, so growth is not hidden by reuse of old pages
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except OSError:
            pass
        self.base = self.peak = _rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.001):
            self.peak = max(self.peak, _rss_mb())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_mb())

    @property
    def growth_mb(self) -> float:
        return self.peak - self.base


def time_steps(step: Step, count: int, device: torch.device) -> float:
    """Milliseconds per step over ``count`` steps (the device drained before and after)."""
    _sync(device)
    start = time.perf_counter()
    for _ in range(count):
        loss = step()
    _sync(device)
    if isinstance(loss, torch.Tensor) and not torch.isfinite(loss):
        raise RuntimeError("non-finite loss")
    return 1000.0 * (time.perf_counter() - start) / count


@dataclass
class Measured:
    ms: list[float] = field(default_factory=list)
    peak_mem_mb: float = 0.0


def _warm(impl: str, cfg: Config, batches: list[torch.Tensor], device: torch.device,
          warmup: int) -> tuple[Step, float]:
    """Build ``impl`` and run its warmup steps; returns the step and its peak memory (MB)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        step = BUILDERS[impl](cfg, batches, device)
        time_steps(step, warmup, device)
        return step, torch.cuda.max_memory_allocated() / 2**20
    with PeakRSS() as rss:
        step = BUILDERS[impl](cfg, batches, device)
        time_steps(step, warmup, device)
    return step, rss.growth_mb


def measure_resident(cfg: Config, batches: list[torch.Tensor], impls: tuple[str, ...], warmup: int,
                     steps: int, repeats: int, device: torch.device) -> dict[str, Measured]:
    """CPU: build all implementations once, then alternate timed repeats between them."""
    results, step_fns = {impl: Measured() for impl in impls}, {}
    for impl in impls:
        step_fns[impl], results[impl].peak_mem_mb = _warm(impl, cfg, batches, device, warmup)
    for r in range(repeats):
        for impl in impls[r % len(impls):] + impls[: r % len(impls)]:
            results[impl].ms.append(time_steps(step_fns[impl], steps, device))
    return results


def measure_rebuilding(cfg: Config, batches: list[torch.Tensor], impls: tuple[str, ...], warmup: int,
                       steps: int, repeats: int, device: torch.device) -> dict[str, Measured]:
    """GPU: one implementation in memory at a time (three 1.3B models with optimizer state
    would not fit together); each repeat rebuilds, warms up and times each in turn."""
    results = {impl: Measured() for impl in impls}
    for r in range(repeats):
        for impl in impls[r % len(impls):] + impls[: r % len(impls)]:
            step, peak = _warm(impl, cfg, batches, device, warmup)
            results[impl].ms.append(time_steps(step, steps, device))
            results[impl].peak_mem_mb = max(results[impl].peak_mem_mb, peak,
                                            torch.cuda.max_memory_allocated() / 2**20)
            del step
            gc.collect()
            torch.cuda.empty_cache()
    return results


def _keeps_freed_memory(impl: str, args: argparse.Namespace) -> bool:
    """Whether ``impl``'s isolated process keeps freed memory: ours does, as train.py's CPU
    workers do; the references only with ``--reference-keep-freed-memory``."""
    return impl == "megatron_lite" or args.reference_keep_freed_memory


def _isolated_worker(impl: str, shape: Shape, args: argparse.Namespace, conn: Any) -> None:
    """One implementation in a process of its own: build and warm up, report the memory, then
    time as many steps as each request asks for until told to stop (None)."""
    try:
        if _keeps_freed_memory(impl, args):
            keep_freed_memory()
        device = torch.device("cpu")
        _import_all(shape, argparse.Namespace(**{**vars(args), "impls": [impl]}), device)
        warmup, steps = _steps_for(shape, args)
        cfg = model_config(shape, args.bf16, args.compile, args.arch)
        step, peak = _warm(impl, cfg, random_batches(shape, max(steps, 4)), device, warmup)
        conn.send(("ok", peak))
        while (count := conn.recv()) is not None:
            conn.send(("ok", time_steps(step, count, device)))
    except BaseException:  # noqa: BLE001 - the parent reports it with the worker's traceback
        conn.send(("error", traceback.format_exc()))
    conn.close()
    os._exit(0)  # skip process-group teardown (see tests/distributed/spawn.py)


def _reply(impl: str, conn: Any) -> Any:
    try:
        status, value = conn.recv()
    except EOFError:
        raise RuntimeError(f"{impl} worker exited without replying (killed, e.g. out of memory?)") from None
    if status != "ok":
        raise RuntimeError(f"{impl} worker failed:\n{value}")
    return value


def measure_isolated(shape: Shape, args: argparse.Namespace, impls: tuple[str, ...],
                     steps: int, repeats: int) -> dict[str, Measured]:
    """CPU, ``--isolate``: each implementation in a process of its own, set up as its users'
    would be (our train.py keeps freed host memory; see ``_keeps_freed_memory``). They are
    built one after another, then the timed repeats alternate between them as in
    ``measure_resident``; a process waits, idle, while another runs."""
    ctx = multiprocessing.get_context("spawn")
    results, workers = {impl: Measured() for impl in impls}, {}
    try:
        for impl in impls:
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_isolated_worker, args=(impl, shape, args, child), daemon=True)
            proc.start()
            workers[impl] = (proc, parent)
            results[impl].peak_mem_mb = _reply(impl, parent)
        for r in range(repeats):
            for impl in impls[r % len(impls):] + impls[: r % len(impls)]:
                workers[impl][1].send(steps)
                results[impl].ms.append(_reply(impl, workers[impl][1]))
    finally:
        for proc, conn in workers.values():
            with contextlib.suppress(OSError):
                conn.send(None)
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
    return results


def _steps_for(shape: Shape, args: argparse.Namespace) -> tuple[int, int]:
    """(warmup steps, timed steps per repeat) for ``shape``."""
    return (args.warmup, args.steps) if args.steps else STEPS.get(shape.name, (3, 10))


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
    return {"megatron_lite": megatron_lite_arch, "transformers": "gpt_neox"}.get(impl, "nanogpt")


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


def _import_all(shape: Shape, args: argparse.Namespace, device: torch.device) -> None:
    """Imports and the process group up front: one-time process costs would otherwise count
    in the memory of whichever implementation is built first."""
    import deepspeed  # noqa: F401
    import transformers  # noqa: F401

    from megatron_lite.utils.distributed import init_distributed

    if "megatron_lite" in args.impls:
        if not os.environ.get("MASTER_PORT"):
            os.environ["MASTER_PORT"] = _free_port()  # other runs may hold the default 29500
        init_distributed(model_config(shape, args.bf16, False, args.arch))


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
                        help="megatron_lite's architecture: gpt_neox (= transformers' model) or "
                             "nanogpt (= nanogpt_style's model)")
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
