"""The ``perplexity`` task: loss, perplexity and bits per byte of a corpus.

The corpus is either a preprocessed dataset (a ``.bin/.idx`` prefix: its documents, tokens as
stored, end-of-document included when it was appended) or a text file that
``tools/preprocess_data.py`` reads (``.jsonl`` / ``.jsonl.zst`` / ``.jsonl.gz`` with a ``text``
key, or ``.txt``: one document per file). Each document is scored whole in lm-eval's disjoint
rolling windows of the context length, the first token predicted from end-of-document, so the
numbers agree with lm-eval's ``loglikelihood_rolling`` tasks (wikitext's ``bits_per_byte``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator

from megatron_lite.data.indexed_dataset import MMapIndexedDataset, dataset_exists
from megatron_lite.data.readers import ReadStats, iter_documents
from megatron_lite.evaluation.lm_adapter import MegatronLiteLM
from megatron_lite.utils.logging import get_logger

logger = get_logger(__name__)


class EvaluationError(RuntimeError):
    """A problem with what to evaluate (missing data, unknown task, unreachable dataset)."""


def _dataset_documents(prefix: str) -> Iterator[list[int]]:
    """Token ids per document of a .bin/.idx dataset (a document may span several sequences)."""
    ds = MMapIndexedDataset(prefix)
    for doc in range(ds.num_documents):
        first, last = int(ds.doc_idx[doc]), int(ds.doc_idx[doc + 1])
        yield [int(t) for seq in range(first, last) for t in ds[seq]]


def _file_documents(path: str, key: str) -> Iterator[str]:
    stats = ReadStats()
    yield from (doc.texts[key] for doc in iter_documents([path], [key], stats))
    if stats.skipped:
        logger.warning("%s: skipped %s", path, dict(stats.skipped))


def corpus_documents(path: str, tokenizer, key: str = "text") -> Iterator[tuple[list[int], int]]:
    """(token ids, UTF-8 bytes) per document of ``path`` (a dataset prefix or a text file)."""
    if dataset_exists(path):
        for ids in _dataset_documents(path):
            # Bytes of the text itself: the end-of-document token decodes to no text of the corpus.
            text = tokenizer.detokenize([t for t in ids if t != tokenizer.eod])
            yield ids, len(text.encode("utf-8"))
    elif os.path.isfile(path):
        for text in _file_documents(path, key):
            yield tokenizer.tokenize(text), len(text.encode("utf-8"))
    else:
        raise EvaluationError(
            f"eval_perplexity_data: {path} is neither a dataset prefix ({path}.bin/.idx) nor a "
            "file; give a preprocessed dataset or a .jsonl/.jsonl.zst/.txt file")


def evaluate_perplexity(lm: MegatronLiteLM, path: str, limit: int | None = None) -> dict[str, float]:
    """{"loss", "perplexity", "bits_per_byte", "tokens", "bytes", "documents"} of ``path``
    (the first ``limit`` documents when given). Loss is the mean negative log-likelihood per
    token in nats; bits per byte is the total in bits over the text's UTF-8 bytes."""
    docs = []
    for ids, nbytes in corpus_documents(path, lm.tokenizer):
        if ids:
            docs.append((ids, nbytes))
        if limit is not None and len(docs) >= limit:
            break
    if not docs:
        raise EvaluationError(f"eval_perplexity_data: {path} holds no documents")
    mine = docs[lm.rank::lm.world_size]  # each model replica scores its share; sums are summed
    totals = lm.rolling_loglikelihood_tokens([ids for ids, _ in mine], disable_tqdm=not lm.show_progress)
    nll, tokens, nbytes = lm.replicas.sum([-sum(totals), sum(len(ids) for ids, _ in mine),
                                          sum(b for _, b in mine)])
    loss = nll / tokens
    return {"loss": loss, "perplexity": math.exp(loss), "bits_per_byte": nll / (math.log(2) * max(nbytes, 1)),
            "tokens": int(tokens), "bytes": int(nbytes), "documents": len(docs)}
