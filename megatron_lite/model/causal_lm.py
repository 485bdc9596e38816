"""``CausalLM``: a one-process ``GPTModel`` whose forward returns logits over the real vocabulary
(what ``megatron_lite.load_model`` returns)."""

from __future__ import annotations

import torch
from torch import nn

from megatron_lite.model.gpt import GPTModel
from megatron_lite.model.kv_cache import KVCache


class CausalLM(nn.Module):
    """A GPTModel on one process whose forward returns logits over the real vocabulary.

    ``self.gpt`` is the inner ``GPTModel`` (its ``new_kv_cache`` / ``cfg`` serve generation);
    ``self.vocab_size`` the real vocabulary (the embedding's padding rows are cut off).
    """

    def __init__(self, gpt: GPTModel, vocab_size: int) -> None:
        super().__init__()
        self.gpt, self.vocab_size = gpt, vocab_size

    def forward(self, tokens: torch.Tensor, position_ids: torch.Tensor | None = None,
                cache: KVCache | None = None, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """tokens [b, s] LongTensor -> logits [b, s, vocab_size]."""
        logits = self.gpt(tokens, position_ids=position_ids, cache=cache,
                          attention_mask=attention_mask, gather_logits=True)
        return logits[..., : self.vocab_size]

    def new_kv_cache(self, batch_size: int, max_len: int) -> KVCache:
        """An empty KV cache for incremental decoding (see ``GPTModel.new_kv_cache``)."""
        return self.gpt.new_kv_cache(batch_size, max_len)
