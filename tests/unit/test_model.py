"""The model on one process: KV-cache decoding, causality, sizes, options, checkpointing."""

from __future__ import annotations

import pytest
import torch

from megatron_lite.config import config_from_flat
from megatron_lite.config.derived import resolve
from megatron_lite.model.gpt import GPTModel, count_parameters, flops_per_token
from megatron_lite.parallel.random import seed_everything

OPTIONS = {
    "rotary": {"pos_emb": "rotary", "rotary_pct": 0.5},
    "learned": {"pos_emb": "learned"},
    "sinusoidal": {"pos_emb": "sinusoidal"},
    "alibi": {"pos_emb": "alibi"},
    "none": {"pos_emb": "none"},
    "rmsnorm_swiglu": {"norm": "rmsnorm", "activation": "swiglu"},
    "geglu_gqa": {"activation": "geglu", "num_kv_heads": 2},
    "parallel_untied_nobias": {"gpt_j_residual": True, "no_weight_tying": True,
                               "use_bias_in_attn_linear": False, "use_bias_in_mlp": False,
                               "use_bias_in_norms": False},
    "relu_silu_inits": {"activation": "relu", "init_method": "small_init",
                        "output_layer_init_method": "wang_init"},
}


def model_cfg(**overrides):
    flat = {"num_layers": 3, "hidden_size": 64, "num_attention_heads": 4, "seq_length": 32,
            "padded_vocab_size": 96, "make_vocab_size_divisible_by": 32,
            "train_micro_batch_size_per_gpu": 1, "optimizer": {"params": {"lr": 1e-3}}, **overrides}
    return resolve(config_from_flat(flat), 1).model


@pytest.mark.parametrize("option", list(OPTIONS))
def test_kv_cache_decoding_equals_recomputation(option):
    model = GPTModel(model_cfg(**OPTIONS[option]), seed=1).eval()
    tokens = torch.randint(0, 96, (2, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = model(tokens)
        cache = model.new_kv_cache(batch_size=2, max_len=20)
        steps = [model(tokens[:, :12], cache=cache)]  # prefill
        steps += [model(tokens[:, i : i + 1], cache=cache) for i in range(12, 16)]  # one at a time
        steps.append(model(tokens[:, 16:], cache=cache))  # a chunk after the prefill
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("option", list(OPTIONS))
def test_future_tokens_never_change_earlier_logits(option):
    model = GPTModel(model_cfg(**OPTIONS[option]), seed=2).eval()
    tokens = torch.randint(0, 96, (1, 24), generator=torch.Generator().manual_seed(1))
    changed = tokens.clone()
    changed[0, 15:] = (changed[0, 15:] + 7) % 96
    with torch.no_grad():
        a, b = model(tokens), model(changed)
    torch.testing.assert_close(a[:, :15], b[:, :15], rtol=0, atol=0)
    assert not torch.allclose(a[:, 15:], b[:, 15:])


@pytest.mark.parametrize("option", list(OPTIONS))
def test_parameter_count_formula_matches_the_module(option):
    cfg = model_cfg(**OPTIONS[option])
    model = GPTModel(cfg, seed=0)
    assert count_parameters(cfg) == sum(p.numel() for p in model.parameters())


def test_flops_per_token_formula():
    cfg = model_cfg()
    h, layers, s, v = 64, 3, 32, 96
    expected = 72 * layers * h * h * (1 + s / (6 * h) + v / (16 * layers * h))
    assert flops_per_token(cfg) == pytest.approx(expected)


def test_same_seed_same_weights_other_seed_differs():
    a, b, c = (GPTModel(model_cfg(), seed=s) for s in (5, 5, 6))
    for (name, pa), pb, pc in zip(a.named_parameters(), b.parameters(), c.parameters()):
        assert torch.equal(pa, pb), name
        if name.endswith(("query_key_value.weight", "word_embeddings.weight")):
            assert not torch.equal(pa, pc)


def test_activation_checkpointing_with_dropout_gives_identical_gradients():
    grads = []
    for ckpt in (False, True):
        cfg = model_cfg(hidden_dropout=0.2, attention_dropout=0.2, checkpoint_activations=ckpt)
        model = GPTModel(cfg, seed=3).train()
        seed_everything(11, tp_rank=0)
        tokens = torch.randint(0, 96, (2, 16), generator=torch.Generator().manual_seed(4))
        model(tokens).float().logsumexp(-1).mean().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, rtol=1e-5, atol=1e-6, msg=name)


def test_dropout_is_active_in_training_only():
    model = GPTModel(model_cfg(hidden_dropout=0.5), seed=3)
    tokens = torch.randint(0, 96, (1, 8))
    seed_everything(1, tp_rank=0)
    model.train()
    assert not torch.equal(model(tokens), model(tokens))
    model.eval()
    assert torch.equal(model(tokens), model(tokens))


@pytest.mark.parametrize("rows", [1, 2, 8, 16, 17])
@pytest.mark.parametrize("with_bias", [False, True])
def test_decoding_linear_equals_f_linear(rows, with_bias):
    """The CPU decoding product of inference.cpu_decoding (weight @ x^T) is F.linear up to
    rounding, keeps the input's leading shape, and is not taken where autograd records it."""
    import torch.nn.functional as F

    from megatron_lite.inference.cpu_decoding import decoding_linear as linear

    gen = torch.Generator().manual_seed(rows)
    x = torch.randn(rows, 1, 64, generator=gen)  # [b, s=1, in]: one new token per sequence
    weight = torch.randn(1000, 64, generator=gen)
    bias = torch.randn(1000, generator=gen) if with_bias else None
    expected = F.linear(x, weight, bias)
    with torch.no_grad():
        got = linear(x, weight, bias)
    assert got.shape == (rows, 1, 1000)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(linear(x, weight, bias), expected)  # grad enabled: F.linear itself


def _reference_attention(attn, x: torch.Tensor, heads: int, kv: int, rotary_ndims: int) -> torch.Tensor:
    """Causal attention written out plainly: per-head slices of the fused projection,
    rotate_half rotary on the first ``rotary_ndims`` dims, keys/values repeated per group."""
    b, s, h = x.shape
    d, per_group = h // heads, heads // kv
    qkv = (x @ attn.query_key_value.weight.T + attn.query_key_value.bias).view(b, s, kv, per_group + 2, d)
    q = qkv[:, :, :, :per_group].reshape(b, s, heads, d)
    k = qkv[:, :, :, per_group].repeat_interleave(per_group, dim=2)
    v = qkv[:, :, :, per_group + 1].repeat_interleave(per_group, dim=2)
    inv_freq = 1.0 / 10000 ** (torch.arange(0, rotary_ndims, 2).float() / rotary_ndims)
    angles = torch.arange(s).float()[:, None] * inv_freq  # [s, rot/2]
    cos, sin = torch.cat((angles, angles), -1).cos()[:, None], torch.cat((angles, angles), -1).sin()[:, None]

    def rope(t):
        r, rest = t[..., :rotary_ndims], t[..., rotary_ndims:]
        first, second = r[..., : rotary_ndims // 2], r[..., rotary_ndims // 2 :]
        return torch.cat((r * cos + torch.cat((-second, first), -1) * sin, rest), -1)

    q, k, v = rope(q).transpose(1, 2), rope(k).transpose(1, 2), v.transpose(1, 2)  # [b, heads, s, d]
    scores = (q @ k.transpose(-1, -2)) / d**0.5
    scores = scores.masked_fill(torch.ones(s, s, dtype=torch.bool).triu(1), float("-inf"))
    out = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, s, h)
    return out @ attn.dense.weight.T + attn.dense.bias


@pytest.mark.parametrize("kv_heads,rotary_pct", [(4, 1.0), (2, 0.5), (1, 0.25)])
def test_attention_equals_a_plain_reference(kv_heads, rotary_pct):
    # The fused QKV layout per key/value group, grouped-query attention and partial rotary
    # against the textbook formulas (the GPTNeoX parity tests cover only one query per group).
    cfg = model_cfg(pos_emb="rotary", rotary_pct=rotary_pct, num_kv_heads=kv_heads)
    attn = GPTModel(cfg, seed=3).layers[0].attention
    with torch.no_grad():
        attn.query_key_value.bias.normal_(0, 0.02, generator=torch.Generator().manual_seed(4))
    x = torch.randn(2, 10, 64, generator=torch.Generator().manual_seed(5))
    positions = torch.arange(10).unsqueeze(0)
    expected = _reference_attention(attn, x, 4, kv_heads, int(16 * rotary_pct))
    torch.testing.assert_close(attn(x, positions), expected, rtol=1e-5, atol=1e-5)


def test_few_row_products_reroute_only_inside_generation():
    """Within ``few_row_products`` the model's own F.linear calls take the decoding form (same
    logits up to rounding); outside it, and on autograd, F.linear runs unchanged."""
    from unittest import mock

    from megatron_lite.inference import cpu_decoding

    model = GPTModel(model_cfg(pos_emb="rotary")).eval()
    tokens = torch.randint(0, 96, (4, 1))  # [b, s=1]: a decoding step
    with torch.no_grad():
        expected = model(tokens)
        with mock.patch.object(cpu_decoding, "decoding_linear", wraps=cpu_decoding.decoding_linear) as spy:
            with cpu_decoding.few_row_products(torch.device("cpu")):
                got = model(tokens)
            assert spy.call_count >= 2 * model.cfg.num_layers  # every layer's products went through it
            calls = spy.call_count
            model(tokens)
            assert spy.call_count == calls  # outside the block: untouched
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)

