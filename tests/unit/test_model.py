"""The model on one process: KV-cache decoding, causality, sizes, options, checkpointing."""

from __future__ import annotations

import pytest
import torch
import yaml

from megatron_lite.config import config_from_flat
from megatron_lite.config.__main__ import main as config_main
from megatron_lite.config.__main__ import summary
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
    # 6 N + 12 L s h; N: per layer 12 h^2 weights + 13 h biases and LayerNorm (GELU, 4h, MHA),
    # the final LayerNorm and the (tied) head; the embedding lookup and learned positions are not.
    n = layers * (12 * h * h + 13 * h) + 2 * h + v * h
    assert flops_per_token(cfg) == pytest.approx(6 * n + 12 * layers * s * h)
    # = GPT-NeoX's 72 L h^2 (1 + s/(6h) + V/(16 L h)) but for its head term (4.5 V h, not 6) and biases/norms
    neox = 72 * layers * h * h * (1 + s / (6 * h) + v / (16 * layers * h))
    assert flops_per_token(cfg) - neox == pytest.approx(1.5 * v * h + 6 * (layers * 13 * h + 2 * h))


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



# ---- parameter count and MLP width from the config ------------------------------------------------

COUNTED = {
    "plain_gelu": {},
    "swiglu_multiple_of": {"activation": "swiglu", "intermediate_size": 512, "mlp_multiple_of": 32,
                           "norm": "rmsnorm", "pos_emb": "rotary"},
    "geglu_gqa_expansion": {"activation": "geglu", "expansion_factor": 6.0, "num_kv_heads": 2},
    "untied_no_biases": {"no_weight_tying": True, "use_bias_in_attn_linear": False,
                         "use_bias_in_mlp": False, "use_bias_in_norms": False},
    "megatron_ffn_hidden_size": {"activation": "swiglu", "ffn_hidden_size": 100, "num_kv_heads": 1,
                                 "no_weight_tying": True, "use_bias_in_mlp": False},
}


@pytest.mark.parametrize("option", list(COUNTED))
def test_count_from_the_config_equals_the_built_model(option):
    cfg = model_cfg(**COUNTED[option])
    model = GPTModel(cfg, seed=0)
    assert count_parameters(cfg) == sum(p.numel() for p in model.parameters())
    mlp = model.layers[0].mlp
    assert mlp.dense_4h_to_h.weight.shape[1] == cfg.mlp_inner_size
    glu = cfg.activation in ("swiglu", "geglu")
    assert mlp.dense_h_to_4h.weight.shape[0] == cfg.mlp_inner_size * (2 if glu else 1)


def test_mlp_width_of_gpt_neox_keys_in_the_module():
    assert model_cfg(**COUNTED["swiglu_multiple_of"]).mlp_inner_size == 192  # int(512 * 2/3) // 2 -> 32s
    assert model_cfg(**COUNTED["geglu_gqa_expansion"]).mlp_inner_size == 128  # int(384 * 2/3) // 2
    assert model_cfg(**COUNTED["megatron_ffn_hidden_size"]).mlp_inner_size == 100  # literal


def test_checkpoint_written_before_mlp_inner_size_loads_with_its_shapes(tmp_path):
    """An older config.yml says ``intermediate_size: 192`` for a SwiGLU model built 192 wide (the
    old literal meaning); GPT-NeoX's rules would now read it as 64. It must load as written."""
    import yaml

    import megatron_lite
    from megatron_lite.checkpoint.weights import write_weights_checkpoint
    from megatron_lite.config import dump_yaml

    cfg = resolve(config_from_flat({"num_layers": 2, "hidden_size": 64, "num_attention_heads": 4,
                                    "seq_length": 16, "padded_vocab_size": 512, "activation": "swiglu",
                                    "ffn_hidden_size": 192, "pos_emb": "rotary",
                                    "tokenizer_type": "CharLevelTokenizer"}), 1)
    full = GPTModel(cfg.model, seed=4).state_dict()
    old = yaml.safe_load(dump_yaml(cfg))
    for key in ("mlp_inner_size", "expansion_factor", "mlp_multiple_of"):  # keys the old format lacked
        del old[key]
    old["intermediate_size"] = 192
    write_weights_checkpoint(full, str(tmp_path), yaml.safe_dump(old), 1, glu=True, vocab_size=300)
    model, _ = megatron_lite.load_model(str(tmp_path))
    assert model.gpt.cfg.mlp_inner_size == 192
    assert model.gpt.layers[0].mlp.dense_h_to_4h.weight.shape == (384, 64)
    for key, value in model.gpt.state_dict().items():
        assert torch.equal(value, full[key]), key
    # A run config that still means the old width by intermediate_size is told what to write.
    from megatron_lite.checkpoint.layout import CheckpointError
    from megatron_lite.checkpoint.loader import load_model_weights

    run = resolve(config_from_flat({**old, "load": str(tmp_path), "finetune": True}), 1)
    with pytest.raises(CheckpointError, match="MLP width .* is 192, the config's 64.*ffn_hidden_size: 192"):
        load_model_weights(GPTModel(run.model), run, tp_rank=0, pipelined=False)


def test_hf_intermediate_size_is_the_literal_width_both_ways():
    from megatron_lite.checkpoint.hf import hf_config_dict, model_keys_from_hf

    hf = {"model_type": "gpt_neox", "num_hidden_layers": 1, "hidden_size": 64, "num_attention_heads": 4,
          "intermediate_size": 100, "max_position_embeddings": 16}
    keys = model_keys_from_hf(hf)
    assert keys["mlp_inner_size"] == 100 and "intermediate_size" not in keys
    cfg = resolve(config_from_flat({**keys, "padded_vocab_size": 128}), 1).model
    assert hf_config_dict(cfg, 100, None, None)["intermediate_size"] == 100


# GPT-NeoX's configs/llama/7B.yml and configs/llama2/70B.yml (model keys, copied), with the
# 32000-token LLaMA vocabulary unpadded (padded_vocab_size: with make_vocab_size_divisible_by 1).
LLAMA_7B = """\
pipe_parallel_size: 1
model_parallel_size: 1
make_vocab_size_divisible_by: 1
num_layers: 32
hidden_size: 4096
intermediate_size: 32768
num_attention_heads: 32
seq_length: 2048
max_position_embeddings: 2048
pos_emb: rotary
rotary_pct: 1
no_weight_tying: true
gpt_j_residual: false
output_layer_parallelism: column
norm: rmsnorm
rms_norm_epsilon: 1.0e-6
use_bias_in_mlp: False
scaled_upper_triang_masked_softmax_fusion: true
bias_gelu_fusion: false
use_bias_in_norms: false
use_bias_in_attn_linear: false
activation: swiglu
mlp_multiple_of: 256
padded_vocab_size: 32000
"""
LLAMA2_70B = """\
pipe_parallel_size: 1
model_parallel_size: 1
make_vocab_size_divisible_by: 1
num_layers: 80
hidden_size: 8192
intermediate_size: 86016
num_attention_heads: 64
num_kv_heads: 8
seq_length: 4096
max_position_embeddings: 4096
pos_emb: rotary
rotary_pct: 1
rotary_emb_base: 1000000
no_weight_tying: true
gpt_j_residual: false
output_layer_parallelism: column
norm: rmsnorm
rms_norm_epsilon: 1.0e-5
attention_config: [[["flash"], 80]]
scaled_upper_triang_masked_softmax_fusion: true
bias_gelu_fusion: false
use_bias_in_norms: false
use_bias_in_attn_linear: false
activation: swiglu
mlp_multiple_of: 256
padded_vocab_size: 32000
"""


def test_summary_of_llama_7b_is_hf_llama_7b(tmp_path, capsys):
    (tmp_path / "7B.yml").write_text(LLAMA_7B)
    assert config_main([str(tmp_path / "7B.yml"), "--summary"]) == 0
    lines = dict(line.split(": ", 1) for line in capsys.readouterr().out.splitlines()[-3:])
    # LlamaForCausalLM's count for LLaMA-7B; the FLOPs: 6 N' + 12 L s h, N' = N - input embedding.
    assert lines == {"parameters": "6738415616", "mlp_inner_size": "11008",
                     "flops_per_token": str(6 * (6738415616 - 32000 * 4096) + 12 * 32 * 2048 * 4096)}


def from_yaml_text(text: str):
    return resolve(config_from_flat(yaml.safe_load(text)), 1)


def test_llama2_70b_counts():
    # LlamaForCausalLM's count for Llama-2-70B: no MLP biases.
    no_mlp_bias = from_yaml_text(LLAMA2_70B + "use_bias_in_mlp: false\n")
    assert summary(no_mlp_bias).splitlines()[:2] == ["parameters: 68976648192", "mlp_inner_size: 28672"]
    # GPT-NeoX's file itself leaves use_bias_in_mlp at its default, true: 80 x (2 x 28672 + 8192) more.
    shipped = from_yaml_text(LLAMA2_70B)
    assert summary(shipped).splitlines()[0] == f"parameters: {68976648192 + 80 * (2 * 28672 + 8192)}"


def test_summary_names_what_it_cannot_count(tmp_path, capsys):
    (tmp_path / "novocab.yml").write_text(LLAMA_7B.replace("padded_vocab_size: 32000\n", ""))
    assert config_main([str(tmp_path / "novocab.yml"), "--summary"]) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    assert last == "parameters: unknown (padded_vocab_size not set and not derivable)"


def test_bias_gelu_fusion_is_gpt_neox_fused_kernels_tanh_gelu():
    """Pythia's configs set bias_gelu_fusion: GPT-NeoX's fused bias-GeLU formula, not erf GeLU."""
    from megatron_lite.model.mlp import ParallelMLP
    from megatron_lite.parallel.state import ParallelState

    def neox_bias_gelu(y):  # megatron/model/fused_bias_gelu.py's bias_gelu (bias already added)
        return y * 0.5 * (1.0 + torch.tanh(0.79788456 * y * (1 + 0.044715 * y * y)))

    x = 40 * torch.randn(2, 5, 64)  # pre-activations of order 1, where the two GeLUs differ
    outputs = {}
    for fused in (False, True):
        mlp = ParallelMLP(model_cfg(bias_gelu_fusion=fused), ParallelState.single(), 0, seed=3)
        up = mlp.dense_h_to_4h(x)
        expected = neox_bias_gelu(up) if fused else torch.nn.functional.gelu(up)
        torch.testing.assert_close(mlp(x), mlp.dense_4h_to_h(expected), rtol=1e-6, atol=1e-6)
        outputs[fused] = mlp(x)
    assert (outputs[False] - outputs[True]).abs().max() > 1e-5  # the two GeLUs differ by up to ~1e-3
