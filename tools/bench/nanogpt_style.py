"""A minimal nanoGPT-style GPT and training loop: the reference our benchmarks run beside.

Written for megatron_lite's benchmarks (not copied from nanoGPT), with nanoGPT's choices:
pre-LayerNorm blocks without biases, learned positions, GELU MLP of width 4h, tied
embedding/head, ``scaled_dot_product_attention``, AdamW with decay on 2-D weights only,
warmup + cosine LR, batches of random windows of the token stream.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class NanoConfig:
    vocab_size: int
    block_size: int = 64
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    bias: bool = False


class Block(nn.Module):
    def __init__(self, cfg: NanoConfig) -> None:
        super().__init__()
        self.n_head = cfg.n_head
        self.ln_1 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias)
        self.c_proj2 = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(c, dim=2)
        q, k, v = (z.view(b, t, self.n_head, c // self.n_head).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.c_proj(y.transpose(1, 2).contiguous().view(b, t, c))
        return x + self.c_proj2(F.gelu(self.c_fc(self.ln_2(x))))


class NanoGPT(nn.Module):
    def __init__(self, cfg: NanoConfig) -> None:
        super().__init__()
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # tied
        self.apply(self._init)
        for name, p in self.named_parameters():
            if name.endswith(("c_proj.weight", "c_proj2.weight")):
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, 0.0, 0.02)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        pos = torch.arange(idx.shape[1], device=idx.device)
        x = self.wte(idx) + self.wpe(pos)
        for block in self.blocks:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))
        if targets is None:
            return logits, None
        return logits, F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1))


def make_optimizer(model: nn.Module, lr: float, weight_decay: float, betas: tuple[float, float],
                   eps: float = 1e-8) -> torch.optim.AdamW:
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # nanoGPT's choice: the fused kernel on CUDA, torch's default elsewhere.
    fused = True if next(model.parameters()).device.type == "cuda" else None
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=fused)


def train_step(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
               grad_clip: float, autocast_dtype: torch.dtype | None = None) -> torch.Tensor:
    """One nanoGPT iteration: forward (under autocast for bf16), backward, clip, AdamW step.
    Returns the loss tensor without reading it (no host sync)."""
    with torch.autocast(x.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        _, loss = model(x, y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    opt.step()
    return loss.detach()


def cosine_lr(it: int, lr: float, min_lr: float, warmup: int, decay_iters: int) -> float:
    if it < warmup:
        return lr * (it + 1) / (warmup + 1)
    if it > decay_iters:
        return min_lr
    ratio = (it - warmup) / (decay_iters - warmup)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (lr - min_lr)


def random_batch(data: np.ndarray, block: int, batch: int, gen: np.random.Generator):
    starts = gen.integers(0, len(data) - block - 1, size=batch)
    x = torch.from_numpy(np.stack([data[s : s + block] for s in starts]).astype(np.int64))
    y = torch.from_numpy(np.stack([data[s + 1 : s + 1 + block] for s in starts]).astype(np.int64))
    return x, y


@torch.no_grad()
def estimate_loss(model: nn.Module, data: np.ndarray, block: int, batch: int, iters: int, seed: int) -> float:
    model.eval()
    gen = np.random.default_rng(seed)
    losses = [model(*random_batch(data, block, batch, gen))[1].item() for _ in range(iters)]
    model.train()
    return float(np.mean(losses))


def train(train_data: np.ndarray, val_data: np.ndarray, cfg: NanoConfig, *, iters: int = 2000,
          batch: int = 12, lr: float = 1e-3, min_lr: float = 1e-4, warmup: int = 100,
          weight_decay: float = 0.1, betas=(0.9, 0.99), grad_clip: float = 1.0,
          eval_iters: int = 200, seed: int = 1337) -> dict[str, float]:
    """nanoGPT's loop; returns final validation loss and wall seconds of the training loop."""
    torch.manual_seed(seed)
    model = NanoGPT(cfg)
    opt = make_optimizer(model, lr, weight_decay, betas)
    gen = np.random.default_rng(seed)
    start = time.perf_counter()
    for it in range(iters):
        for group in opt.param_groups:
            group["lr"] = cosine_lr(it, lr, min_lr, warmup, iters)
        x, y = random_batch(train_data, cfg.block_size, batch, gen)
        train_step(model, opt, x, y, grad_clip)
    seconds = time.perf_counter() - start
    val = estimate_loss(model, val_data, cfg.block_size, batch, eval_iters, seed + 1)
    return {"val_loss": val, "train_seconds": seconds, "ms_per_iter": 1000 * seconds / iters}
