"""What we do with GPT-NeoX (and Megatron-LM) keys that are not fields of our schema.

Three lists, all consulted by the loader:
- ``ALIASES``: other spellings of our keys (Megatron-LM names, old GPT-NeoX names);
- ``IGNORED_KEYS``: GPT-NeoX keys we accept and do not need (kernel fusions, profiling, ...).
  They are listed once at startup so nobody thinks they had an effect;
- ``SUPPORTED_VALUES`` / ``UNSUPPORTED_KEYS``: GPT-NeoX features we do not implement. Using one
  is an error naming the key and the value, never a silent fallback.
"""

from __future__ import annotations

from typing import Any

ALIASES: dict[str, str] = {
    # Megatron-LM spellings
    "tensor_model_parallel_size": "model_parallel_size",
    "pipeline_model_parallel_size": "pipe_parallel_size",
    "micro_batch_size": "train_micro_batch_size_per_gpu",
    "global_batch_size": "train_batch_size",
    "ffn_hidden_size": "intermediate_size",
    "num_query_groups": "num_kv_heads",
    "clip_grad": "gradient_clipping",
    "lr_warmup_fraction": "warmup",
    "rotary_percent": "rotary_pct",
    "rotary_base": "rotary_emb_base",
    "untie_embeddings_and_output_weights": "no_weight_tying",
    "log_interval_iters": "log_interval",
    # GPT-NeoX alternative / older spellings
    "gradient_accumulation": "gradient_accumulation_steps",
    "num_gpus_per_node": "num_gpus",
    "wandb_run": "wandb_run_name",
}

# Accepted, logged once as ignored: performance switches we do not need (we use SDPA and
# torch's own fused kernels), DeepSpeed activation-checkpointing knobs, and profiling/debug aids.
IGNORED_KEYS: frozenset[str] = frozenset(
    {
        "scaled_upper_triang_masked_softmax_fusion",
        "scaled_masked_softmax_fusion",
        "bias_gelu_fusion",
        "bias_dropout_fusion",
        "rope_fusion",
        "layernorm_fusion",
        "use_flashattn_swiglu",
        "partition_activations",
        "synchronize_each_layer",
        "contiguous_checkpointing",
        "checkpoint_in_cpu",
        "profile_backward",
        "checkpoint_validation_with_forward_pass",
        "fp32_allreduce",
        "apply_query_key_layer_scaling",
        "attention_softmax_in_fp32",
        "gradient_noise_scale_n_batches",
        "gradient_noise_scale_cpu_offload",
        "log_gradient_noise_scale",
        "log_param_norm",
        "log_optimizer_states",
        "profile",
        "profile_step_start",
        "profile_step_stop",
        "memory_profiling",
        "memory_profiling_path",
        "dump_state",
        "use_checkpoint_lr_scheduler",
        "override_lr_scheduler",
        "zero_allow_untested_optimizer",
        "mmap_warmup",
        "short_seq_prob",
        "reset_position_ids",
        "reset_attention_mask",
        "eod_mask_loss",
        "use_shared_fs",
        "autotuning",
        "autotuning_run",
        "comment",
        "git_hash",
        "wandb_init_all_ranks",
        "opt_pos_emb_offset",
        "amp",
        "auto_cast",
        "flops_profiler",
        "comms_logger",
        "curriculum_learning",
        "sparse_gradients",
        "prescale_gradients",
        "gradient_predivide_factor",
        "dynamic_loss_scale",
        "onnx_safe",
        "deepscale",
        "deepscale_config",
        "deepspeed_activation_checkpointing",
        "precompute_model_name",
        "char_level_ppl",
        "tokenizer_kwargs",
        "output_layer_init_method_std",
        "sequence_parallel",
        "pack_impl",
        "allow_chopped",
        "s3_path",
        "s3_chunk_size",
        "hf_upload",
        "checkpoint_scale",
        "checkpoint_factor_scale",
        "keep_last_n_checkpoints_scale",
    }
)

# Keys whose values we implement only partly: anything else is "not implemented".
SUPPORTED_VALUES: dict[str, frozenset[Any]] = {
    "pos_emb": frozenset({"rotary", "learned", "sinusoidal", "alibi", "none"}),
    "norm": frozenset({"layernorm", "rmsnorm"}),
    "activation": frozenset({"gelu", "swiglu", "geglu", "relu", "silu"}),
    "init_method": frozenset({"normal", "scaled_normal", "small_init", "wang_init"}),
    "output_layer_init_method": frozenset({"normal", "scaled_normal", "small_init", "wang_init"}),
    "output_layer_parallelism": frozenset({"column"}),
    "data_impl": frozenset({"mmap"}),
    "lr_decay_style": frozenset({"constant", "linear", "cosine", "exponential"}),
    "tokenizer_type": frozenset(
        {"HFTokenizer", "HFGPT2Tokenizer", "GPT2BPETokenizer", "CharLevelTokenizer"}
    ),
    "text_gen_type": frozenset({"unconditional", "input-file", "interactive"}),
    "launcher": frozenset({"pdsh", "openmpi", "mvapich", "slurm"}),
    "distributed_backend": frozenset({"nccl", "gloo"}),
    "precision": frozenset({"fp32", "fp16", "bfloat16"}),
}

# GPT-NeoX features that exist only when a key takes a non-default value; the default (given
# here) is accepted and ignored, anything else is an error naming the feature.
UNSUPPORTED_KEYS: dict[str, tuple[Any, str]] = {
    "num_experts": (1, "mixture of experts"),
    "moe_num_experts": (1, "mixture of experts"),
    "moe_type": (None, "mixture of experts"),
    "sparsity_config": ({}, "sparse attention"),
    "train_impl": ("normal", "DPO/KTO/reward-model training"),
    "mamba_selective_scan_fusion": (False, "Mamba layers"),
    "num_unique_layers": (None, "layer sharing"),
    "soft_prompt_tuning": (None, "soft prompt tuning"),
    "mup_init_scale": (1.0, "muP"),
    "use_mup": (False, "muP"),
    "gpt_j_tied": (False, "tied GPT-J residual norms"),
    "rotary_save_freqs_buffer": (False, "saving the rotary buffer"),
    "te_columnparallel": (False, "TransformerEngine layers"),
    "te_rowparallel": (False, "TransformerEngine layers"),
    "te_layernorm_mlp": (False, "TransformerEngine layers"),
    "te_mha": (False, "TransformerEngine layers"),
    "te_fp8_format": (None, "TransformerEngine fp8"),
    "mlp_multiple_of": (1, "rounding of the MLP width"),
    "context_parallel_size": (1, "context parallelism"),
}

# Attention types of GPT-NeoX's attention_config that we run (both are SDPA here).
SUPPORTED_ATTENTION_TYPES: frozenset[str] = frozenset({"global", "flash"})
