"""megatron_lite: GPT-NeoX-style GPT training on DeepSpeed, in readable Python.

    model, tokenizer = megatron_lite.load_model("checkpoints")
    megatron_lite.generate(model, tokenizer, ["Hello"], max_new_tokens=20)
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["generate", "load_model", "load_reward_model"]


def load_model(path: str, device: Any = "cpu", iteration: int | None = None) -> Any:
    """``(model, tokenizer)`` from a checkpoint directory or a Hugging Face GPTNeoX directory."""
    from megatron_lite.checkpoint import load_model as _load

    return _load(path, device=device, iteration=iteration)


def load_reward_model(path: str, device: Any = "cpu", iteration: int | None = None) -> Any:
    """``(model, tokenizer)`` of a reward-model checkpoint (``train_impl: rm``): tokens [b, s] ->
    values [b, s], the reward being the value at a sequence's last token."""
    from megatron_lite.checkpoint import load_reward_model as _load

    return _load(path, device=device, iteration=iteration)


def generate(model: Any, tokenizer: Any, prompts: list[str], **sampling: Any) -> list[str]:
    """Texts generated for ``prompts``; ``sampling``: max_new_tokens, temperature, top_k, top_p,
    stop_strings, recompute, seed, batch_size."""
    from megatron_lite.inference.generation import generate as _generate

    return _generate(model, tokenizer, prompts, **sampling)
