"""Derived values and validation, as GPT-NeoX derives them, before any process starts.

``resolve(cfg, world_size)`` returns a new frozen ``Config`` whose derived fields are filled
in (world and data-parallel size, the batch triple, precision, learning rate, decay iters,
padded vocabulary, ...) and raises ``ConfigError`` with the reason for any invalid combination.
"""

from __future__ import annotations

import math
import os
from dataclasses import replace
from typing import Any

from megatron_lite.config.attention_options import canonical_rope_scaling, check_sliding_window
from megatron_lite.config.loader import ConfigError
from megatron_lite.config.lora import derive_lora
from megatron_lite.config.neox_compat import SUPPORTED_ATTENTION_TYPES
from megatron_lite.config.post_training import check_post_training
from megatron_lite.config.schema import Config, ModelConfig
from megatron_lite.config.validators import (
    check_learning_rate,
    check_ranges,
    parse_split,
    split_paths,
)

OPTIMIZER_TYPES = {"adam": "Adam", "adamw": "AdamW", "sgd": "SGD"}
GLU_ACTIVATIONS = ("swiglu", "geglu")


def pipe_stages(pipe_parallel_size: int) -> int:
    """``pipe_parallel_size: 0`` means no pipeline module, which is one stage."""
    return max(pipe_parallel_size, 1)


def pad_vocab_size(vocab_size: int, divisible_by: int, model_parallel_size: int) -> int:
    """Smallest multiple of ``divisible_by * model_parallel_size`` that holds the vocab."""
    multiple = divisible_by * model_parallel_size
    return int(math.ceil(vocab_size / multiple) * multiple)


def solve_batch_triple(
    train_batch: int | None, micro: int | None, gas: int | None, dp: int
) -> tuple[int | None, int | None, int | None]:
    """GPT-NeoX's rule: any two of the triple give the third; one alone assumes gas=1."""
    if train_batch is not None and micro is not None and gas is not None:
        pass
    elif train_batch is not None and micro is not None:
        gas = train_batch // (micro * dp)
    elif train_batch is not None and gas is not None:
        micro = train_batch // (gas * dp)
    elif micro is not None and gas is not None:
        train_batch = micro * gas * dp
    elif train_batch is not None:
        gas = 1
        micro = train_batch // dp
    elif micro is not None:
        gas = 1
        train_batch = micro * dp
    else:
        return None, None, None
    if micro < 1 or gas < 1 or train_batch != micro * gas * dp:
        raise ConfigError(
            f"batch sizes do not fit the data-parallel size {dp}: need train_batch_size "
            f"({train_batch}) = train_micro_batch_size_per_gpu ({micro}) * "
            f"gradient_accumulation_steps ({gas}) * data-parallel size ({dp})"
        )
    return train_batch, micro, gas


def _derive_parallel(cfg: Config, world_size: int) -> Config:
    par = cfg.parallel
    tp, stages = par.model_parallel_size, pipe_stages(par.pipe_parallel_size)
    if tp < 1 or par.pipe_parallel_size < 0:
        raise ConfigError("model_parallel_size must be >= 1 and pipe_parallel_size >= 0")
    if world_size % (tp * stages):
        raise ConfigError(
            f"world size {world_size} is not divisible by model_parallel_size ({tp}) * "
            f"pipeline stages ({stages}); change num_gpus or the parallel sizes"
        )
    if par.global_num_gpus is not None and par.global_num_gpus != world_size:
        raise ConfigError(
            f"global_num_gpus: {par.global_num_gpus} but the run has {world_size} ranks"
        )
    dp = world_size // (tp * stages)
    if par.data_parallel_size is not None and par.data_parallel_size != dp:
        raise ConfigError(f"data_parallel_size: {par.data_parallel_size} but the layout gives {dp}")
    stage = _zero_stage(par.zero_optimization)
    if stage >= 2 and par.pipe_parallel_size >= 1:
        raise ConfigError(
            f"zero_optimization.stage {stage} cannot run with pipe_parallel_size "
            f"{par.pipe_parallel_size}: DeepSpeed's pipeline engine supports ZeRO stages 0 and 1; "
            "use stage 1, or pipe_parallel_size: 0"
        )
    return replace(cfg, parallel=replace(par, global_num_gpus=world_size, data_parallel_size=dp))


def _zero_stage(zero: dict[str, Any]) -> int:
    stage = zero.get("stage", 0)
    if not isinstance(stage, int) or isinstance(stage, bool) or not 0 <= stage <= 3:
        raise ConfigError(f"zero_optimization.stage must be 0, 1, 2 or 3, got {stage!r}")
    return stage


def _derive_batch(cfg: Config) -> Config:
    tr = cfg.training
    train_batch, micro, gas = solve_batch_triple(
        tr.train_batch_size,
        tr.train_micro_batch_size_per_gpu,
        tr.gradient_accumulation_steps,
        cfg.parallel.data_parallel_size,
    )
    if tr.train_iters is not None and tr.train_epochs is not None:
        raise ConfigError("set train_iters or train_epochs, not both")
    return replace(
        cfg,
        training=replace(
            tr,
            train_batch_size=train_batch,
            train_micro_batch_size_per_gpu=micro,
            gradient_accumulation_steps=gas,
            precision=_derive_precision(tr.fp16, tr.bf16, tr.precision),
        ),
    )


def _derive_precision(fp16: dict, bf16: dict, precision: str | None) -> str:
    fp16_on, bf16_on = bool(fp16.get("enabled", False)), bool(bf16.get("enabled", False))
    if fp16_on and bf16_on:
        raise ConfigError("fp16.enabled and bf16.enabled are both true; choose one precision")
    from_dicts = "fp16" if fp16_on else "bfloat16" if bf16_on else None
    if precision is not None and from_dicts is not None and precision != from_dicts:
        raise ConfigError(f"precision: {precision} contradicts the enabled {from_dicts} section")
    return precision or from_dicts or "fp32"


def gpt_neox_mlp_width(hidden_size: int, activation: str, intermediate_size: int | None = None,
                       expansion_factor: float | None = None, multiple_of: int = 1) -> int:
    """The MLP inner width (``dense_4h_to_h``'s input) that GPT-NeoX's ``ParallelMLP`` builds
    (``megatron/model/transformer.py``):

        width = intermediate_size, else int(expansion_factor * hidden_size), else 4 * hidden_size
        gated (swiglu, geglu): width = int(width * 2 / 3) // 2   (value and gate share the 2/3)
        inner = width rounded up to a multiple of mlp_multiple_of

    so llama-7B's ``intermediate_size: 32768`` with ``mlp_multiple_of: 256`` gives 11008. GPT-NeoX
    rounds its up projection on its own, to a multiple of 2 * mlp_multiple_of; where that is not
    (2 for gated) x inner, its two projections do not fit and its model fails at the first
    forward: we build the down projection's width, the one that defines every model it can run.
    """
    if intermediate_size:
        width = intermediate_size
    elif expansion_factor:
        width = int(expansion_factor * hidden_size)
    else:
        width = 4 * hidden_size
    if activation in GLU_ACTIVATIONS:
        width = int(width * 2 / 3) // 2
    return -(-width // multiple_of) * multiple_of


def _derive_mlp_inner_size(m: ModelConfig) -> int | None:
    """GPT-NeoX's keys decide the width; without them a set ``mlp_inner_size`` (Megatron-LM's
    ``ffn_hidden_size``, or a resolved config read back) is the literal width."""
    for key in ("intermediate_size", "mlp_multiple_of", "mlp_inner_size"):
        if getattr(m, key) is not None and getattr(m, key) < 1:
            raise ConfigError(f"{key} must be >= 1, got {getattr(m, key)}")
    if m.expansion_factor is not None and m.expansion_factor <= 0:
        raise ConfigError(f"expansion_factor must be > 0, got {m.expansion_factor}")
    if m.intermediate_size is not None and m.expansion_factor is not None:
        raise ConfigError("set intermediate_size or expansion_factor, not both (GPT-NeoX refuses the pair)")
    neox_keys = m.intermediate_size is not None or m.expansion_factor is not None or m.mlp_multiple_of != 1
    if m.hidden_size is None or (m.mlp_inner_size is not None and not neox_keys):
        return m.mlp_inner_size
    width = gpt_neox_mlp_width(m.hidden_size, m.activation, m.intermediate_size, m.expansion_factor,
                               m.mlp_multiple_of)
    if m.mlp_inner_size is not None and m.mlp_inner_size != width:
        raise ConfigError(
            f"mlp_inner_size (ffn_hidden_size) is {m.mlp_inner_size} but intermediate_size "
            f"{m.intermediate_size}, expansion_factor {m.expansion_factor} and mlp_multiple_of "
            f"{m.mlp_multiple_of} give {width} (docs/model.md); set one or the other"
        )
    return width


def _derive_model(cfg: Config) -> Config:
    m, tp = cfg.model, cfg.parallel.model_parallel_size
    max_pos = m.max_position_embeddings or m.seq_length
    inner = _derive_mlp_inner_size(m)
    padded = m.padded_vocab_size
    vocab = _tokenizer_vocab_size(cfg)
    if vocab is not None:
        computed = pad_vocab_size(vocab, m.make_vocab_size_divisible_by, tp)
        if padded is not None and padded != computed:
            raise ConfigError(
                f"padded_vocab_size: {padded} but the tokenizer ({vocab} tokens) pads to {computed}"
            )
        padded = computed
    return replace(
        cfg,
        model=replace(m, max_position_embeddings=max_pos, mlp_inner_size=inner, padded_vocab_size=padded,
                      rope_scaling=canonical_rope_scaling(m.rope_scaling, m.pos_emb)),
    )


def _tokenizer_vocab_size(cfg: Config) -> int | None:
    """The tokenizer's vocabulary size when it can be read cheaply (file present), else None.

    A tokenizer file that does not parse is a ``ConfigError`` naming it (one line from deepy.py).
    """
    tok = cfg.tokenizer
    # GPT-NeoX's TiktokenTokenizer form: an encoding name, read from tiktoken's cache if there.
    named = tok.tokenizer_type == "TiktokenTokenizer" and tok.vocab_file and not os.path.exists(tok.vocab_file)
    if tok.tokenizer_type != "CharLevelTokenizer" and not named and not (
        tok.vocab_file and os.path.isfile(tok.vocab_file)
    ):
        return None
    from megatron_lite.tokenizer import vocab_size_of

    if tok.merge_file and not os.path.isfile(tok.merge_file):
        return None
    try:
        return vocab_size_of(tok.tokenizer_type, tok.vocab_file, tok.merge_file)
    except FileNotFoundError:  # a tiktoken vocab_file that is neither a file nor a known name
        return None
    except ValueError as exc:  # JSONDecodeError included, whose message names no file
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(msg if tok.vocab_file in msg else f"vocab_file: {tok.vocab_file}: {msg}") from None


def _derive_optimizer(cfg: Config) -> Config:
    opt = cfg.optimizer
    section = opt.optimizer or {}
    kind = str(section.get("type", "Adam"))
    if kind.lower() not in OPTIMIZER_TYPES:
        raise ConfigError(
            f"optimizer.type: {kind!r} is not implemented in megatron_lite "
            f"(supported: {', '.join(OPTIMIZER_TYPES.values())})"
        )
    params = dict(section.get("params", {}))
    lr = opt.lr if opt.lr is not None else params.get("lr")
    if lr is None:
        raise ConfigError("no learning rate: set optimizer.params.lr (or lr)")
    params["lr"] = float(lr)
    section = {"type": OPTIMIZER_TYPES[kind.lower()], "params": params}
    sched = cfg.lr_schedule
    decay_iters = sched.lr_decay_iters if sched.lr_decay_iters is not None else cfg.training.train_iters
    return replace(
        cfg,
        optimizer=replace(opt, optimizer=section, lr=float(lr)),
        lr_schedule=replace(sched, lr_decay_iters=decay_iters),
    )


def validate(cfg: Config) -> None:
    """Every invalid combination we can see without touching data or devices."""
    m, tp = cfg.model, cfg.parallel.model_parallel_size
    if m.num_attention_heads is not None:
        if m.num_attention_heads % tp:
            raise ConfigError(
                f"num_attention_heads ({m.num_attention_heads}) is not divisible by "
                f"model_parallel_size ({tp})"
            )
        if m.hidden_size is not None and m.hidden_size % m.num_attention_heads:
            raise ConfigError(
                f"hidden_size ({m.hidden_size}) is not divisible by num_attention_heads "
                f"({m.num_attention_heads})"
            )
        kv = m.num_kv_heads
        _check_attention_type(m.attention_type, kv, m.num_attention_heads)
        if kv is not None and (kv < 1 or m.num_attention_heads % kv or kv % tp):
            raise ConfigError(
                f"num_kv_heads ({kv}) must divide num_attention_heads ({m.num_attention_heads}) "
                f"and be divisible by model_parallel_size ({tp})"
            )
    if m.mlp_inner_size is not None and m.mlp_inner_size % tp:
        raise ConfigError(f"the MLP width, mlp_inner_size ({m.mlp_inner_size}), is not divisible by "
                          f"model_parallel_size ({tp})")
    if cfg.parallel.sequence_parallel and m.seq_length is not None and m.seq_length % tp:
        raise ConfigError(f"sequence_parallel: seq_length ({m.seq_length}) is not divisible by "
                          f"model_parallel_size ({tp})")
    if m.seq_length is not None and m.max_position_embeddings is not None:
        if m.seq_length > m.max_position_embeddings:
            raise ConfigError(
                f"seq_length ({m.seq_length}) exceeds max_position_embeddings "
                f"({m.max_position_embeddings})"
            )
    check_sliding_window(m.sliding_window_width)
    if not 0.0 < m.rotary_pct <= 1.0:
        raise ConfigError(f"rotary_pct must be in (0, 1], got {m.rotary_pct}")
    for key in ("hidden_dropout", "attention_dropout"):
        if not 0.0 <= getattr(m, key) < 1.0:
            raise ConfigError(f"{key} must be in [0, 1), got {getattr(m, key)}")
    _validate_attention_config(m.attention_config, m.num_layers)
    check_learning_rate(cfg.optimizer.lr)
    _validate_schedule(cfg)
    _validate_data(cfg)
    check_post_training(cfg)
    la = cfg.launcher
    if (la.include or la.exclude) and (la.num_gpus is not None or la.num_nodes > 0):
        raise ConfigError("include/exclude cannot be combined with num_gpus or num_nodes (DeepSpeed's "
                          "runner refuses the mix): select hosts and GPUs with include/exclude alone")


def _attention_types(spec: list, num_layers: int | None) -> list[str]:
    """GPT-NeoX's ``expand_attention_types``: ``[[types], count]`` repeats the pattern ``types``
    ``count`` times (len(types) * count layers); a count of ``"all"`` makes that pattern, tiled
    over every layer, the whole answer (GPT-NeoX returns it at once, whatever came before); a
    flat list of names is already one entry per layer."""
    if all(isinstance(entry, str) for entry in spec):
        return list(spec)
    layers: list[str] = []
    for entry in spec:
        if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], list)
                and (isinstance(entry[1], int) or entry[1] == "all")):
            raise ConfigError(f"attention_config: expected [[types], count] entries, got {entry!r}")
        types, count = entry
        if count == "all":
            if num_layers is None or not types or num_layers % len(types):
                raise ConfigError(f"attention_config: {entry!r} must tile num_layers ({num_layers})")
            return types * (num_layers // len(types))
        layers += types * count
    return layers


def _validate_attention_config(spec: list, num_layers: int | None) -> None:
    if not spec:
        return
    layers = _attention_types(spec, num_layers)
    for kind in layers:
        if kind not in SUPPORTED_ATTENTION_TYPES:
            raise ConfigError(
                f"attention_config: {kind!r} attention is not implemented in megatron_lite "
                "(supported: global, flash; both run scaled_dot_product_attention)"
            )
    if num_layers is not None and len(layers) != num_layers:
        raise ConfigError(f"attention_config covers {len(layers)} layers but num_layers is {num_layers}")


def _validate_schedule(cfg: Config) -> None:
    if not 0.0 <= cfg.lr_schedule.warmup <= 1.0:
        raise ConfigError(f"warmup is a fraction of lr_decay_iters in [0, 1], got {cfg.lr_schedule.warmup}")
    for key in ("eval_interval", "eval_iters"):
        if getattr(cfg.training, key) < 0:
            raise ConfigError(f"{key} must be >= 0")
    if cfg.logging.log_interval < 1:
        raise ConfigError("log_interval must be >= 1")


def _validate_data(cfg: Config) -> None:
    # The data layer calls the same validators at run time (config/validators.py).
    parse_split(cfg.data.split)
    for which in ("train", "valid", "test"):
        split_paths(cfg.data, which)


def resolve(cfg: Config, world_size: int) -> Config:
    """Fill in derived values for ``world_size`` ranks and validate the result."""
    check_ranges(cfg)  # before any derivation divides by a zero
    for step in (_derive_parallel, _derive_batch, _derive_model, _derive_optimizer, derive_lora):
        cfg = step(cfg, world_size) if step is _derive_parallel else step(cfg)
    validate(cfg)
    return cfg


def _check_attention_type(kind: str | None, kv: int | None, heads: int) -> None:
    """``attention_type`` (llemma's configs) must agree with ``num_kv_heads``, which decides."""
    grouped = kv is not None and kv != heads
    if kind not in (None, "multihead", "groupedquery"):
        raise ConfigError(f"attention_type: {kind!r} is not implemented (multihead or groupedquery)")
    if kind == "groupedquery" and not grouped:
        raise ConfigError(f"attention_type: groupedquery needs num_kv_heads below num_attention_heads ({heads})")
    if kind == "multihead" and grouped:
        raise ConfigError(f"attention_type: multihead contradicts num_kv_heads: {kv}")
