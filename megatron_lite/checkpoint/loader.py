"""The one loader: weights from our checkpoints (any tp/pp layout) or a Hugging Face GPTNeoX,
Llama or Mistral directory, for every reader (the Python API, generation, evaluation, fine-tuning, the tools).

    cfg, full, tokenizer, vocab = load_weights(path)            # full tp = 1 state dict
    load_model_weights(module, run_cfg, tp_rank, pipelined)      # this rank's share, in place
    model, tokenizer = load_model(path)                          # one process, eval mode
    model, tokenizer = load_reward_model(path)                   # a reward model (train_impl: rm)

Everything is merged into one full state dict first (tensor-parallel shards and pipeline layer
files become the tp = 1 names), then cut for the reader's layout, so any layout loads into any
other and no ``torch.distributed`` is needed to read.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from megatron_lite.checkpoint.hf import (
    is_hf_dir,
    model_keys_from_hf,
    read_hf_config,
    read_hf_dir,
    weights_from_hf,
)
from megatron_lite.checkpoint.hf_reward import is_reward_state_dict as is_reward
from megatron_lite.checkpoint.layout import (
    TOKENIZER_DIR,
    CheckpointError,
    read_meta,
    read_step_config,
    resolve_step_dir,
)
from megatron_lite.checkpoint.lora import lora_base_dir, merge_adapters, read_adapters
from megatron_lite.checkpoint.weights import (
    fit_vocab_rows,
    pipeline_key_to_model,
    read_full_state_dict,
    shard_state_dict,
)
from megatron_lite.config import Config, config_from_flat, pad_vocab_size
from megatron_lite.config.derived import GLU_ACTIVATIONS, resolve
from megatron_lite.config.lora import LoraSettings
from megatron_lite.config.schema import ModelConfig
from megatron_lite.model.causal_lm import CausalLM
from megatron_lite.model.gpt import GPTModel
from megatron_lite.model.reward import REWARD_HEAD_KEY, RewardModel
from megatron_lite.tokenizer import build_tokenizer_from
from megatron_lite.utils.logging import get_logger

logger = get_logger(__name__)

Loaded = tuple[ModelConfig, dict[str, torch.Tensor], Any, int]


def _hf_tokenizer(path: str) -> Any:
    tok_file = os.path.join(path, "tokenizer.json")
    if not os.path.isfile(tok_file):
        logger.info("%s has no tokenizer.json: no tokenizer returned", path)
        return None
    try:
        return build_tokenizer_from("HFTokenizer", tok_file)
    except ValueError as exc:  # e.g. no end-of-document token: the model itself is still usable
        logger.warning("tokenizer of %s not loaded: %s", path, exc)
        return None


def _hf_model(path: str) -> Loaded:
    keys = model_keys_from_hf(read_hf_config(path))  # an unsupported model fails before any read
    hf_config, weights = read_hf_dir(path)
    tokenizer = _hf_tokenizer(path)
    vocab = hf_config["vocab_size"]
    rows = max(vocab, tokenizer.vocab_size if tokenizer else 0)
    flat = {**keys, "padded_vocab_size": pad_vocab_size(rows, 128, 1),
            "make_vocab_size_divisible_by": 128, "tokenizer_type": "HFTokenizer"}
    cfg = resolve(config_from_flat(flat), 1).model
    full = weights_from_hf(hf_config, weights, cfg)
    check_shapes(cfg, full, path)
    return cfg, full, tokenizer, vocab


def _checkpoint_tokenizer(step: str, flat: dict[str, Any]) -> Any:
    """The tokenizer saved with the checkpoint (its tokenizer/ copies), else the files the
    config names if they still exist, else None."""
    kind = flat.get("tokenizer_type", "GPT2BPETokenizer")
    if kind == "CharLevelTokenizer":
        return build_tokenizer_from(kind)
    files = [flat.get("vocab_file"), flat.get("merge_file")]
    local = [os.path.join(step, TOKENIZER_DIR, os.path.basename(f)) if f else None for f in files]
    for candidate in (local, files):
        if candidate[0] and os.path.isfile(candidate[0]):
            return build_tokenizer_from(kind, *candidate)
    logger.warning("%s carries no tokenizer files (%s): no tokenizer returned", step, kind)
    return None


def _checkpoint_model(step: str) -> Loaded:
    flat = read_step_config(step)
    cfg = config_from_flat(flat)  # the saved, already resolved values (padded vocab included)
    tokenizer = _checkpoint_tokenizer(step, flat)
    glu = cfg.model.activation in GLU_ACTIVATIONS
    full = _lora_weights(step, cfg, glu) if cfg.post_training.lora else read_full_state_dict(step, glu=glu)
    # The vocabulary the model was made for: recorded at save/convert time (a converted HF model
    # keeps its own, possibly padded, size), else the tokenizer's.
    vocab = read_meta(step).vocab_size or (tokenizer.vocab_size if tokenizer else cfg.model.padded_vocab_size)
    return cfg.model, full, tokenizer, vocab


def _lora_weights(step: str, cfg: Config, glu: bool) -> dict[str, torch.Tensor]:
    """A LoRA checkpoint's weights: its recorded base with its adapters merged in
    (``checkpoint/lora.py``); without a base, the initialisation of the run's seed, which every
    layout draws alike (``parallel/layers.py``)."""
    lora = cfg.post_training.lora
    base = lora_base_dir(step, lora)
    if base is None:
        base_full = GPTModel(cfg.model, seed=cfg.training.seed).state_dict()
    else:
        base_full = load_weights(base)[1]
    base_full = fit_vocab_rows(base_full, cfg.model.padded_vocab_size)
    return merge_adapters(base_full, read_adapters(step, glu), LoraSettings.of(lora).scaling)


def load_weights(path: str, iteration: int | None = None) -> Loaded:
    """(model config, full tp=1 state dict, tokenizer or None, real vocab size) of a checkpoint
    directory (ours, any layout) or a Hugging Face GPTNeoX, Llama or Mistral directory.

    Reading ``latest`` of a directory that a running job rotates can race with the deletion of
    that step: the read is retried once on the new ``latest``, else it is one error."""
    if is_hf_dir(path):
        return _hf_model(path)
    step = resolve_step_dir(path, iteration)
    try:
        return _checkpoint_model(step)
    except (CheckpointError, FileNotFoundError) as exc:
        if iteration is not None or _still_latest(path, step):
            raise
        logger.warning("%s moved on while %s was read (%s): reading its new 'latest'", path, step, exc)
        return _checkpoint_model(resolve_step_dir(path))


def _still_latest(path: str, step: str) -> bool:
    try:
        return os.path.samefile(resolve_step_dir(path), step)
    except (CheckpointError, OSError):
        return False


def model_vocab_size(path: str, iteration: int | None, tokenizer_vocab: int) -> tuple[int, int]:
    """(vocabulary the model's softmax covers, checkpoint iteration) of ``path``: a Hugging Face
    directory's ``vocab_size``, else what the checkpoint recorded, else the tokenizer's."""
    if is_hf_dir(path):
        return int(read_hf_config(path)["vocab_size"]), 0
    meta = read_meta(resolve_step_dir(path, iteration))
    return meta.vocab_size or tokenizer_vocab, meta.iteration


def check_weights_fit(model: nn.Module, full: dict[str, torch.Tensor], source: str) -> None:
    """Every parameter present with the right shape, nothing extra; else a CheckpointError
    naming ``source`` (a missing tensor-parallel shard shows up here as a wrong shape)."""
    own = model.state_dict()
    missing = sorted(set(own) - set(full))
    extra = sorted(set(full) - set(own))
    # In the model's order: the first listed is the first parameter that differs.
    wrong = [f"{k} is {tuple(full[k].shape)}, the config gives {tuple(v.shape)}" for k, v in own.items()
             if k in full and full[k].shape != v.shape]
    problems = [f"{label}: {', '.join(items[:4])}" + (" ..." if len(items) > 4 else "")
                for label, items in (("missing", missing), ("unexpected", extra), ("shape", wrong)) if items]
    if problems:
        raise CheckpointError(f"{source}: weights do not fit the model ({'; '.join(problems)})")


def check_shapes(cfg: ModelConfig, full: dict[str, torch.Tensor], source: str) -> None:
    """``check_weights_fit`` against the model ``cfg`` describes, built on the meta device (no
    memory, no init): weights that disagree with their config fail here, naming the parameter,
    rather than in a converter's or transformers' code."""
    with torch.device("meta"):
        model = RewardModel(cfg) if is_reward(full) else GPTModel(cfg)
    check_weights_fit(model, full, source)


def reward_model_error(source: str, what: str) -> CheckpointError:
    """The one-line refusal of a reward model where a language model is needed for ``what``."""
    return CheckpointError(f"{source} is a reward model (train_impl: rm): it has a scalar reward head "
                           f"({REWARD_HEAD_KEY}) and no LM head, so it cannot {what}")


def load_model(path: str, device: str | torch.device = "cpu", iteration: int | None = None) -> tuple[CausalLM, Any]:
    """``(model, tokenizer)``: the model in eval mode on ``device``, tokenizer or None.

    ``path``: one of our checkpoint directories (``save``/``load``, or a ``global_step<N>``
    directory; ``iteration`` picks a step, default ``latest``) or a Hugging Face GPTNeoX, Llama
    or Mistral directory (config.json + model.safetensors / pytorch_model.bin, sharded or not).
    """
    if not os.path.isdir(path):
        raise CheckpointError(f"model directory not found: {path}")
    cfg, full, tokenizer, vocab = load_weights(path, iteration)
    if is_reward(full):  # a CausalLM with the embedding as head would be silently wrong
        raise reward_model_error(path, "load as a language model (load_reward_model loads it)")
    gpt = GPTModel(cfg)
    check_weights_fit(gpt, full, path)
    gpt.load_state_dict(full, strict=True)
    logger.info("loaded %s: %d layers, hidden %d, vocab %d", path, cfg.num_layers, cfg.hidden_size, vocab)
    return CausalLM(gpt, vocab).to(device).eval(), tokenizer


def load_reward_model(path: str, device: str | torch.device = "cpu",
                      iteration: int | None = None) -> tuple[RewardModel, Any]:
    """``(model, tokenizer)`` of a reward-model checkpoint (``path``, ``iteration``: as
    ``load_model``), the model in eval mode on ``device``: tokens [b, s] -> a value at every
    position [b, s]; the reward is the value at a sequence's last token (its last label in
    training), e.g. the ``<eod>`` after the text for GPT-NeoX's ``--for-rm`` data."""
    if not os.path.isdir(path):
        raise CheckpointError(f"model directory not found: {path}")
    cfg, full, tokenizer, _ = load_weights(path, iteration)
    if not is_reward(full):
        raise CheckpointError(f"{path} is a language model, not a reward model (no {REWARD_HEAD_KEY}): "
                              "load it with load_model")
    model = RewardModel(cfg)
    check_weights_fit(model, full, path)
    model.load_state_dict(full, strict=True)
    logger.info("loaded reward model %s: %d layers, hidden %d", path, cfg.num_layers, cfg.hidden_size)
    return model.to(device).eval(), tokenizer


def load_model_weights(module: nn.Module, cfg: Config, tp_rank: int, pipelined: bool,
                       new_heads: tuple[str, ...] = (), lm_head_for: str | None = None) -> None:
    """Weights only, from ``load`` (our checkpoint of any layout, or a Hugging Face GPTNeoX,
    Llama or Mistral directory), into this rank's (tensor/pipeline) part of ``module``: fine-tuning, resuming a
    weights-only checkpoint, generation and evaluation workers. ``new_heads``: parameters (full
    model names) the source may lack, which then keep their initialisation (a reward head on
    a language model). ``lm_head_for``: what the caller needs the LM head for (generation,
    evaluation); a reward model's checkpoint is then refused, naming it, where with tied
    embeddings it would otherwise load as a language model without its head."""
    source = cfg.checkpoint.load
    source_cfg, full, _, _ = load_weights(source, cfg.checkpoint.iteration)
    if lm_head_for is not None and is_reward(full):
        raise reward_model_error(source, lm_head_for)
    if is_hf_dir(source):
        check_same_architecture(source, {k: getattr(source_cfg, k) for k in _ARCHITECTURE_KEYS}, cfg)
    if source_cfg.mlp_inner_size != cfg.model.mlp_inner_size:
        # Likely a config written for the old meaning of intermediate_size with swiglu/geglu.
        raise CheckpointError(
            f"{source}: its MLP width (mlp_inner_size) is {source_cfg.mlp_inner_size}, the config's "
            f"{cfg.model.mlp_inner_size}: intermediate_size follows GPT-NeoX's rules (docs/model.md); "
            f"ffn_hidden_size: {source_cfg.mlp_inner_size} sets the width itself")
    full = fit_vocab_rows(full, cfg.model.padded_vocab_size)
    glu = cfg.model.activation in GLU_ACTIVATIONS
    shard = shard_state_dict(full, cfg.parallel.model_parallel_size, tp_rank, glu)
    own = module.state_dict()
    names = {key: pipeline_key_to_model(key, cfg.model.num_layers) if pipelined else key for key in own}
    fresh = [key for key, name in names.items() if name in new_heads and name not in shard]
    if fresh:
        logger.info("%s has no %s: initialised", source, ", ".join(names[key] for key in fresh))
        names = {key: name for key, name in names.items() if key not in fresh}
    missing = [name for name in names.values() if name not in shard]
    if missing:
        raise CheckpointError(f"{source} lacks weights for {', '.join(missing[:5])}")
    for key, name in names.items():
        if shard[name].shape != own[key].shape:
            raise CheckpointError(
                f"{source}: {name} has shape {tuple(shard[name].shape)}, the model expects "
                f"{tuple(own[key].shape)} (a different model shape in the config?)")
    module.load_state_dict({key: shard[name] for key, name in names.items()}, strict=not fresh)
    logger.info("loaded model weights from %s", source)


_ARCHITECTURE_KEYS = ("num_layers", "hidden_size", "num_attention_heads", "num_kv_heads", "mlp_inner_size",
                      "pos_emb", "rotary_pct", "rotary_emb_base", "rope_scaling", "sliding_window_width",
                      "gpt_j_residual", "no_weight_tying", "activation", "norm")


def check_same_architecture(source: str, hf_keys: dict[str, Any], cfg: Config) -> None:
    """Weights of matching shapes can still belong to another architecture (rotary fraction,
    residual style, activation): compare with the Hugging Face model's config first."""
    differ = [f"{k}: config {getattr(cfg.model, k)!r}, {source} {hf_keys[k]!r}"
              for k in _ARCHITECTURE_KEYS if k in hf_keys and getattr(cfg.model, k) != hf_keys[k]]
    if differ:
        raise CheckpointError("the run's model config differs from the Hugging Face model it loads: "
                              + "; ".join(differ) + " (tools/convert_from_hf.py writes a matching config.yml)")


def pinned_source(path: str, iteration: int | None = None) -> str:
    """``path`` as a fixed source: a Hugging Face directory, or the step directory ``latest``
    (or ``iteration``) names now, so that later saves into ``path`` do not move it (the frozen
    reference of DPO/KTO, the base of LoRA)."""
    if is_hf_dir(path):
        return os.path.abspath(path)
    return os.path.abspath(resolve_step_dir(path, iteration))
