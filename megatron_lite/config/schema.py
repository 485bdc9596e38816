"""The typed configuration: one frozen dataclass per concern, GPT-NeoX key names.

YAML files are flat (``num_layers: 12``); the loader routes every key to the group that owns
it. Each field carries a type, a default and a one-line ``help`` (``docs/config.md`` is
generated from these). Fields marked ``derived`` are computed by ``derived.py`` when left
unset; when a user sets one it is checked against the others instead (so a resolved config
written to disk loads back to the same config).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any


def f(default: Any, help: str, derived: bool = False) -> Any:  # noqa: A002 - "help" reads best
    """A field with a default and a description (mutable defaults are copied per instance)."""
    meta = {"help": help, "derived": derived}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class ModelConfig:
    """Shape and architecture of the GPT model (all the model code ever sees)."""

    num_layers: int | None = f(None, "Number of transformer layers.")
    hidden_size: int | None = f(None, "Width of the residual stream.")
    num_attention_heads: int | None = f(None, "Number of attention (query) heads.")
    num_kv_heads: int | None = f(None, "Key/value heads for grouped-query attention (None = num_attention_heads).")
    sliding_window_width: int | None = f(None, "GPT-NeoX: sliding-window attention, each token attends to itself and the sliding_window_width tokens before it (HF Mistral's sliding_window is this + 1); None = the whole context.")
    attention_type: str | None = f(None, "llemma's configs: multihead (num_kv_heads unset or equal to the heads) or groupedquery (num_kv_heads set, fewer); a check, num_kv_heads decides.")
    seq_length: int | None = f(None, "Training context length in tokens.")
    max_position_embeddings: int | None = f(None, "Longest position the model supports (default seq_length).", derived=True)
    intermediate_size: int | None = f(None, "GPT-NeoX's MLP width key, before its rules (default expansion_factor * hidden_size): swiglu/geglu keep int(2/3 of it) for value and gate together; the width built is mlp_inner_size (docs/model.md).")
    expansion_factor: float | None = f(None, "GPT-NeoX: intermediate_size as a multiple of hidden_size when intermediate_size is unset (None = 4).")
    mlp_multiple_of: int = f(1, "GPT-NeoX: round the MLP width up to a multiple of this (its llama configs: 256).")
    mlp_inner_size: int | None = f(None, "The MLP's inner width as built (dense_4h_to_h's input, HF's intermediate_size): derived from the GPT-NeoX keys above, or set literally (Megatron-LM's ffn_hidden_size is an alias).", derived=True)
    pos_emb: str = f("learned", "Position encoding: rotary, learned, sinusoidal, alibi or none.")
    rotary_pct: float = f(1.0, "Fraction of each head's dimensions that rotary embeddings rotate.")
    rotary_emb_base: int = f(10000, "Base of the rotary frequencies.")
    rope_scaling: dict | None = f(None, "megatron_lite's own key (GPT-NeoX has none): rotary frequency scaling as transformers' rope_scaling, {type: linear, factor} (positions / factor) or {type: llama3, factor, low_freq_factor, high_freq_factor, original_max_position_embeddings} (Llama 3.1); None = unscaled.")
    norm: str = f("layernorm", "Normalisation: layernorm or rmsnorm.")
    layernorm_epsilon: float = f(1.0e-5, "Epsilon of LayerNorm.")
    rms_norm_epsilon: float = f(1.0e-8, "Epsilon of RMSNorm.")
    activation: str = f("gelu", "MLP activation: gelu, swiglu, geglu, relu or silu.")
    bias_gelu_fusion: bool = f(False, "GPT-NeoX: with activation gelu, its fused bias-GeLU kernel's function, the tanh approximation of GeLU (Pythia's configs set it); false: the exact (erf) GeLU.")
    gpt_j_residual: bool = f(False, "Parallel residual (attention and MLP read the same input), as GPT-J and Pythia.")
    no_weight_tying: bool = f(False, "Untie the output layer from the input embedding.")
    use_bias_in_attn_linear: bool = f(True, "Biases in the attention projections.")
    use_bias_in_mlp: bool = f(True, "Biases in the MLP projections.")
    use_bias_in_norms: bool = f(True, "Biases in the LayerNorms.")
    hidden_dropout: float = f(0.0, "Dropout on the residual branches.")
    attention_dropout: float = f(0.0, "Dropout on attention probabilities.")
    init_method: str = f("normal", "Init of most weights: normal, scaled_normal, small_init or wang_init.")
    output_layer_init_method: str = f("scaled_normal", "Init of the output projections of each layer.")
    init_method_std: float = f(0.02, "Standard deviation of the normal init methods.")
    attention_config: list = f([], "GPT-NeoX per-layer attention types, e.g. [[['flash'], 12]]; only global/flash (both SDPA).")
    checkpoint_activations: bool = f(False, "Recompute activations in the backward pass to save memory.")
    checkpoint_num_layers: int = f(1, "Layers per activation-checkpoint chunk.")
    output_layer_parallelism: str = f("column", "How the LM head is split across tensor-parallel ranks (column only).")
    make_vocab_size_divisible_by: int = f(128, "Pad the vocabulary to a multiple of this times model_parallel_size.")
    padded_vocab_size: int | None = f(None, "Embedding rows after padding (derived from the tokenizer).", derived=True)


@dataclass(frozen=True)
class ParallelConfig:
    """How the world is split: pipe x data x model (model innermost, as DeepSpeed's topology)."""

    pipe_parallel_size: int = f(0, "Pipeline stages; 0 = plain sequential module, >=1 = DeepSpeed PipelineModule.")
    model_parallel_size: int = f(1, "Tensor-parallel ranks per layer.")
    sequence_parallel: bool = f(False, "Megatron-style sequence parallelism: norms, dropout and residuals on s/model_parallel_size tokens per rank, all-gather / reduce-scatter in place of all-reduce (less activation memory, same losses); no effect when model_parallel_size is 1.")
    pipe_partition_method: str = f("type:transformer|mlp", "How PipelineModule splits layers: parameters, uniform or type:REGEX.")
    distributed_backend: str = f("nccl", "torch.distributed backend on GPU (gloo is always used on CPU).")
    zero_optimization: dict = f({"stage": 0}, "DeepSpeed zero_optimization section (stage 0-3, offload, buckets).")
    global_num_gpus: int | None = f(None, "World size: ranks over all nodes (derived from hostfile / num_gpus).", derived=True)
    data_parallel_size: int | None = f(None, "Data-parallel ranks = world / (model_parallel_size * pipe stages).", derived=True)


@dataclass(frozen=True)
class OptimizerConfig:
    """Optimizer and its GPT-NeoX-style ``optimizer: {type, params}`` section."""

    optimizer: dict = f({"type": "Adam", "params": {"lr": 0.0006}}, "GPT-NeoX optimizer section: type Adam/AdamW (decoupled decay) or SGD, params.")
    lr: float | None = f(None, "Peak learning rate (default optimizer.params.lr).", derived=True)
    weight_decay: float = f(0.01, "Decoupled weight decay (never applied to biases and norms).")
    gradient_clipping: float = f(1.0, "Clip the global gradient norm to this (0 = off).")


@dataclass(frozen=True)
class LRScheduleConfig:
    """Learning-rate schedule as GPT-NeoX: warmup, then decay to min_lr."""

    lr_decay_style: str = f("linear", "Decay after warmup: constant, linear, cosine or exponential.")
    lr_decay_iters: int | None = f(None, "Iterations over which to decay (default train_iters).", derived=True)
    min_lr: float = f(0.0, "Learning rate at the end of the decay.")
    warmup: float = f(0.01, "Warmup as a fraction of lr_decay_iters.")


@dataclass(frozen=True)
class TrainingConfig:
    """Batch sizes, length of training, precision and evaluation cadence."""

    train_batch_size: int | None = f(None, "Global batch = micro batch * grad accumulation * data-parallel size.", derived=True)
    train_micro_batch_size_per_gpu: int | None = f(None, "Samples per rank per forward pass.", derived=True)
    gradient_accumulation_steps: int | None = f(None, "Micro batches accumulated per optimizer step.", derived=True)
    train_iters: int | None = f(None, "Optimizer steps to train for.")
    train_epochs: int | None = f(None, "Alternative to train_iters: passes over the training data.")
    seed: int = f(1234, "Random seed for init, data order and dropout.")
    fp16: dict = f({}, "DeepSpeed fp16 section (enabled, loss_scale 0 = dynamic, loss_scale_window, ...).")
    bf16: dict = f({}, "DeepSpeed bf16 section (enabled).")
    data_types: dict = f({}, "DeepSpeed data_types section, as GPT-NeoX passes it (grad_accum_dtype: fp32 accumulates gradients in fp32 under bf16).")
    precision: str | None = f(None, "fp32, fp16 or bfloat16 (derived from fp16/bf16 when unset).", derived=True)
    eval_interval: int = f(1000, "Evaluate on the validation split every this many iterations.")
    eval_iters: int = f(100, "Validation batches per evaluation.")
    exit_interval: int | None = f(None, "Save and exit after an iteration divisible by this.")
    fp32_allreduce: bool = f(False, "All-reduce fp16/bf16 gradients in fp32 (DeepSpeed's communication_data_type: fp32); otherwise in the training precision.")
    compile: bool = f(False, "torch.compile the model (in place: checkpoint names unchanged); the first steps pay the compile.")
    peak_theoretical_tflops: float | None = f(None, "Peak TFLOP/s of one device, to report MFU.")
    steps_per_print: int = f(10, "DeepSpeed's own progress print interval.")
    wall_clock_breakdown: bool = f(False, "DeepSpeed per-phase timers.")


@dataclass(frozen=True)
class DataConfig:
    """Where the tokenized .bin/.idx data is and how it is split and blended."""

    data_path: str | None = f(None, "Prefix of one dataset, split into train/valid/test by `split`.")
    train_data_paths: list | None = f(None, "Prefixes of training datasets (blended by train_data_weights).")
    valid_data_paths: list | None = f(None, "Prefixes of validation datasets.")
    test_data_paths: list | None = f(None, "Prefixes of test datasets.")
    train_label_data_paths: list | None = f(None, "Label datasets parallel to train_data_paths (-100 = masked).")
    valid_label_data_paths: list | None = f(None, "Label datasets parallel to valid_data_paths.")
    test_label_data_paths: list | None = f(None, "Label datasets parallel to test_data_paths.")
    train_data_weights: list | None = f(None, "Blend weights of train_data_paths (default equal).")
    valid_data_weights: list | None = f(None, "Blend weights of valid_data_paths.")
    test_data_weights: list | None = f(None, "Blend weights of test_data_paths.")
    weight_by_num_documents: bool = f(False, "Weight datasets by document count (overrides given weights).")
    weighted_sampler_alpha: float = f(1.0, "Exponent smoothing the document-count weights.")
    split: str = f("969,30,1", "Train/valid/test proportions of data_path's documents.")
    data_impl: str = f("mmap", "Dataset format (mmap only).")
    num_workers: int = f(2, "DataLoader worker processes per rank.")
    eod_mask_loss: bool = f(False, "No loss where the input token is the end-of-document token (GPT-NeoX's key).")
    reset_position_ids: bool = f(False, "Positions restart at 0 after every end-of-document token of a packed sample, as if each document were alone (Megatron-LM's key).")
    reset_attention_mask: bool = f(False, "Tokens attend only to their own document within a packed sample: an explicit mask, slower than plain causal attention (Megatron-LM's key).")
    data_cache_dir: str | None = f(None, "Directory for the sample index caches (.npy; default: next to the data). Set it when the data directory is read-only. megatron_lite's own key.")
    dataset_impl: str = f("gpt2", "GPT-NeoX: gpt2 (token samples) or pairwise (chosen/rejected pairs from the pos_/neg_ paths, for train_impl dpo and rm; needs pack_impl unpacked).")
    pack_impl: str = f("packed", "GPT-NeoX: packed (documents laid end to end and cut into seq_length samples) or unpacked (one document per sample, padded; docs/cli.md#post-training-dpo-kto-reward-models).")
    allow_chopped: bool = f(True, "GPT-NeoX, pack_impl unpacked: cut a document longer than seq_length + 1 tokens to that length; false makes such a document an error naming its file and record.")
    train_reward_data_paths: list | None = f(None, "train_impl kto: per-document rewards parallel to train_data_paths (> 0 desirable, < 0 undesirable).")
    valid_reward_data_paths: list | None = f(None, "train_impl kto: rewards parallel to valid_data_paths.")
    test_reward_data_paths: list | None = f(None, "train_impl kto: rewards parallel to test_data_paths.")
    pos_train_data_paths: list | None = f(None, "dataset_impl pairwise: chosen (positive) training documents; pair i is document i of the pos_ and of the neg_ dataset.")
    neg_train_data_paths: list | None = f(None, "dataset_impl pairwise: rejected (negative) training documents, parallel to pos_train_data_paths.")
    pos_train_label_data_paths: list | None = f(None, "Labels of pos_train_data_paths (-100 = no loss: the prompt).")
    neg_train_label_data_paths: list | None = f(None, "Labels of neg_train_data_paths.")
    pos_valid_data_paths: list | None = f(None, "dataset_impl pairwise: chosen validation documents.")
    neg_valid_data_paths: list | None = f(None, "dataset_impl pairwise: rejected validation documents.")
    pos_valid_label_data_paths: list | None = f(None, "Labels of pos_valid_data_paths.")
    neg_valid_label_data_paths: list | None = f(None, "Labels of neg_valid_data_paths.")
    pos_test_data_paths: list | None = f(None, "dataset_impl pairwise: chosen test documents.")
    neg_test_data_paths: list | None = f(None, "dataset_impl pairwise: rejected test documents.")
    pos_test_label_data_paths: list | None = f(None, "Labels of pos_test_data_paths.")
    neg_test_label_data_paths: list | None = f(None, "Labels of neg_test_data_paths.")
    precompute_model_name: str | None = f(None, "DPO/KTO: read the reference model's per-token log-probabilities from the datasets <data prefix>_<name> instead of running a reference model (docs/cli.md#post-training-dpo-kto-reward-models).")


@dataclass(frozen=True)
class PostTrainingConfig:
    """What the training step optimises: the LM loss, DPO, KTO or a reward model (GPT-NeoX's keys)."""

    train_impl: str = f("normal", "normal (LM loss), dpo (pairs, against a frozen reference model), kto (single documents with rewards) or rm (reward model: a scalar head, Bradley-Terry loss on pairs).")
    dpo_beta: float = f(0.1, "DPO: beta, the strength of the implicit KL penalty.")
    dpo_fp32: bool = f(True, "DPO: compute the log-probabilities in fp32 (false: in the training precision).")
    dpo_reference_free: bool = f(False, "DPO: no reference model (its log-probabilities are taken as 0).")
    kto_beta: float = f(0.1, "KTO: beta.")
    kto_fp32: bool = f(True, "KTO: compute the log-probabilities in fp32 (false: in the training precision).")
    kto_desirable_weight: float = f(1.0, "KTO: weight of the loss of desirable (reward > 0) documents.")
    kto_undesirable_weight: float = f(1.0, "KTO: weight of the loss of undesirable (reward < 0) documents.")
    z_loss: float = f(0.0, "Reward model: weight of the penalty z_loss * (r_chosen^2 + r_rejected^2), keeping rewards near 0.")
    lora: dict | None = f(None, "LoRA: {rank, alpha, dropout, targets, base} trains rank-`rank` adapters (alpha/rank)*B A on the `targets` layers (query_key_value, dense, dense_h_to_4h, dense_4h_to_h; default all) with the base weights frozen; base: the frozen weights (default: load, with finetune), recorded in every checkpoint. megatron_lite's own key (docs/cli.md#lora-low-rank-adapters).")
    reference_load: str | None = f(None, "DPO/KTO: checkpoint (ours or Hugging Face) of the frozen reference model; default: the weights training starts from (load with finetune, else the initialisation). Recorded in every checkpoint, so a resumed run keeps its reference. megatron_lite's own key.")


@dataclass(frozen=True)
class TokenizerConfig:
    """Which tokenizer reads and writes the text."""

    tokenizer_type: str = f("GPT2BPETokenizer", "HFTokenizer, HFGPT2Tokenizer, GPT2BPETokenizer, CharLevelTokenizer, SPMTokenizer or TiktokenTokenizer.")
    vocab_file: str | None = f(None, "tokenizers JSON (HFTokenizer), GPT-2 vocab.json, SentencePiece tokenizer.model (SPMTokenizer) or .tiktoken rank file (TiktokenTokenizer).")
    merge_file: str | None = f(None, "GPT-2 merges.txt (GPT2BPETokenizer / HFGPT2Tokenizer).")


@dataclass(frozen=True)
class CheckpointConfig:
    """Saving, loading, resuming and fine-tuning."""

    save: str | None = f(None, "Directory to save checkpoints to.")
    load: str | None = f(None, "Directory to load a checkpoint from (resume, or finetune source).")
    checkpoint_factor: int | None = f(None, "Save every this many iterations.")
    extra_save_iters: list | None = f(None, "Additional iterations to save at.")
    keep_last_n_checkpoints: int | None = f(None, "Delete older checkpoints, keeping this many.")
    finetune: bool = f(False, "Load weights only; start at iteration 0 with a fresh optimizer.")
    iteration: int | None = f(None, "Load this iteration instead of `latest`.")
    no_load_optim: bool = f(False, "Do not load optimizer state when resuming.")
    no_load_rng: bool = f(False, "Do not load RNG states when resuming.")


@dataclass(frozen=True)
class LoggingConfig:
    """Console, files, TensorBoard and wandb."""

    log_dir: str | None = f(None, "Run directory root: resolved config, log files, metrics.jsonl.")
    log_interval: int = f(100, "Log training metrics every this many iterations.")
    tensorboard_dir: str | None = f(None, "Write TensorBoard events here.")
    use_wandb: bool = f(False, "Log to Weights & Biases (WANDB_MODE=offline works without network).")
    wandb_project: str = f("neox", "wandb project.")
    wandb_group: str | None = f(None, "wandb group (also --wandb_group).")
    wandb_run_name: str | None = f(None, "wandb run name (also --wandb_run_name).")
    wandb_team: str | None = f(None, "wandb entity.")
    wandb_host: str = f("https://api.wandb.ai", "wandb server.")
    log_grad_norm: bool = f(True, "Log the global gradient norm.")
    log_all_ranks: bool = f(False, "Show INFO logs of every rank, not only rank 0.")


@dataclass(frozen=True)
class GenerationConfig:
    """Text generation (generate.py)."""

    text_gen_type: str = f("unconditional", "unconditional, input-file or interactive.")
    maximum_tokens: int = f(64, "Tokens to generate per sample.")
    prompt_end: str = f("\n", "Separator between prompts in the input file.")
    temperature: float = f(0.0, "Sampling temperature (0 = greedy).")
    top_k: int = f(0, "Keep the k most likely tokens (0 = off).")
    top_p: float = f(0.0, "Nucleus sampling mass (0 = off).")
    recompute: bool = f(False, "Recompute the whole context each step instead of using the KV cache.")
    num_samples: int = f(1, "Samples for unconditional generation.")
    sample_input_file: str | None = f(None, "Prompt file for input-file mode (also -i).")
    sample_output_file: str | None = f(None, "JSONL output for generated samples (also -o).")
    stop_strings: list | None = f(None, "Stop a sample when it produces one of these strings.")
    generation_batch_size: int = f(8, "Prompts generated together.")


@dataclass(frozen=True)
class EvaluationConfig:
    """lm-evaluation-harness and reference metrics (evaluate.py)."""

    eval_tasks: list | None = f(None, "Tasks for evaluate.py: lm-eval task names, perplexity, bleu_rouge (also --eval_tasks).")
    eval_num_fewshot: int | None = f(None, "Few-shot examples per task (None = the task's default; also --num_fewshot).")
    eval_limit: int | None = f(None, "Evaluate at most this many examples (documents, records) per task (also --limit).")
    eval_batch_size: int = f(8, "Requests per forward pass (also --batch_size).")
    eval_include_path: str | None = f(None, "Directory of extra lm-eval task YAMLs (also --include_path).")
    eval_results_prefix: str = f("eval_results", "File name prefix of the results JSON in log_dir.")
    eval_log_samples: bool = f(False, "Write every request and model response to samples_<task>.jsonl in the run directory.")
    eval_bootstrap_iters: int = f(100000, "Bootstrap iterations for lm-eval's standard errors (0 = none).")
    eval_perplexity_data: str | None = f(None, "Corpus of the perplexity task: a dataset prefix (.bin/.idx) or a .jsonl/.txt file.")
    eval_references_file: str | None = f(None, "Reference set of the bleu_rouge task: .jsonl of {prompt, reference} records.")


@dataclass(frozen=True)
class LauncherConfig:
    """Where and how deepy.py starts the workers (DeepSpeed runner options)."""

    hostfile: str | None = f(None, "DeepSpeed hostfile ('host slots=N' lines) for multi-node runs.")
    include: str | None = f(None, "DeepSpeed --include host/GPU filter.")
    exclude: str | None = f(None, "DeepSpeed --exclude host/GPU filter.")
    num_nodes: int = f(-1, "Nodes to use from the hostfile (-1 = all).")
    num_gpus: int | None = f(None, "Processes per node (default: all GPUs, or 1 on a CPU machine).")
    master_port: int | None = f(None, "Rendezvous port (default: a free port for a single-node run, 29500 across nodes).")
    master_addr: str | None = f(None, "Rendezvous address (default: first host).")
    launcher: str = f("pdsh", "Multi-node launcher: pdsh, openmpi, mvapich or slurm.")
    deepspeed_extra_args: dict = f({}, "Extra keys merged into the DeepSpeed config.")
    export_env_vars: list | None = f(None, "Environment variables to export to every rank on every node, besides HF_*, WANDB_*, TOKENIZERS_*, CUDA_*, NCCL_*, TORCH_*, OMP_*. megatron_lite's own key.")
    deepspeed_mpi: bool = f(False, "Ranks read their rank and world size from the MPI launcher's environment (OMPI_COMM_WORLD_*, MV2_COMM_WORLD_*, PMI_*), as GPT-NeoX; used anyway when no RANK is set.")
    deepspeed_slurm: bool = f(False, "Ranks read their rank and world size from srun's environment (SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID), as GPT-NeoX; used anyway when no RANK is set.")
    stop_grace_period: float | None = f(None, "Seconds the ranks get, after a stop signal to deepy.py (SIGTERM, SIGINT, SIGHUP), to save and exit before they are killed (None = as long as the save takes). megatron_lite's own key.")
    rendezvous_timeout: int = f(600, "Seconds a rank waits for the others at start-up (and for a collective) before failing. megatron_lite's own key.")
    cpu_keep_freed_memory: bool = f(True, "CPU workers: glibc malloc keeps freed memory for reuse (no page faults per step; RSS stays near its peak). megatron_lite's own key.")


@dataclass(frozen=True)
class Config:
    """The whole resolved run configuration. Frozen: runtime state lives on the trainer."""

    model: ModelConfig = field(default_factory=ModelConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    lr_schedule: LRScheduleConfig = field(default_factory=LRScheduleConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    data: DataConfig = field(default_factory=DataConfig)
    post_training: PostTrainingConfig = field(default_factory=PostTrainingConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    launcher: LauncherConfig = field(default_factory=LauncherConfig)

    def to_flat_dict(self) -> dict[str, Any]:
        """All keys, flat, as a GPT-NeoX YAML file spells them."""
        flat: dict[str, Any] = {}
        for group_field in fields(self):
            group = getattr(self, group_field.name)
            for fld in fields(group):
                flat[fld.name] = getattr(group, fld.name)
        return flat


GROUP_CLASSES: dict[str, type] = {
    "model": ModelConfig,
    "parallel": ParallelConfig,
    "optimizer": OptimizerConfig,
    "lr_schedule": LRScheduleConfig,
    "training": TrainingConfig,
    "data": DataConfig,
    "post_training": PostTrainingConfig,
    "tokenizer": TokenizerConfig,
    "checkpoint": CheckpointConfig,
    "logging": LoggingConfig,
    "generation": GenerationConfig,
    "evaluation": EvaluationConfig,
    "launcher": LauncherConfig,
}


def key_index() -> dict[str, tuple[str, Any]]:
    """Map every flat key to (group name, dataclass field)."""
    index: dict[str, tuple[str, Any]] = {}
    for group_name, cls in GROUP_CLASSES.items():
        for fld in fields(cls):
            assert fld.name not in index, f"config key {fld.name} defined twice"
            index[fld.name] = (group_name, fld)
    return index
