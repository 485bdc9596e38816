"""The three training steps ``train.py`` times, and what they train: shapes, model configs and
random token batches.

Each ``build_*`` takes a megatron_lite ``Config``, the batches and the device, and returns a
``step()`` that runs one optimizer step in that implementation's own idiom (see ``train.py``'s
docstring); ``_import_all`` does the one-time imports and process-group setup up front.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import nanogpt_style
import torch
import torch.nn.functional as F

from megatron_lite.config import Config, config_from_flat
from megatron_lite.config.derived import resolve
from megatron_lite.model.gpt import GPTModel

IMPLS = ("megatron_lite", "transformers", "nanogpt_style")
LR, MIN_LR, BETAS, EPS, WEIGHT_DECAY, GRAD_CLIP = 6e-4, 6e-5, (0.9, 0.95), 1e-8, 0.1, 1.0


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
# biases everywhere, untied head), Llama's (what transformers' LlamaForCausalLM builds: RMSNorm,
# SwiGLU, rotary over the whole head, no biases, untied head, grouped-query attention with half
# the heads as key/value heads) or nanoGPT's (what nanogpt_style builds: learned positions, no
# biases, tied head; configs/cpu_shakespeare.yml is this with an untied head).
ARCHS = {
    "gpt_neox": {"pos_emb": "rotary", "no_weight_tying": True},
    "llama": {"pos_emb": "rotary", "no_weight_tying": True, "norm": "rmsnorm", "rms_norm_epsilon": 1e-6,
              "activation": "swiglu", "use_bias_in_norms": False, "use_bias_in_attn_linear": False,
              "use_bias_in_mlp": False},
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
        **({"num_kv_heads": shape.heads // 2} if arch == "llama" else {}),
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
    from megatron_lite.launcher.worker import init_distributed
    from megatron_lite.training import steps
    from megatron_lite.training.engine import build_engine

    state = init_distributed(cfg)  # the group exists (_import_all): this builds our groups
    module = GPTModel(cfg.model, state, seed=cfg.training.seed)
    engine, _, schedule = build_engine(cfg, state, module, cfg.training.train_iters,
                                       on_gpu=device.type == "cuda")
    # The batches are dataset samples, through the real get_batch as in train.py.
    micro = steps.micro_batches(({"text": t} for t in cycle(batches)), None, engine.device)
    return lambda: steps.train_step(engine, schedule, micro, state, pipelined=False)


def _xy(batches: list[torch.Tensor], device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Inputs and targets as the references' own loaders make them: contiguous, on the device
    (prepared once, so their steps carry no data work; ours runs the real ``get_batch``)."""
    pairs = [(t[:, :-1].contiguous().to(device), t[:, 1:].contiguous().to(device)) for t in batches]
    while True:
        yield from pairs


def _llama_model(m: Any) -> Any:
    """transformers' LlamaForCausalLM of the same shape as our llama-arch ``m`` (ModelConfig)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    hf = LlamaConfig(vocab_size=m.padded_vocab_size, hidden_size=m.hidden_size,
                     intermediate_size=m.mlp_inner_size, num_hidden_layers=m.num_layers,
                     num_attention_heads=m.num_attention_heads, num_key_value_heads=m.num_kv_heads,
                     max_position_embeddings=m.max_position_embeddings, rms_norm_eps=m.rms_norm_epsilon,
                     rope_theta=float(m.rotary_emb_base), tie_word_embeddings=False,
                     attention_bias=False, mlp_bias=False, use_cache=False)
    return LlamaForCausalLM._from_config(hf, attn_implementation="sdpa")


def _gpt_neox_model(m: Any) -> Any:
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    from megatron_lite.checkpoint.hf import hf_config_dict

    # GPTNeoX cannot express the nanoGPT architecture: transformers always builds GPT-NeoX's.
    neox = dataclasses.replace(m, pos_emb="rotary", no_weight_tying=True, use_bias_in_norms=True,
                               use_bias_in_attn_linear=True, use_bias_in_mlp=True)
    hf = GPTNeoXConfig(**hf_config_dict(neox, m.padded_vocab_size, None, None))
    hf.use_cache = False
    return GPTNeoXForCausalLM._from_config(hf, attn_implementation="sdpa")


def build_transformers(cfg: Config, batches: list[torch.Tensor], device: torch.device) -> Step:
    from transformers import get_cosine_schedule_with_warmup

    torch.manual_seed(cfg.training.seed)
    llama = cfg.model.activation == "swiglu"  # --arch llama: transformers' Llama, else its GPTNeoX
    model = (_llama_model(cfg.model) if llama else _gpt_neox_model(cfg.model)).to(device).train()
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


def _steps_for(shape: Shape, args: argparse.Namespace) -> tuple[int, int]:
    """(warmup steps, timed steps per repeat) for ``shape``."""
    return (args.warmup, args.steps) if args.steps else STEPS.get(shape.name, (3, 10))


def _import_all(shape: Shape, args: argparse.Namespace, device: torch.device) -> None:
    """Imports and the process group up front: one-time process costs would otherwise count
    in the memory of whichever implementation is built first."""
    import deepspeed  # noqa: F401
    import transformers  # noqa: F401

    from megatron_lite.launcher.worker import init_distributed

    if "megatron_lite" in args.impls:
        if not os.environ.get("MASTER_PORT"):
            os.environ["MASTER_PORT"] = _free_port()  # other runs may hold the default 29500
        init_distributed(model_config(shape, args.bf16, False, args.arch))
