"""evaluate.py's body: lm-eval tasks, perplexity and BLEU/ROUGE on a checkpoint.

Every rank loads the model (tensor-parallel shards; pipeline stages are merged, as for
generation); the ``world / tp`` model replicas share the documents (data parallel), and the
ranks of one replica move in lockstep (the forward is collective across the tensor-parallel
group). Global rank 0 writes ``<log_dir>/<prefix>_<time>.json``
in lm-eval's results layout, prints the table, and sends the numbers to metrics.jsonl,
TensorBoard and wandb when they are enabled.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import torch.distributed as dist

from megatron_lite.config import Config
from megatron_lite.evaluation.lm_adapter import MegatronLiteLM, ReplicaGroup
from megatron_lite.evaluation.perplexity import EvaluationError
from megatron_lite.evaluation.tasks import TaskPlan, evaluate_tasks
from megatron_lite.utils.files import atomic_write_jsonl, atomic_write_text, reserve_new_path
from megatron_lite.utils.logging import get_logger

logger = get_logger(__name__)


def results_path(cfg: Config) -> str:
    root = cfg.logging.log_dir or "runs"
    stem = os.path.join(root, f"{cfg.evaluation.eval_results_prefix}_{time.strftime('%Y%m%d-%H%M%S')}")
    return reserve_new_path(stem, ".json")  # two evaluations in one second: two files


def metric_record(results: dict[str, Any]) -> dict[str, Any]:
    """Flat ``{"split": "eval", "<task>/<metric>": value}`` for metrics.jsonl / TensorBoard / wandb."""
    record: dict[str, Any] = {"split": "eval"}
    for task, metrics in results.get("results", {}).items():
        for key, value in metrics.items():
            name = key.split(",")[0]
            if isinstance(value, (int, float)) and not isinstance(value, bool) and not name.endswith("_stderr"):
                record[f"{task}/{name}"] = value
    return record


def _sampling(cfg: Config) -> dict[str, Any]:
    g = cfg.generation
    return {"max_new_tokens": g.maximum_tokens, "temperature": g.temperature, "top_k": g.top_k,
            "top_p": g.top_p, "stop_strings": g.stop_strings, "seed": cfg.training.seed}


def report(cfg: Config, run_dir: str, results: dict[str, Any], samples: list[dict], iteration: int) -> str:
    """Rank 0: the results file, per-task samples (bleu_rouge always, lm-eval tasks with
    ``eval_log_samples``), the table, the metric sinks."""
    from lm_eval.utils import handle_non_serializable, make_table

    from megatron_lite.training.metrics import MetricsWriter

    path = results_path(cfg)
    per_task = results.pop("samples", None) or {}
    if samples:
        per_task["bleu_rouge"] = samples
    # Written whole or not at all; lm-eval's results hold a few objects json cannot encode.
    atomic_write_text(path, json.dumps(results, indent=2, default=handle_non_serializable, ensure_ascii=False))
    for task, records in per_task.items():
        atomic_write_jsonl(os.path.join(run_dir, f"samples_{task}.jsonl"), records, default=handle_non_serializable)
    writer = MetricsWriter(cfg, run_dir, rank=0)
    writer.write({"iteration": iteration, **metric_record(results)}, step=iteration)
    writer.close()
    print(make_table(results), flush=True)
    logger.info("wrote %s", path)
    return path


def main(argv: list[str] | None = None) -> int:
    from megatron_lite.checkpoint.layout import CheckpointError
    from megatron_lite.checkpoint.loader import model_vocab_size
    from megatron_lite.inference.main import GenerationError, build_model
    from megatron_lite.launcher.worker import device_for, finish_worker, start_worker
    from megatron_lite.parallel.random import seed_everything
    from megatron_lite.tokenizer import build_tokenizer

    args, state = start_worker(argv)
    cfg = args.cfg
    seed_everything(cfg.training.seed, state.tp_rank)
    rank0 = dist.get_rank() == 0
    try:
        plan = TaskPlan(cfg)  # task names and data first: no model time spent on a typo
        tokenizer = build_tokenizer(cfg.tokenizer)
        model = build_model(cfg, state, device_for(args.local_rank))
        vocab, iteration = model_vocab_size(cfg.checkpoint.load, cfg.checkpoint.iteration,
                                            tokenizer.vocab_size)
        lm = MegatronLiteLM(model, tokenizer, vocab, batch_size=cfg.evaluation.eval_batch_size,
                            seed=cfg.training.seed, show_progress=rank0 and sys.stderr.isatty(),
                            replicas=ReplicaGroup.build(state))
        results, samples = evaluate_tasks(lm, cfg, plan, _sampling(cfg))
        logger.info("model replica %d of %d: %d scoring forward passes", lm.rank, lm.world_size, lm.model_calls)
        if rank0:
            report(cfg, args.run_dir, results, samples, iteration)
        code = 0
    except (EvaluationError, GenerationError, CheckpointError, ValueError, FileNotFoundError) as exc:
        logger.error("%s", exc)
        code = 1
    finish_worker(code)
    return code  # not reached
