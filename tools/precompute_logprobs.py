#!/usr/bin/env python
"""Write a reference model's per-token log-probabilities for the data of a DPO or KTO run, so
that the run trains without a second model in memory (GPT-NeoX's ``precompute_model_name``).

    python tools/precompute_logprobs.py -d configs dpo.yml --model checkpoints/sft [--device cuda]

For every dataset the run reads (``pos_``/``neg_`` pairs, or KTO documents; train, valid and
test), writes ``<data prefix>_<precompute_model_name>.bin/.idx``: float32, one value per token
of each document, the value at position i being log p(target i+1 | tokens 0..i) (the target is
the label where there is one, else the token; 0 at the last position and beyond seq_length),
GPT-NeoX's layout. The run then reads them when its config sets ``precompute_model_name``.
``--model``: a checkpoint (ours, any layout) or a Hugging Face directory, loaded on one process;
default the run's ``reference_load``, else its ``load``.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

import numpy as np
import torch

from megatron_lite.checkpoint.layout import CheckpointError
from megatron_lite.config import ConfigError, layout_world_size, load_config
from megatron_lite.data.indexed_dataset import (
    MMapIndexedDatasetBuilder,
    data_file_path,
    index_file_path,
)
from megatron_lite.data.unpacked import SPLITS, TOKEN_FIELDS, Source, split_sources

_LABEL_OF = {"text": "label", "pos": "pos_label", "neg": "neg_label"}


def document_logprobs(model: torch.nn.Module, tokens: list[np.ndarray], targets: list[np.ndarray],
                      window: int, device: str) -> list[np.ndarray]:
    """Per-document float32 arrays (module docstring) for one batch of documents."""
    cut = [t[:window].astype(np.int64) for t in tokens]
    length = max(len(t) for t in cut)
    batch = torch.zeros(len(cut), length, dtype=torch.long)  # right padding: causal, never attended
    for i, t in enumerate(cut):
        batch[i, : len(t)] = torch.from_numpy(t)
    target = torch.zeros_like(batch)
    for i, t in enumerate(targets):
        target[i, : min(len(t), window)] = torch.from_numpy(np.maximum(t[:window].astype(np.int64), 0))
    with torch.no_grad():
        logits = model(batch[:, :-1].to(device)).float()  # [n, L - 1, v]
        logp = torch.log_softmax(logits, -1).gather(-1, target[:, 1:, None].to(device)).squeeze(-1).cpu()
    out = []
    for i, t in enumerate(tokens):
        values = np.zeros(len(t), dtype=np.float32)
        n = len(cut[i]) - 1
        values[:n] = logp[i, :n].numpy()
        out.append(values)
    return out


def write_dataset(model: torch.nn.Module, tokens: Source, labels: Source | None, name: str, window: int,
                  batch_size: int, device: str) -> str:
    out = f"{tokens.prefix}_{name}"
    count = len(tokens.data.sizes)
    with MMapIndexedDatasetBuilder(data_file_path(out), np.float32) as builder:
        for start in range(0, count, batch_size):
            docs = [np.asarray(tokens.data.get(i)) for i in range(start, min(start + batch_size, count))]
            targets = docs if labels is None else [
                np.where(lab >= 0, lab, doc) for lab, doc in
                zip((np.asarray(labels.data.get(i)) for i in range(start, start + len(docs))), docs)]
            for values in document_logprobs(model, docs, targets, window, device):
                builder.add_item(values)
                builder.end_document()
        builder.finalize(index_file_path(out))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("configs", nargs="+", help="the run's YAML files")
    p.add_argument("-d", "--config_dir", default=None)
    p.add_argument("--model", default=None, help="reference checkpoint or Hugging Face directory")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    from megatron_lite import load_model

    try:
        cfg = load_config(args.configs, args.config_dir, world_size=layout_world_size(args.configs, args.config_dir))
        name = cfg.data.precompute_model_name
        source = args.model or cfg.post_training.reference_load or cfg.checkpoint.load
        if not name or not source:
            raise ConfigError("set precompute_model_name in the config, and --model (or load)")
        model, _ = load_model(source, device=args.device)
        data = replace(cfg.data, precompute_model_name=None)  # read the data itself, not its outputs
        for split in SPLITS:
            for sources in split_sources(data, split):
                fields = {s.field: s for s in sources}
                for field in (f for f in TOKEN_FIELDS if f in fields):
                    label = fields.get(_LABEL_OF[field])
                    out = write_dataset(model, fields[field], label, name, cfg.model.seq_length + 1,
                                        args.batch_size, args.device)
                    print(f"wrote {out}.bin/.idx ({len(fields[field].data.sizes)} documents)")
    except (ConfigError, CheckpointError, FileNotFoundError, ValueError) as exc:
        print(f"precompute_logprobs.py: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
