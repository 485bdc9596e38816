#!/usr/bin/env python
"""Show what a megatron_lite checkpoint holds, or how two checkpoints differ.

    python tools/inspect_checkpoint.py checkpoints [--iteration N]
    python tools/inspect_checkpoint.py checkpoints ckpt_tp1          # differences

One checkpoint: iteration, consumed samples, layout (tp/pp), the model config essentials, a
table of parameters (full tp = 1 names, shapes, dtypes, L2 norms) and the total count. Two:
the config keys that differ, parameters found on one side only, shape differences and, per
parameter, the norm of the difference, with the largest absolute difference. Each path is a
``save``/``load`` directory or one ``global_step<N>`` directory; ``--iteration`` applies to both.
Any tensor/pipeline layout is merged first, so a checkpoint and its reshard compare equal.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Any

import torch

from megatron_lite.checkpoint.layout import (
    CheckpointError,
    CheckpointMeta,
    read_meta,
    read_step_config,
    resolve_step_dir,
)
from megatron_lite.checkpoint.weights import read_full_state_dict
from megatron_lite.config.derived import GLU_ACTIVATIONS
from megatron_lite.utils.cli import run_reporting_errors

ESSENTIALS = ("num_layers", "hidden_size", "num_attention_heads", "num_kv_heads", "mlp_inner_size",
              "seq_length", "max_position_embeddings", "pos_emb", "rotary_pct", "norm", "activation",
              "gpt_j_residual", "no_weight_tying", "padded_vocab_size", "tokenizer_type", "precision")
# Embedding and head rows past the vocabulary are padding, whose count depends on the tp size.
_VOCAB_ROWS = ("embedding.word_embeddings.weight", "lm_head.embed_out.weight")


@dataclass
class Checkpoint:
    step_dir: str
    meta: CheckpointMeta
    config: dict[str, Any]
    weights: dict[str, torch.Tensor]


def _model_order(name: str) -> tuple[int, int]:
    """Embedding, layers by number, final norm, head: pipeline layer files are read in
    directory order, not the model's (a stable sort keeps each layer's own order)."""
    sections = ("embedding.", "layers.", "final_layernorm.", "lm_head.")
    section = next((i for i, prefix in enumerate(sections) if name.startswith(prefix)), len(sections))
    layer = int(name.split(".")[1]) if section == 1 else 0
    return section, layer


def read_checkpoint(path: str, iteration: int | None = None) -> Checkpoint:
    """A checkpoint's metadata, flat config and merged (tp = 1) weights, in model order."""
    step = resolve_step_dir(path, iteration)
    meta, config = read_meta(step), read_step_config(step)
    weights = read_full_state_dict(step, glu=config.get("activation") in GLU_ACTIVATIONS)
    weights = {name: weights[name] for name in sorted(weights, key=_model_order)}
    return Checkpoint(step, meta, config, weights)


def _shape(t: torch.Tensor) -> str:
    return " x ".join(map(str, t.shape)) or "scalar"


def _dtype(t: torch.Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")


def _norm(t: torch.Tensor) -> float:
    return float(t.double().norm())


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    """Left-aligned text columns, numbers right-aligned (they start with a digit or sign)."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def fmt(row: tuple[str, ...]) -> str:
        cells = [c.rjust(w) if i and c[:1].lstrip("-").isdigit() else c.ljust(w)
                 for i, (c, w) in enumerate(zip(row, widths))]
        return "  ".join(cells).rstrip()

    return [fmt(header), *map(fmt, rows)]


def summary_lines(ck: Checkpoint) -> list[str]:
    """Where it is, iteration, consumed samples, layout and the model config essentials."""
    m = ck.meta
    state = ("weights only (a resumed run starts a fresh optimizer)" if m.weights_only
             else "full (weights, optimizer, LR schedule, RNG)")
    essentials = ", ".join(f"{k} {ck.config[k]}" for k in ESSENTIALS if ck.config.get(k) is not None)
    return [f"checkpoint        {ck.step_dir}",
            f"iteration         {m.iteration}",
            f"consumed samples  {m.consumed_train_samples}",
            f"layout            model_parallel_size {m.model_parallel_size}, pipe_parallel_size {m.pipe_parallel_size}",
            f"resume state      {state}",
            f"vocabulary        {m.vocab_size if m.vocab_size is not None else 'unknown'}",
            f"model             {essentials}"]


def parameter_lines(ck: Checkpoint) -> list[str]:
    """The parameter table and the total count."""
    rows = [(name, _shape(t), _dtype(t), f"{_norm(t):.6g}") for name, t in ck.weights.items()]
    total = sum(t.numel() for t in ck.weights.values())
    return [*_table(("parameter", "shape", "dtype", "L2 norm"), rows),
            f"total: {total:,} parameters in {len(ck.weights)} tensors"]


def config_diff(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    return [f"  {k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def _comparable(name: str, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Both tensors cut to a common shape where that is meaningful (vocabulary padding), else None."""
    if x.shape == y.shape:
        return x, y
    if name in _VOCAB_ROWS and x.shape[1:] == y.shape[1:]:
        rows = min(x.shape[0], y.shape[0])
        return x[:rows], y[:rows]
    return None


def weight_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> list[str]:
    """Parameters on one side only, shape differences, and per parameter the norm and largest
    absolute value of the difference, with a summary line."""
    only = [f"  only in A: {n}" for n in sorted(set(a) - set(b))] + [f"  only in B: {n}" for n in sorted(set(b) - set(a))]
    shapes, rows, changed, worst = [], [], 0, (0.0, "")
    for name in (n for n in a if n in b):
        pair = _comparable(name, a[name], b[name])
        if a[name].shape != b[name].shape:
            how = f"first {pair[0].shape[0]} rows compared (padding)" if pair else "not compared"
            shapes.append(f"  {name}: {_shape(a[name])} vs {_shape(b[name])}, {how}")
        if pair is None:
            continue
        delta = pair[0].double() - pair[1].double()
        max_abs = float(delta.abs().max()) if delta.numel() else 0.0
        changed += max_abs > 0
        worst = max(worst, (max_abs, name))
        rows.append((name, f"{float(delta.norm()):.6g}", f"{max_abs:.6g}"))
    where = f" ({worst[1]})" if worst[0] > 0 else ""
    return ["parameters on one side only:", *(only or ["  none"]),
            "shape differences:", *(shapes or ["  none"]),
            *_table(("parameter", "||A - B||", "max |A - B|"), rows),
            f"max abs diff: {worst[0]:.6g}{where}; {changed} of {len(rows)} compared parameters differ"]


def diff_lines(a: Checkpoint, b: Checkpoint) -> list[str]:
    lines = [f"A: {a.step_dir}", f"B: {b.step_dir}"]
    meta = [f"  {k}: {getattr(a.meta, k)!r} -> {getattr(b.meta, k)!r}" for k in a.meta.__dict__
            if getattr(a.meta, k) != getattr(b.meta, k)]
    lines += ["metadata differences:", *(meta or ["  none"])]
    lines += ["config differences:", *(config_diff(a.config, b.config) or ["  none"])]
    return [*lines, *weight_diff(a.weights, b.weights)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="inspect_checkpoint.py", description=__doc__.split("\n\n")[0],
                                epilog="example: python tools/inspect_checkpoint.py checkpoints ckpt_tp1")
    p.add_argument("checkpoint", help="checkpoint directory (save/load) or one global_step<N> dir")
    p.add_argument("other", nargs="?", help="a second checkpoint: show the differences")
    p.add_argument("--iteration", type=int, default=None, help="step to read (default: latest)")
    args = p.parse_intermixed_args(argv)  # `A --iteration N B` too
    ok, pair = run_reporting_errors(
        "inspect_checkpoint.py", "the checkpoint's config",
        lambda: (read_checkpoint(args.checkpoint, args.iteration),
                 read_checkpoint(args.other, args.iteration) if args.other else None),
        (CheckpointError,))
    if not ok:
        return 1
    first, second = pair
    if second is None:
        print("\n".join(summary_lines(first) + [""] + parameter_lines(first)))
    else:
        print("\n".join(diff_lines(first, second)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
