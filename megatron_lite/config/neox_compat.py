"""What we do with GPT-NeoX (and Megatron-LM) keys that are not fields of our schema.

Three lists, all consulted by the loader:
- ``ALIASES``: other spellings of our keys (Megatron-LM names, old GPT-NeoX names);
- ``IGNORED_KEYS``: GPT-NeoX keys we accept that do not change what is computed (kernel
  fusions, profiling, ...). They are listed once at startup so nobody thinks they had an effect;
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
    "ffn_hidden_size": "mlp_inner_size",  # Megatron's literal inner width, not GPT-NeoX's intermediate_size
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

# Accepted, logged once as ignored: keys that do not change what is computed (each group says
# why). A GPT-NeoX key that changes the numbers is a schema field (implemented) or in
# UNSUPPORTED_KEYS below (its default accepted, any other value refused).
IGNORED_KEYS: frozenset[str] = frozenset(
    {
        # Kernel fusions of the same functions (we use SDPA and torch's own kernels).
        "scaled_upper_triang_masked_softmax_fusion",
        "scaled_masked_softmax_fusion",
        "bias_dropout_fusion",
        "rope_fusion",
        "layernorm_fusion",
        "rmsnorm_fusion",
        "use_flashattn_swiglu",
        # GPT-NeoX's ONNX-safe GeLU is the erf GeLU, which is ours.
        "onnx_safe",
        # The same function in other arithmetic: QK^T divided by the layer number and multiplied
        # back in the softmax; softmax in fp32 (SDPA's kernels accumulate it in fp32).
        "apply_query_key_layer_scaling",
        "attention_softmax_in_fp32",
        # Activation checkpointing: where saved activations live, not what is computed.
        "partition_activations",
        "synchronize_each_layer",
        "contiguous_checkpointing",
        "checkpoint_in_cpu",
        "deepspeed_activation_checkpointing",
        # DeepSpeed's sparse all-reduce of nn.Embedding gradients: the same sum, sent packed.
        "sparse_gradients",
        # Profiling, debugging, logging and run metadata.
        "profile_backward",
        "checkpoint_validation_with_forward_pass",
        "gradient_noise_scale_n_batches",
        "gradient_noise_scale_cpu_offload",
        "log_gradient_noise_scale",
        "log_param_norm",
        "log_optimizer_states",
        "char_level_ppl",
        "profile",
        "profile_step_start",
        "profile_step_stop",
        "memory_profiling",
        "memory_profiling_path",
        "dump_state",
        "flops_profiler",
        "comms_logger",
        "wandb_init_all_ranks",
        # Comet's settings, inert while use_comet (refused below) is off.
        "comet_workspace",
        "comet_project",
        "comet_experiment_name",
        "comet_tags",
        "comet_others",
        "comment",
        "git_hash",
        # Data-loading speed, and which ranks build the index files.
        "mmap_warmup",
        "use_shared_fs",
        # Keys without effect on what GPT-NeoX computes for GPT training: short_seq_prob is
        # read by BERT-style datasets only; s3_chunk_size serves s3_path (refused); deepscale*
        # are deprecated no-ops; autotuning is inert without autotuning_run (refused); auto_cast
        # belongs to the fp16 section (passed on to DeepSpeed there), not to the top level.
        "short_seq_prob",
        "s3_chunk_size",
        "deepscale",
        "deepscale_config",
        "autotuning",
        "auto_cast",
        # dynamic_loss_scale is derived from fp16.loss_scale (0 = dynamic) by GPT-NeoX, as by
        # DeepSpeed here; zero_allow_untested_optimizer is always on in our DeepSpeed config;
        # the LR schedule always comes from the config (override_lr_scheduler: true's behaviour;
        # GPT-NeoX's default refuses a config that differs from the checkpoint's schedule).
        "dynamic_loss_scale",
        "zero_allow_untested_optimizer",
        "override_lr_scheduler",
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
    "dataset_impl": frozenset({"gpt2", "pairwise"}),
    "pack_impl": frozenset({"packed", "unpacked"}),
    "train_impl": frozenset({"normal", "dpo", "kto", "rm"}),
    "lr_decay_style": frozenset({"constant", "linear", "cosine", "exponential"}),
    "tokenizer_type": frozenset(
        {"HFTokenizer", "HFGPT2Tokenizer", "GPT2BPETokenizer", "CharLevelTokenizer", "SPMTokenizer",
         "TiktokenTokenizer"}
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
    "context_parallel_size": (1, "context parallelism"),
    # GPT-NeoX / Megatron-LM keys that change what is computed (or what a run does) when set;
    # their default is what megatron_lite does (issue #18: none may be accepted and ignored).
    "opt_pos_emb_offset": (0, "OPT's offset of learned positions"),
    "output_layer_init_method_std": (None, "a separate init std of the output layers"),
    "curriculum_learning": (None, "curriculum learning"),
    "amp": (None, "Apex AMP mixed precision"),
    "prescale_gradients": (False, "gradient prescaling before the all-reduce"),
    "gradient_predivide_factor": (1.0, "gradient predivision before the all-reduce"),
    "use_checkpoint_lr_scheduler": (False, "taking the LR schedule from the checkpoint"),
    "tokenizer_kwargs": (None, "extra tokenizer arguments"),
    "autotuning_run": (None, "DeepSpeed autotuning"),
    "checkpoint_scale": ("linear", "log-scaled checkpoint intervals"),
    "checkpoint_factor_scale": (None, "scaled checkpoint intervals"),
    "keep_last_n_checkpoints_scale": (None, "scaled checkpoint retention"),
    "s3_path": (None, "uploading checkpoints to S3"),
    "hf_upload": (None, "uploading checkpoints to the Hugging Face Hub"),
    "use_bnb_optimizer": (False, "bitsandbytes optimizers"),
    "gmlp_attn_dim": (64, "gMLP layers"),
    "use_comet": (False, "Comet logging; use wandb or tensorboard"),
    # GPT-NeoX's REINFORCE post-training (train_impl: reinforce) samples from an online data
    # server; none of its keys means anything without it, so any value is refused.
    "reinforce_leave_one_out": (None, "REINFORCE post-training (train_impl: reinforce)"),
    "fp32_reinforce": (None, "REINFORCE post-training (train_impl: reinforce)"),
    "kl_impl": (None, "REINFORCE post-training (train_impl: reinforce)"),
    "kl_div_beta": (None, "REINFORCE post-training (train_impl: reinforce)"),
    "online_dataserver_ips": (None, "online data servers (dataset_impl: online, for REINFORCE)"),
    "online_dataserver_ports": (None, "online data servers (dataset_impl: online, for REINFORCE)"),
    "serve_model_weights": (None, "serving weights to online data servers (REINFORCE)"),
    # Not a GPT-NeoX key: the llemma fork's LR floor as a fraction of the peak. Upstream (and
    # here) the floor is min_lr.
    "decay_lr_to": (None, "decay_lr_to of the llemma fork of GPT-NeoX; set min_lr instead"),
}

# Attention types of GPT-NeoX's attention_config that we run (both are SDPA here).
SUPPORTED_ATTENTION_TYPES: frozenset[str] = frozenset({"global", "flash"})


def upgrade_stored_config(flat: dict[str, Any]) -> dict[str, Any]:
    """A resolved config saved by an older megatron_lite, in today's meaning.

    Before ``mlp_inner_size`` existed, a resolved config's ``intermediate_size`` was the MLP's
    literal inner width (GLU activations included); today it is GPT-NeoX's key, from which the
    width is derived. Every resolved config written since carries ``mlp_inner_size``: its
    absence marks the old format, whose width moves to ``mlp_inner_size`` unchanged.
    """
    if "mlp_inner_size" in flat or flat.get("intermediate_size") is None:
        return flat
    upgraded = {k: v for k, v in flat.items() if k != "intermediate_size"}
    upgraded["mlp_inner_size"] = flat["intermediate_size"]
    return upgraded
