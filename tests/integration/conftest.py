"""Fixtures shared by the integration tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from megatron_lite.data.indexed_dataset import (
    MMapIndexedDatasetBuilder,
    data_file_path,
    index_file_path,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def hf_checkpoint(tmp_path_factory) -> dict:
    """A random-init GPTNeoX with a trained tokenizers JSON, converted to our layout (tp 1)."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    root = tmp_path_factory.mktemp("hf")
    tok = ByteLevelBPETokenizer()
    text = ["the model reads a token and then predicts the next one"] * 40
    tok.train_from_iterator(text, vocab_size=300, special_tokens=["<|endoftext|>", "<|padding|>"])
    torch.manual_seed(0)
    cfg = GPTNeoXConfig(vocab_size=tok.get_vocab_size(), hidden_size=64, num_hidden_layers=2,
                        num_attention_heads=4, intermediate_size=256, max_position_embeddings=64,
                        use_parallel_residual=True, tie_word_embeddings=False,
                        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.25})
    hf_dir = root / "hf"
    GPTNeoXForCausalLM(cfg).save_pretrained(hf_dir)
    tok.save(str(hf_dir / "tokenizer.json"))
    ckpt = root / "ckpt"
    subprocess.run([sys.executable, str(REPO / "tools/convert_from_hf.py"), "--input_dir", str(hf_dir),
                    "--output_dir", str(ckpt)], check=True, capture_output=True, timeout=120)
    return {"hf": hf_dir, "ckpt": ckpt, "root": root}


@pytest.fixture(scope="module")
def data_prefix(tmp_path_factory) -> str:
    """A small byte-level corpus: 60 'documents' of English-like text."""
    root = tmp_path_factory.mktemp("data")
    prefix = str(root / "corpus_text_document")
    rng = np.random.default_rng(0)
    words = [w.encode() for w in "the model reads a token and then predicts the next one well".split()]
    with MMapIndexedDatasetBuilder(data_file_path(prefix), np.uint16) as builder:
        for _ in range(60):
            text = b" ".join(words[i] for i in rng.integers(0, len(words), size=rng.integers(20, 80)))
            builder.add_item(np.frombuffer(text, dtype=np.uint8).astype(np.uint16) + 1)
            builder.end_document()
        builder.finalize(index_file_path(prefix))
    return prefix
