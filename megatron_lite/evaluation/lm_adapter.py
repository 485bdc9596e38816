"""Our model as an lm-evaluation-harness ``LM``.

``TemplateLM`` (lm-eval) does the tokenization bookkeeping: it splits context and continuation
tokens exactly as lm-eval's own Hugging Face model does (trailing context spaces move to the
continuation, the pair is encoded whole and split). We supply the token-level scoring, the
rolling windows and generation, batched and sorted longest first with lm-eval's ``Collator`` so
that a batch's padding is small and the results come back in request order.

Data parallel: the world is ``world / tp`` model replicas. lm-eval gives each replica its own
share of the documents (``rank`` / ``world_size`` below are the replica's index and count) and
gathers the per-document metrics through ``all_gather`` / ``gather_object`` over a group of the
ranks that hold the same tensor-parallel shard. Within a replica, every tensor-parallel rank calls
the model on the same batch (the forward is collective) and gathers the full logits, so they
compute identical results; only global rank 0 writes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from lm_eval import utils as lm_utils
from lm_eval.api.model import TemplateLM
from lm_eval.models.utils import (
    Collator,
    handle_stop_sequences,
    normalize_gen_kwargs,
    postprocess_generated_text,
)
from tqdm import tqdm

from megatron_lite.inference.generation import generate_records
from megatron_lite.model.gpt import GPTModel
from megatron_lite.parallel.state import ParallelState, my_group

Request = tuple[Any, list[int], list[int]]  # (cache key or None, context ids, continuation ids)


@dataclass(frozen=True)
class ReplicaGroup:
    """This rank's model replica (``rank`` of ``size``) and the group of the ranks that hold the
    same tensor-parallel shard in every replica (None for one replica)."""

    rank: int = 0
    size: int = 1
    group: Any = None

    @classmethod
    def build(cls, state: ParallelState) -> ReplicaGroup:
        """Collective: every rank calls it. Ranks are model-innermost, so replica = rank // tp."""
        world, tp = dist.get_world_size(), state.tp_size
        if world == tp:
            return cls()
        lists = [[t + tp * r for r in range(world // tp)] for t in range(tp)]
        return cls(dist.get_rank() // tp, world // tp, my_group(lists, dist.get_rank()))

    def all_gather_object(self, obj: Any) -> list[Any]:
        """``obj`` of every replica, in replica order (on every rank)."""
        if self.size == 1:
            return [obj]
        out: list[Any] = [None] * self.size
        dist.all_gather_object(out, obj, group=self.group)
        return out

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over the replicas (float64, so large token counts stay exact)."""
        if self.size == 1:
            return values
        t = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(t, group=self.group)
        return t.tolist()


class MegatronLiteLM(TemplateLM):
    """``loglikelihood``, ``loglikelihood_rolling`` and ``generate_until`` over a ``GPTModel``.

    ``vocab_size`` is the model's real vocabulary (the embedding's padding rows are cut off
    before the softmax, as a Hugging Face model of that vocabulary would).
    """

    def __init__(self, model: GPTModel, tokenizer: Any, vocab_size: int, batch_size: int = 8,
                 max_gen_toks: int = 256, seed: int = 1234, show_progress: bool = True,
                 replicas: ReplicaGroup | None = None) -> None:
        super().__init__()
        self.model, self.tokenizer, self.vocab_size = model.eval(), tokenizer, vocab_size
        self.batch_size, self.max_gen_toks, self.seed = batch_size, max_gen_toks, seed
        self.show_progress = show_progress
        self._device = next(model.parameters()).device
        self.replicas = replicas or ReplicaGroup()
        self._rank, self._world_size = self.replicas.rank, self.replicas.size
        self.model_calls = 0  # forward passes of this rank (a replica scores only its share)

    # lm-eval's hooks for data-parallel evaluation (the evaluator calls them when world_size > 1).
    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        parts = [torch.zeros_like(tensor) for _ in range(self.world_size)]
        dist.all_gather(parts, tensor, group=self.replicas.group)
        return torch.stack(parts)

    def gather_object(self, obj: Any, dst: int = 0) -> list[Any]:
        return self.replicas.all_gather_object(obj)

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier(group=self.replicas.group)

    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eod

    @property
    def max_length(self) -> int:
        return self.model.cfg.max_position_embeddings

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs: Any) -> list[int]:
        return self.tokenizer.tokenize(string)

    def tok_decode(self, tokens: list[int]) -> str:
        return self.tokenizer.detokenize(tokens)

    @torch.no_grad()
    def log_probs(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [b, s] -> log-probabilities [b, s, vocab] (fp32) of the next token."""
        logits = self.model(tokens.to(self._device), gather_logits=True)[..., : self.vocab_size]
        return F.log_softmax(logits.float(), dim=-1)

    def _loglikelihood_tokens(self, requests: list[Request], disable_tqdm: bool = False,
                              **kwargs: Any) -> list[tuple[float, bool]]:
        """(sum of continuation log-probs, whether greedy decoding gives the continuation)."""
        # Longest first: the first batch shows the worst memory use, and padding stays small.
        order = Collator(requests, sort_fn=lambda r: (-len(r[1] + r[2]), tuple(r[1] + r[2])))
        results: list[tuple[float, bool]] = []
        bar = tqdm(total=len(requests), disable=disable_tqdm or not self.show_progress,
                   desc="loglikelihood")
        for chunk in order.get_batched(n=self.batch_size):
            # The input drops the last token (nothing to predict after it); a request too long
            # for the context loses tokens from the left, as in lm-eval's HF model.
            inputs = [(ctx + cont)[-(self.max_length + 1):][:-1] for _, ctx, cont in chunk]
            width = max(len(x) for x in inputs)
            batch = torch.zeros(len(inputs), width, dtype=torch.long)  # right-padded [b, w]
            for row, ids in enumerate(inputs):
                batch[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            logp = self.log_probs(batch)  # [b, w, V]
            self.model_calls += 1
            for row, (key, _, cont) in enumerate(chunk):
                end = len(inputs[row])
                scored = logp[row, end - len(cont): end]  # [len(cont), V]
                target = torch.tensor(cont, dtype=torch.long, device=scored.device)
                answer = (float(scored.gather(1, target[:, None]).sum()),
                          bool((scored.argmax(-1) == target).all()))
                results.append(answer)
                if key is not None:
                    self.cache_hook.add_partial("loglikelihood", key, answer)
                bar.update(1)
        bar.close()
        return order.get_original(results)

    def rolling_loglikelihood_tokens(self, documents: list[list[int]], disable_tqdm: bool = True) -> list[float]:
        """Total log-likelihood of each token list, scored in disjoint windows of the context
        length (lm-eval's rolling windows; the first token is predicted from end-of-document)."""
        windows: list[Request] = []
        owners: list[int] = []
        for index, ids in enumerate(documents):
            for ctx, cont in map(lm_utils.make_disjoint_window, lm_utils.get_rolling_token_windows(
                    token_list=ids, prefix_token=self.prefix_token_id, max_seq_len=self.max_length,
                    context_len=1)):
                windows.append((None, ctx, cont))
                owners.append(index)
        totals = [0.0] * len(documents)
        for owner, (score, _) in zip(owners, self._loglikelihood_tokens(windows, disable_tqdm=disable_tqdm)):
            totals[owner] += score
        return totals

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        strings = [req.args[0] for req in requests]
        totals = self.rolling_loglikelihood_tokens([self.tok_encode(s) for s in strings],
                                                   disable_tqdm=disable_tqdm)
        for string, total in zip(strings, totals):
            self.cache_hook.add_partial("loglikelihood_rolling", (string,), total)
        return totals

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        """Greedy or sampled continuations, cut at the task's stop strings and end-of-document."""
        order = Collator([req.args for req in requests], group_by="gen_kwargs", group_fn=lambda x: x[1],
                         sort_fn=lambda x: (-len(self.tok_encode(x[0])), x[0]))
        eos = self.tok_decode([self.eot_token_id])
        texts: list[str] = []
        bar = tqdm(total=len(requests), disable=disable_tqdm or not self.show_progress, desc="generate_until")
        for chunk in order.get_batched(n=self.batch_size):
            contexts, all_kwargs = zip(*chunk)
            kwargs = normalize_gen_kwargs(all_kwargs[0], self.max_gen_toks)  # one group: same kwargs
            until = handle_stop_sequences(kwargs.pop("until", None), eos=eos)
            sampling = {"max_new_tokens": kwargs.pop("max_gen_toks"), "stop_strings": until,
                        "temperature": float(kwargs.get("temperature") or 0.0) if kwargs.get("do_sample") else 0.0,
                        "top_k": int(kwargs.get("top_k") or 0), "top_p": float(kwargs.get("top_p") or 0.0),
                        "seed": self.seed}
            gens = generate_records(self.model, self.tokenizer, list(contexts), len(contexts), **sampling)
            for context, gen_kwargs, gen in zip(contexts, all_kwargs, gens):
                text = postprocess_generated_text(gen.text, until, None)
                texts.append(text)
                self.cache_hook.add_partial("generate_until", (context, gen_kwargs), text)
                bar.update(1)
        bar.close()
        return order.get_original(texts)
