"""Sliding-window attention (GPT-NeoX's sliding_window_width) and rotary scaling (rope_scaling,
transformers' linear / llama3) in the model and the config: which positions a token sees, the
document mask combined with the window, KV-cache decoding, the frequencies transformers computes."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import yaml

from megatron_lite.config import ConfigError, config_from_flat, load_config
from megatron_lite.config.derived import resolve
from megatron_lite.data.loaders import document_attention_mask
from megatron_lite.model.gpt import GPTModel
from megatron_lite.model.positional import RotaryEmbedding

WINDOW = 3


def model_cfg(**overrides):
    flat = {"num_layers": 2, "hidden_size": 32, "num_attention_heads": 4, "seq_length": 24,
            "padded_vocab_size": 64, "make_vocab_size_divisible_by": 32, "pos_emb": "rotary",
            "sliding_window_width": WINDOW, **overrides}
    return resolve(config_from_flat(flat), 1).model


def twin_without_window(model: GPTModel) -> GPTModel:
    """The same weights, attending to the whole context."""
    twin = GPTModel(dataclasses.replace(model.cfg, sliding_window_width=None)).eval()
    twin.load_state_dict(model.state_dict())
    return twin


def band(seq: int, width: int) -> torch.Tensor:
    """The textbook window: key j visible to query i iff 0 <= i - j <= width. [1, 1, s, s]"""
    distance = torch.arange(seq).view(-1, 1) - torch.arange(seq).view(1, -1)
    return ((distance >= 0) & (distance <= width)).view(1, 1, seq, seq)


def tokens(seq: int = 20, batch: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randint(1, 64, (batch, seq), generator=torch.Generator().manual_seed(seed))


def test_a_token_sees_itself_and_width_tokens_before():
    """One layer: a token's logits depend on exactly the tokens 0..WINDOW positions back."""
    model = GPTModel(model_cfg(num_layers=1), seed=3).eval()
    x = tokens(batch=1)
    changed = x.clone()
    changed[0, 5] = (changed[0, 5] + 11) % 64
    with torch.no_grad():
        a, b = model(x), model(changed)
    same = [(a[0, i] == b[0, i]).all().item() for i in range(x.shape[1])]
    assert same == [i < 5 or i > 5 + WINDOW for i in range(x.shape[1])]


def test_window_is_a_banded_causal_mask_and_matters():
    model = GPTModel(model_cfg(), seed=4).eval()
    twin = twin_without_window(model)
    x = tokens()
    with torch.no_grad():
        ours = model(x)
        torch.testing.assert_close(ours, twin(x, attention_mask=band(20, WINDOW)), rtol=1e-6, atol=1e-6)
        assert (ours - twin(x)).abs().max() > 1e-2  # the window changes the result
        short = model(x[:, : WINDOW + 1])  # no key ever outside the window: plain causal path
        torch.testing.assert_close(short, twin(x[:, : WINDOW + 1]), rtol=0, atol=0)


def test_window_combines_with_the_document_mask():
    """reset_attention_mask's document mask and the window: both restrictions hold."""
    model = GPTModel(model_cfg(), seed=5).eval()
    twin = twin_without_window(model)
    x = tokens()
    x[:, [6, 13]] = 0  # end-of-document tokens: three documents per row
    documents = document_attention_mask(x, eod_id=0)  # [b, 1, s, s]
    with torch.no_grad():
        torch.testing.assert_close(model(x, attention_mask=documents),
                                   twin(x, attention_mask=documents & band(20, WINDOW)), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("pos_emb", ["rotary", "alibi"])
def test_kv_cache_decoding_with_a_window_equals_the_full_forward(pos_emb):
    """Decoding reads only the window back from the cache; prefill, single steps and a chunk
    after cached tokens all give the full forward's logits."""
    model = GPTModel(model_cfg(pos_emb=pos_emb), seed=6).eval()
    x = tokens()
    with torch.no_grad():
        full = model(x)
        cache = model.new_kv_cache(batch_size=2, max_len=20)
        steps = [model(x[:, :6], cache=cache)]
        steps += [model(x[:, i : i + 1], cache=cache) for i in range(6, 15)]
        steps.append(model(x[:, 15:], cache=cache))
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=1e-5, atol=1e-5)


ROPE = {
    "linear": {"rope_type": "linear", "factor": 4.0},
    "llama3": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 32},
}


@pytest.mark.parametrize("kind", list(ROPE))
def test_scaled_frequencies_are_transformers_bit_for_bit(kind):
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    hf = LlamaConfig(hidden_size=256, num_attention_heads=2, max_position_embeddings=128,
                     rope_parameters={**ROPE[kind], "rope_theta": 500000.0})
    expected, attention_factor = ROPE_INIT_FUNCTIONS[kind](hf, "cpu")
    ours = RotaryEmbedding(128, 1.0, 500000, ROPE[kind])
    assert attention_factor == 1.0  # neither type scales cos/sin
    assert torch.equal(ours.inv_freq, expected)
    assert not torch.equal(ours.inv_freq, RotaryEmbedding(128, 1.0, 500000).inv_freq)


def test_rope_scaling_and_window_from_yaml_in_canonical_form(tmp_path):
    path = tmp_path / "run.yml"
    path.write_text(yaml.safe_dump({
        "num_layers": 2, "hidden_size": 32, "num_attention_heads": 4, "seq_length": 16,
        "train_micro_batch_size_per_gpu": 1, "train_iters": 1, "pos_emb": "rotary",
        "sliding-window-width": 7, "rope_scaling": {**ROPE["llama3"], "factor": 8}}))
    m = load_config([str(path)], world_size=1).model
    assert m.sliding_window_width == 7
    assert m.rope_scaling == {"type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                              "original_max_position_embeddings": 32}


@pytest.mark.parametrize("keys, message", [
    ({"rope_scaling": {"type": "yarn", "factor": 2.0}}, "type 'yarn' is not implemented (implemented: linear, llama3)"),
    ({"rope_scaling": {"type": "linear"}}, "type linear takes exactly factor"),
    ({"rope_scaling": {"type": "linear", "factor": -2}}, "rope_scaling.factor must be a finite number > 0"),
    ({"rope_scaling": {**ROPE["llama3"], "high_freq_factor": 1.0}}, "high_freq_factor must exceed low_freq_factor"),
    ({"rope_scaling": {"type": "linear", "factor": 2.0}, "pos_emb": "learned"}, "needs pos_emb: rotary"),
    ({"sliding_window_width": -1}, "sliding_window_width must be >= 0"),
])
def test_bad_values_are_config_errors(keys, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        model_cfg(**keys)
