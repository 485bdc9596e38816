"""The ``bleu_rouge`` task: generate for each prompt of a reference set and score the outputs.

The reference set is a ``.jsonl`` file, one record per line: ``{"prompt": ..., "reference":
...}`` (or ``"references": [...]`` for several). Outputs are generated with the config's
generation settings (greedy by default) and scored with sacrebleu's corpus BLEU and
rouge-score's ROUGE-L F1 (the mean over records; with several references, the best one).
"""

from __future__ import annotations

import json
import os
from typing import Any

from megatron_lite.evaluation.perplexity import EvaluationError
from megatron_lite.inference.generation import generate_records


def read_references(path: str) -> list[tuple[str, list[str]]]:
    """(prompt, references) per record; a bad line is an error naming ``path:line``."""
    if not path or not os.path.isfile(path):
        raise EvaluationError(f"eval_references_file: {path} not found (a .jsonl of "
                              '{"prompt": ..., "reference": ...} records)')
    records = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise EvaluationError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
            refs = rec.get("references", [rec["reference"]] if "reference" in rec else None) \
                if isinstance(rec, dict) else None
            if not isinstance(rec, dict) or not isinstance(rec.get("prompt"), str) or not refs \
                    or not all(isinstance(r, str) for r in refs):
                raise EvaluationError(f'{path}:{number}: expected {{"prompt": str, "reference": str}} '
                                      '(or "references": [str, ...])')
            records.append((rec["prompt"], list(refs)))
    if not records:
        raise EvaluationError(f"eval_references_file: {path} holds no records")
    return records


def score(outputs: list[str], references: list[list[str]]) -> dict[str, float]:
    """{"bleu": corpus BLEU (0-100), "rougeL": mean ROUGE-L F1 (0-1)}."""
    import sacrebleu
    from rouge_score import rouge_scorer

    # sacrebleu wants one stream per reference position; pad ragged sets with the first reference.
    width = max(len(refs) for refs in references)
    streams = [[refs[i] if i < len(refs) else refs[0] for refs in references] for i in range(width)]
    bleu = sacrebleu.corpus_bleu(outputs, streams).score
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    rouge = [max(scorer.score(ref, out)["rougeL"].fmeasure for ref in refs)
             for out, refs in zip(outputs, references)]
    return {"bleu": bleu, "rougeL": sum(rouge) / len(rouge)}


def evaluate_references(model: Any, tokenizer: Any, path: str, sampling: dict[str, Any],
                        batch_size: int, limit: int | None = None) -> tuple[dict[str, float], list[dict]]:
    """(metrics, one {prompt, reference(s), output} record per prompt) for the set in ``path``."""
    records = read_references(path)[:limit]
    gens = generate_records(model, tokenizer, [p for p, _ in records], batch_size, **sampling)
    outputs = [g.text.strip() for g in gens]
    metrics = {**score(outputs, [refs for _, refs in records]), "records": len(records)}
    samples = [{"prompt": p, "references": refs, "output": out} for (p, refs), out in zip(records, outputs)]
    return metrics, samples
