"""Reward models (``train_impl: rm``) -> Hugging Face ``...ForSequenceClassification``.

A reward checkpoint is the GPT body with ``lm_head.rm_linear.weight`` [1, h] in place of the LM
head. transformers' ``GPTNeoXForSequenceClassification`` / ``LlamaForSequenceClassification`` /
``MistralForSequenceClassification`` are the same body with ``score.weight`` [num_labels, h]
(no bias) on every position: with ``num_labels: 1`` the head is ours, and the body converts
exactly as the causal-LM export does (``hf.py``, ``hf_llama.py``).

Where the reward is read. Ours: at the last label position of the sequence (GPT-NeoX's
``--for-rm`` data: ``text <eod>``, read at the ``<eod>``), which is the last token the model is
given. transformers: at the rightmost token that is not ``pad_token_id`` (for any padding
side). The two agree whenever the scored sequence does not end with the pad token, so
``pad_token_id`` is the tokenizer's pad when it differs from the end-of-document token. A
tokenizer that pads with its end-of-document token (GPT-2's files, tokenizer.json files
without ``<|padding|>``) would make transformers skip the very ``<eod>`` the reward is read
at, one position too early, silently: then ``pad_token_id`` is left unset, so transformers
scores one unpadded sequence at a time exactly (its last token) and refuses a padded batch.
"""

from __future__ import annotations

from typing import Any

import torch

from megatron_lite.checkpoint.hf import check_exportable, hf_config_dict, state_dict_to_hf
from megatron_lite.checkpoint.hf_common import UnsupportedForHF, save_with_transformers
from megatron_lite.checkpoint.hf_llama import llama_config_dict, state_dict_to_llama
from megatron_lite.config.schema import ModelConfig
from megatron_lite.model.reward import REWARD_HEAD_KEY
from megatron_lite.utils.logging import get_logger

logger = get_logger(__name__)

CAUSAL, CLASSIFIER = "ForCausalLM", "ForSequenceClassification"
SCORE = "score.weight"  # transformers' head of every ...ForSequenceClassification


def is_reward_state_dict(full: dict[str, torch.Tensor]) -> bool:
    """A reward model's weights (ours, full or a shard): its scalar head instead of an LM head."""
    return REWARD_HEAD_KEY in full


def classifier_architecture(causal: str) -> str:
    """``GPTNeoXForCausalLM`` -> ``GPTNeoXForSequenceClassification`` (and Llama, Mistral)."""
    return causal.replace(CAUSAL, CLASSIFIER)


def causal_architecture(name: str | None) -> str | None:
    """The causal-LM name of a requested architecture, either spelling (None stays None)."""
    return name.replace(CLASSIFIER, CAUSAL) if name else name


def reward_pad_token(eod: int | None, pad: int | None) -> tuple[int | None, str]:
    """(``pad_token_id`` for config.json, a note for the report): module docstring."""
    if pad is not None and pad != eod:
        return pad, f"reward at the last token before padding (pad_token_id {pad})"
    logger.warning("the tokenizer pads with its end-of-document token (or there is none): pad_token_id "
                   "is left unset, so transformers scores one unpadded sequence at a time "
                   "(docs/finetuning.md#exporting-a-reward-model)")
    return None, "pad_token_id unset (the tokenizer pads with end-of-document): score one sequence at a time"


def _config(cfg: ModelConfig, vocab: int, eod: int | None, pad_token_id: int | None,
            causal: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(config.json content, legacy top-level keys) of the classifier: the causal LM's, with
    one label and no tied head (there is no LM head); ``pad_token_id``: ``reward_pad_token``'s."""
    if causal == "GPTNeoXForCausalLM":
        config = hf_config_dict(cfg, vocab, eod, pad_token_id)
        # Older transformers (and other GPT-NeoX readers) look for the top-level rotary keys.
        legacy = {k: config.pop(k) for k in ("rotary_pct", "rotary_emb_base")}
    else:
        config, legacy = llama_config_dict(cfg, vocab, eod, pad_token_id, causal)
    config.update(architectures=[classifier_architecture(causal)], num_labels=1, tie_word_embeddings=False)
    return config, legacy


def _weights(cfg: ModelConfig, full: dict[str, torch.Tensor], vocab: int, causal: str) -> dict[str, torch.Tensor]:
    """The body under the architecture's names, our ``rm_linear`` as its ``score``."""
    body = {k: v for k, v in full.items() if k != REWARD_HEAD_KEY}
    out = state_dict_to_hf(body, vocab) if causal == "GPTNeoXForCausalLM" else state_dict_to_llama(body, cfg, vocab)
    out[SCORE] = full[REWARD_HEAD_KEY].contiguous()  # [1, h]: num_labels rows
    return out


def save_reward_model(cfg: ModelConfig, full: dict[str, torch.Tensor], vocab: int, out_dir: str,
                      eod: int | None, pad: int | None, causal: str) -> str:
    """Write the ``...ForSequenceClassification`` directory of a reward model whose body
    exports as ``causal``; returns the class name and where transformers reads the reward."""
    import transformers

    if not is_reward_state_dict(full):
        raise UnsupportedForHF(f"not a reward model: the weights have no {REWARD_HEAD_KEY}")
    check_exportable(cfg, causal)
    pad_token_id, where = reward_pad_token(eod, pad)
    config, legacy = _config(cfg, vocab, eod, pad_token_id, causal)
    name = classifier_architecture(causal)
    config_cls = getattr(transformers, causal.replace(CAUSAL, "Config"))
    save_with_transformers(getattr(transformers, name), config_cls(**config), _weights(cfg, full, vocab, causal),
                           False, out_dir, legacy)
    return f"{name} (num_labels 1; {where})"
