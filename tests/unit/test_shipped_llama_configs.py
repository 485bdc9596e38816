"""configs/llama2-7B.yml, llama3-8B.yml and mistral-7B.yml build Hugging Face's models exactly
(issue #18, item 6): the parameter counts of LlamaForCausalLM / MistralForCausalLM."""

from __future__ import annotations

from pathlib import Path

import pytest

from megatron_lite.config import load_config
from megatron_lite.config.model_size import count_parameters

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name, vocab, parameters, inner", [
    ("llama2-7B.yml", 32000, 6_738_415_616, 11008),
    ("llama3-8B.yml", 128256, 8_030_261_248, 14336),
    ("mistral-7B.yml", 32000, 7_241_732_096, 14336),
])
def test_shipped_llama_family_configs_are_the_hf_models(tmp_path, name, vocab, parameters, inner):
    # The tokenizer files are the user's: give the vocabulary they have.
    vocab_yml = tmp_path / "vocab.yml"
    vocab_yml.write_text(f"padded_vocab_size: {vocab}\nvocab_file: null\n")
    cfg = load_config([str(REPO / "configs" / name), str(vocab_yml)], world_size=8)
    assert cfg.model.mlp_inner_size == inner
    assert count_parameters(cfg.model) == parameters
