"""The model's size from its config alone, without torch or building it: the parameter count
and the training FLOPs per token (``python -m megatron_lite.config --summary``, the startup log,
MFU). ``tests/unit/test_model.py`` checks the count against the built ``GPTModel``.
"""

from __future__ import annotations

from megatron_lite.config.derived import GLU_ACTIVATIONS
from megatron_lite.config.schema import ModelConfig


def _layer_parameters(cfg: ModelConfig) -> int:
    """One transformer layer: fused QKV (GQA-sized), dense, MLP (GLU doubles the up
    projection), two norms; biases per the use_bias_in_* switches."""
    h, ff = cfg.hidden_size, cfg.mlp_inner_size
    heads = cfg.num_attention_heads
    kv = cfg.num_kv_heads or heads
    qkv_rows = (heads + 2 * kv) * (h // heads)
    attn_b, mlp_b = cfg.use_bias_in_attn_linear, cfg.use_bias_in_mlp
    up_rows = ff * (2 if cfg.activation in GLU_ACTIVATIONS else 1)
    attention = qkv_rows * h + h * h + ((qkv_rows + h) if attn_b else 0)
    mlp = up_rows * h + ff * h + ((up_rows + h) if mlp_b else 0)
    return attention + mlp + 2 * _norm_parameters(cfg)


def _norm_parameters(cfg: ModelConfig) -> int:
    # RMSNorm has a scale only; LayerNorm a bias too unless use_bias_in_norms is off.
    return cfg.hidden_size * (2 if cfg.norm == "layernorm" and cfg.use_bias_in_norms else 1)


def _input_embedding_parameters(cfg: ModelConfig) -> int:
    """The word embedding table (padded rows included) and learned positions, if any."""
    learned = cfg.max_position_embeddings if cfg.pos_emb == "learned" else 0
    return (cfg.padded_vocab_size + learned) * cfg.hidden_size


def count_parameters(cfg: ModelConfig) -> int:
    """Parameters of the whole model (all tensor/pipeline ranks together), from the config
    alone: embeddings, layers, final norm, and the LM head when untied (``no_weight_tying``)."""
    head = cfg.padded_vocab_size * cfg.hidden_size if cfg.no_weight_tying else 0
    return (_input_embedding_parameters(cfg) + cfg.num_layers * _layer_parameters(cfg)
            + _norm_parameters(cfg) + head)


def flops_per_token(cfg: ModelConfig) -> float:
    """Training FLOPs per token (forward + backward): ``6 N + 12 L s h``.

    ``N``: the parameters that multiply activations, i.e. all of ``count_parameters`` but the
    input embedding table (a lookup), with the LM head (``V h``) counted whether tied or not;
    6 = 2 (multiply-add) x 3 (forward; backward to activations and to weights). ``12 L s h``:
    attention's scores and weighted sum (2 x 2 s h per layer forward, x 3), over the whole
    ``s x s`` square as Megatron-LM and PaLM count it (no causal halving).

    This is GPT-NeoX's / Megatron-LM's MFU formula ``72 L h^2 (1 + s/(6h) + V/(16 L h))``
    (Narayanan et al. 2021) with its approximations made exact: the 12 h^2 per layer (4h GELU
    MLP, multi-head attention, no biases) becomes the real count (gated MLPs, GQA, biases,
    norms), and its head term 4.5 V h becomes 6 V h. Activation recomputation is not counted:
    model FLOPs, not hardware FLOPs.
    """
    # A tied head is the embedding table: counted once, as the head.
    tied_head = 0 if cfg.no_weight_tying else cfg.padded_vocab_size * cfg.hidden_size
    matmul_params = count_parameters(cfg) - _input_embedding_parameters(cfg) + tied_head
    return 6.0 * matmul_params + 12.0 * cfg.num_layers * cfg.seq_length * cfg.hidden_size
