"""Which tasks to run and how: lm-eval's registry (plus ``--include_path`` YAMLs) and our own
``perplexity`` and ``bleu_rouge`` tasks, all into one results dict in lm-eval's layout.

Tasks are loaded one name at a time so that a failure (an unknown name, a dataset that cannot be
reached offline) is reported against the task that caused it, with what to do, before any model
time is spent.
"""

from __future__ import annotations

import difflib
import os
from typing import Any

from megatron_lite.config import Config
from megatron_lite.evaluation.lm_adapter import MegatronLiteLM
from megatron_lite.evaluation.perplexity import EvaluationError, evaluate_perplexity
from megatron_lite.evaluation.reference_metrics import evaluate_references
from megatron_lite.utils.logging import get_logger

logger = get_logger(__name__)

PERPLEXITY, BLEU_ROUGE = "perplexity", "bleu_rouge"
OWN_TASKS = (PERPLEXITY, BLEU_ROUGE)
_HIGHER_IS_BETTER = {PERPLEXITY: {"loss": False, "perplexity": False, "bits_per_byte": False},
                     BLEU_ROUGE: {"bleu": True, "rougeL": True}}


def _data_hint(name: str, exc: Exception) -> str:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return (f"task {name}: its data could not be loaded ({type(exc).__name__}: {first[:300]}). "
            "Without network access lm-eval reads datasets only from the Hugging Face datasets "
            "cache (HF_DATASETS_CACHE, default ~/.cache/huggingface/datasets): run this task once "
            "on a machine with network access (HF_DATASETS_OFFLINE unset) and copy the cache here, "
            "or write a local task YAML (dataset_path: json, dataset_kwargs: {data_files: ...}) "
            "and pass its directory with --include_path")


def load_lm_eval_tasks(names: list[str], include_path: str | None) -> tuple[list[Any], Any]:
    """(task or group objects to evaluate, the TaskManager) for lm-eval task names."""
    from lm_eval.tasks import TaskManager

    if include_path and not os.path.isdir(include_path):
        raise EvaluationError(f"eval_include_path: {include_path} is not a directory (--include_path)")
    manager = TaskManager(include_path=include_path)
    known = set(manager.all_tasks)
    objects: list[Any] = []
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=5, cutoff=0.6)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise EvaluationError(f"eval_tasks: unknown lm-eval task '{name}'{hint} (local task YAMLs: "
                                  "--include_path DIR; our own tasks: perplexity, bleu_rouge)")
        try:
            loaded = manager.load([name])
        except Exception as exc:  # noqa: BLE001 - datasets raises many kinds; all mean "no data"
            raise EvaluationError(_data_hint(name, exc)) from exc
        objects += [loaded["groups"][name]] if name in loaded["groups"] else list(loaded["tasks"].values())
    return objects, manager


class TaskPlan:
    """What ``eval_tasks`` asks for, checked and loaded before the model is: lm-eval task
    objects (their datasets already read) and which of our own tasks to run."""

    def __init__(self, cfg: Config) -> None:
        ev = cfg.evaluation
        self.names = list(ev.eval_tasks or [])
        if not self.names:
            raise EvaluationError("no tasks: set eval_tasks or pass --eval_tasks T [T ...] "
                                  "(lm-eval task names, perplexity, bleu_rouge)")
        if PERPLEXITY in self.names and not ev.eval_perplexity_data:
            raise EvaluationError("task perplexity needs eval_perplexity_data: a dataset prefix "
                                  "(.bin/.idx) or a .jsonl/.txt file")
        if BLEU_ROUGE in self.names and not ev.eval_references_file:
            raise EvaluationError("task bleu_rouge needs eval_references_file: a .jsonl of "
                                  '{"prompt": ..., "reference": ...} records')
        lm_eval_names = [n for n in self.names if n not in OWN_TASKS]
        self.lm_eval_tasks, self.manager = (load_lm_eval_tasks(lm_eval_names, ev.eval_include_path)
                                            if lm_eval_names else ([], None))


def run_lm_eval(lm: MegatronLiteLM, cfg: Config, plan: TaskPlan) -> dict[str, Any]:
    """lm-eval's ``simple_evaluate`` over our model: its results dict (every rank computes it)."""
    from lm_eval import evaluator

    ev, seed = cfg.evaluation, cfg.training.seed
    results = evaluator.simple_evaluate(
        model=lm, tasks=plan.lm_eval_tasks, num_fewshot=ev.eval_num_fewshot, limit=ev.eval_limit,
        batch_size=ev.eval_batch_size, bootstrap_iters=ev.eval_bootstrap_iters, log_samples=ev.eval_log_samples,
        task_manager=plan.manager, random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed,
        fewshot_random_seed=seed)
    return results or {}


def _add_own(results: dict[str, Any], task: str, metrics: dict[str, float]) -> None:
    """Our task's numbers in lm-eval's layout ("metric,filter" keys) so one table shows all."""
    results.setdefault("results", {})[task] = {"alias": task, **{f"{k},none": v for k, v in metrics.items()}}
    results.setdefault("versions", {})[task] = 1.0
    results.setdefault("n-shot", {})[task] = 0
    results.setdefault("higher_is_better", {})[task] = _HIGHER_IS_BETTER[task]


def evaluate_tasks(lm: MegatronLiteLM, cfg: Config, plan: TaskPlan,
                   sampling: dict[str, Any]) -> tuple[dict[str, Any], list[dict]]:
    """(results in lm-eval's layout, bleu_rouge samples) for every task of the plan."""
    ev, samples = cfg.evaluation, []
    results = run_lm_eval(lm, cfg, plan) if plan.lm_eval_tasks else {}
    if PERPLEXITY in plan.names:
        metrics = evaluate_perplexity(lm, ev.eval_perplexity_data, ev.eval_limit)
        logger.info("perplexity of %s: %s", ev.eval_perplexity_data, metrics)
        _add_own(results, PERPLEXITY, metrics)
    if BLEU_ROUGE in plan.names:
        metrics, samples = evaluate_references(lm.model, lm.tokenizer, ev.eval_references_file,
                                               sampling, ev.eval_batch_size, ev.eval_limit, lm.replicas)
        _add_own(results, BLEU_ROUGE, metrics)
    return results, samples
