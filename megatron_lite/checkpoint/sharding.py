"""How each parameter is split across tensor-parallel ranks: merge shards, cut shards.

One place knows the layout, and everything that changes it uses this module: loading a
checkpoint of any layout into one process, resharding, converting to and from Hugging Face,
and the tests that compare tp > 1 with tp = 1.
"""

from __future__ import annotations

import torch

# Column-parallel (split along output rows, dim 0) and row-parallel (split along inputs, dim 1).
_ROWS = ("query_key_value.weight", "query_key_value.bias", "dense_h_to_4h.weight",
         "dense_h_to_4h.bias", "word_embeddings.weight", "embed_out.weight")
_COLS = ("attention.dense.weight", "dense_4h_to_h.weight")
_GLU = ("dense_h_to_4h.weight", "dense_h_to_4h.bias", "dense_h_to_4h.lora_B.weight")
# LoRA factors (parallel/lora_layers.py) split like their layer's weight: a column-parallel layer's B
# by rows (GLU order included), a row-parallel layer's A by columns; the other one replicated.
_ROWS += ("query_key_value.lora_B.weight", "dense_h_to_4h.lora_B.weight")
_COLS += ("attention.dense.lora_A.weight", "dense_4h_to_h.lora_A.weight")


def _plain(name: str) -> str:
    """A name in a model with LoRA layers (peft's: ``<layer>.base_layer.weight``,
    ``<layer>.lora_B.default.weight``) as it reads without them (``<layer>.weight``,
    ``<layer>.lora_B.weight``, the names of peft's own adapter files)."""
    return name.replace(".base_layer.", ".").replace(".default.weight", ".weight")


def split_dim(name: str) -> int | None:
    """0 or 1 for tensor-parallel parameters, None for replicated ones (norms, row biases)."""
    name = _plain(name)
    if name.endswith(_ROWS):
        return 0
    if name.endswith(_COLS):
        return 1
    return None


def _glu_to_canonical(t: torch.Tensor, tp: int) -> torch.Tensor:
    # rank-major [v_0, g_0, v_1, g_1, ...] -> canonical [v_0, v_1, ..., g_0, g_1, ...]
    chunks = t.chunk(2 * tp, dim=0)
    return torch.cat(chunks[0::2] + chunks[1::2], dim=0)


def _glu_to_rank_major(t: torch.Tensor, tp: int) -> torch.Tensor:
    values, gates = t.chunk(2, dim=0)
    pairs = zip(values.chunk(tp, dim=0), gates.chunk(tp, dim=0))
    return torch.cat([c for pair in pairs for c in pair], dim=0)


def merge_shards(name: str, shards: list[torch.Tensor], glu: bool = False) -> torch.Tensor:
    """Full tensor from the tp ranks' shards (rank order)."""
    dim = split_dim(name)
    if dim is None or len(shards) == 1:
        return shards[0]
    full = torch.cat(shards, dim=dim)
    if glu and _plain(name).endswith(_GLU):
        full = _glu_to_canonical(full, len(shards))
    return full


def cut_shard(name: str, full: torch.Tensor, tp: int, rank: int, glu: bool = False) -> torch.Tensor:
    """This rank's shard of a full tensor."""
    dim = split_dim(name)
    if dim is None or tp == 1:
        return full.clone()
    if glu and _plain(name).endswith(_GLU):
        full = _glu_to_rank_major(full, tp)
    return full.chunk(tp, dim=dim)[rank].clone()
