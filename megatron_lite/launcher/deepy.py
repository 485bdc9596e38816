"""deepy.py: resolve the config, write it to a run directory, start the workers.

No torch import here: a bad config, hostfile, script or input file fails in a second with a
clear message, before the DeepSpeed runner (and its workers) start.

How workers are started: ``commands.py``. A run of more than one process keeps deepy.py as
its parent (``supervisor.py``), so that a stop signal to deepy.py stops every rank cleanly.
Before a multi-node pdsh launch, every host is checked (``hosts.py``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from typing import Any

from megatron_lite.config import Config, ConfigError, dump_yaml
from megatron_lite.config.resources import HostfileError, load_for_launch, plan_world
from megatron_lite.launcher.commands import LaunchError, LaunchPlan, describe, launch_plan
from megatron_lite.launcher.environment import write_env_file
from megatron_lite.launcher.hosts import HostCheckError, check_hosts, check_shell_safe_paths
from megatron_lite.launcher.ports import with_rendezvous_port
from megatron_lite.launcher.supervisor import Supervisor
from megatron_lite.utils.files import atomic_write_text
from megatron_lite.utils.logging import get_logger

logger = get_logger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deepy.py",
        description="Run SCRIPT (train.py, generate.py, evaluate.py) with merged YAML configs "
        "under the DeepSpeed launcher.",
    )
    parser.add_argument("script", help="the entry point to run, e.g. train.py")
    parser.add_argument("-d", "--conf_dir", default=None, help="directory prefixed to config names")
    parser.add_argument("configs", nargs="+", help="YAML configs, merged left to right")
    parser.add_argument("--eval_tasks", nargs="+", default=None, help="lm-eval tasks (evaluate.py)")
    parser.add_argument("--include_path", default=None, help="extra lm-eval task YAMLs (evaluate.py)")
    parser.add_argument("--num_fewshot", type=int, default=None, help="few-shot examples (evaluate.py)")
    parser.add_argument("--limit", type=int, default=None, help="examples per task (evaluate.py)")
    parser.add_argument("--batch_size", type=int, default=None, help="requests per forward (evaluate.py)")
    parser.add_argument("-i", "--sample_input_file", default=None, help="prompt file (generate.py)")
    parser.add_argument("-o", "--sample_output_file", default=None, help="output JSONL (generate.py)")
    parser.add_argument("-H", "--hostfile", default=None, help="DeepSpeed hostfile")
    parser.add_argument("--iteration", type=int, default=None, help="checkpoint iteration to load")
    parser.add_argument("--wandb_group", default=None)
    parser.add_argument("--wandb_run_name", default=None)
    parser.add_argument("--node_rank", type=int, default=None,
                        help="start only this node's ranks of a multi-node job (manual launch)")
    parser.add_argument("--dry_run", action="store_true",
                        help="resolve, check and print the launch command without running it")
    return parser


def cli_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Command-line options that override config keys (applied after every file)."""
    overrides = {
        "eval_tasks": args.eval_tasks,
        "eval_include_path": args.include_path,
        "eval_num_fewshot": args.num_fewshot,
        "eval_limit": args.limit,
        "eval_batch_size": args.batch_size,
        "sample_input_file": args.sample_input_file,
        "sample_output_file": args.sample_output_file,
        "hostfile": args.hostfile,
        "iteration": args.iteration,
        "wandb_group": args.wandb_group,
        "wandb_run_name": args.wandb_run_name,
    }
    if args.sample_input_file:
        overrides["text_gen_type"] = "input-file"
    return {k: v for k, v in overrides.items() if v is not None}


def _require_prefix(prefix: str, key: str) -> None:
    for suffix in (".bin", ".idx"):
        if not os.path.isfile(prefix + suffix):
            raise LaunchError(
                f"{key}: dataset {prefix}{suffix} not found; create it with "
                "tools/preprocess_data.py (the prefix is the path without .bin/.idx)"
            )


def check_inputs(cfg: Config, script: str) -> None:
    """Files the chosen script will need, checked before any worker starts."""
    if not os.path.isfile(script):
        raise LaunchError(f"script not found: {script}")
    tok = cfg.tokenizer
    for key in ("vocab_file", "merge_file"):
        path = getattr(tok, key)
        if key == "vocab_file" and tok.tokenizer_type == "TiktokenTokenizer" and os.sep not in (path or ""):
            continue  # a tiktoken encoding name: resolving the config already found it offline
        if path and not os.path.isfile(path):
            raise LaunchError(f"{key}: {path} not found")
    name = os.path.basename(script)
    if name == "train.py":
        d = cfg.data
        if d.data_path is None and not d.train_data_paths and not d.pos_train_data_paths:
            raise LaunchError("no training data: set data_path or train_data_paths (pos_/neg_train_data_paths "
                              "with dataset_impl: pairwise)")
        if d.data_path is not None:
            _require_prefix(d.data_path, "data_path")
        for which in ("train", "valid", "test"):
            for key in (f"{which}_data_paths", f"{which}_label_data_paths", f"{which}_reward_data_paths",
                        *(f"{side}_{which}{kind}_data_paths" for side in ("pos", "neg") for kind in ("", "_label"))):
                for prefix in getattr(d, key) or []:
                    _require_prefix(prefix, key)
        _check_save_dir(cfg.checkpoint.save)
        # A config may set finetune for a `load` given later (GPT-NeoX's llama/train_config.yml):
        # it loads; training without the checkpoint to start from does not start.
        if cfg.checkpoint.finetune and not cfg.checkpoint.load:
            raise LaunchError("finetune: true needs `load`: the checkpoint to start from")
        if cfg.checkpoint.finetune and not os.path.isdir(cfg.checkpoint.load):
            raise LaunchError(f"finetune: load directory {cfg.checkpoint.load} not found")
    if name == "evaluate.py":
        _check_evaluation_inputs(cfg)
    gen = cfg.generation
    if name == "generate.py" and gen.text_gen_type == "input-file":
        if not gen.sample_input_file or not os.path.isfile(gen.sample_input_file):
            raise LaunchError(f"sample_input_file: {gen.sample_input_file} not found (-i FILE)")


def _check_save_dir(save: str | None) -> None:
    """``save`` must be (or be creatable as) a writable directory: found now, not at the first save."""
    if not save:
        return
    if os.path.exists(save) and not os.path.isdir(save):
        raise LaunchError(f"save: {save} exists and is not a directory")
    existing = save
    while not os.path.exists(existing):  # the nearest existing ancestor must let us create it
        existing = os.path.dirname(os.path.abspath(existing))
    if not os.access(existing, os.W_OK | os.X_OK):
        raise LaunchError(f"save: {save} is not writable ({existing} does not allow writing)")


def _check_evaluation_inputs(cfg: Config) -> None:
    ev = cfg.evaluation
    if not ev.eval_tasks:
        raise LaunchError("evaluate.py: no tasks; pass --eval_tasks T [T ...] or set eval_tasks "
                          "(lm-eval task names, perplexity, bleu_rouge)")
    if not cfg.checkpoint.load or not os.path.isdir(cfg.checkpoint.load):
        raise LaunchError(f"load: checkpoint directory {cfg.checkpoint.load} not found (the model to evaluate)")
    if ev.eval_include_path and not os.path.isdir(ev.eval_include_path):
        raise LaunchError(f"eval_include_path: {ev.eval_include_path} is not a directory (--include_path)")
    if "perplexity" in ev.eval_tasks:
        data = ev.eval_perplexity_data
        if not data or not (os.path.isfile(data) or os.path.isfile(data + ".idx")):
            raise LaunchError(f"eval_perplexity_data: {data} not found (a dataset prefix or a .jsonl/.txt file)")
    if "bleu_rouge" in ev.eval_tasks and not (ev.eval_references_file and os.path.isfile(ev.eval_references_file)):
        raise LaunchError(f"eval_references_file: {ev.eval_references_file} not found (a .jsonl of prompt/reference records)")


def planned_run_dir(cfg: Config, script: str) -> str:
    """``<log_dir or runs>/<timestamp>-<script>``: where this run's config and rank logs go."""
    root = cfg.logging.log_dir or "runs"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return os.path.abspath(os.path.join(root, f"{stamp}-{os.path.splitext(os.path.basename(script))[0]}"))


def make_run_dir(cfg: Config, script: str) -> str:
    """Create the run directory (a new name: ``-1``, ``-2`` ... for runs started in the same
    second) holding the resolved config; its absolute path."""
    base = planned_run_dir(cfg, script)
    run_dir, n = base, 1
    while True:  # makedirs, not an existence check: two deepy processes may start in the same second
        try:
            os.makedirs(run_dir)
            break
        except FileExistsError:
            run_dir, n = f"{base}-{n}", n + 1
    atomic_write_text(os.path.join(run_dir, "config.yml"), dump_yaml(cfg))
    return run_dir


def check_remote_launch(plan: LaunchPlan, script: str, run_dir: str) -> None:
    """A pdsh launch: every path the remote shell sees is shell-safe, every host answers ssh."""
    if not plan.pdsh_nodes:
        return
    check_shell_safe_paths([("the working directory", os.getcwd()), ("python", sys.executable),
                            ("the script", script), ("the run directory (log_dir)", run_dir)])
    check_hosts(plan.hosts)


def _choose_rendezvous(cfg: Config, node_rank: int | None) -> Config:
    """``cfg`` with ``master_port`` and ``master_addr`` chosen and recorded: every rank reads
    them from its config, including ranks that mpirun or srun start without DeepSpeed's launch."""
    la = cfg.launcher
    hosts, _ = plan_world(la.hostfile, la.num_nodes, la.num_gpus, la.include, la.exclude)
    single = list(hosts) == ["localhost"]
    try:
        cfg = with_rendezvous_port(cfg, single_node=single and node_rank is None)
    except ValueError as exc:
        raise LaunchError(str(exc)) from None
    addr = la.master_addr or ("127.0.0.1" if single else next(iter(hosts)))
    return replace(cfg, launcher=replace(cfg.launcher, master_addr=addr))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if not os.path.isfile(args.script):
            raise LaunchError(f"script not found: {args.script}")
        cfg = load_for_launch(args.configs, args.conf_dir, cli_overrides(args))
        check_inputs(cfg, args.script)
        cfg = _choose_rendezvous(cfg, args.node_rank)
        plan = launch_plan(cfg, args.script, planned_run_dir(cfg, args.script), args.node_rank)
        if args.dry_run:  # nothing written, nothing started
            print(describe(plan))
            return 0
        check_remote_launch(plan, args.script, planned_run_dir(cfg, args.script))
        run_dir = make_run_dir(cfg, args.script)
        plan = launch_plan(cfg, args.script, run_dir, args.node_rank)
    except (ConfigError, HostfileError, LaunchError, HostCheckError) as exc:
        print(f"deepy.py: error: {exc}", file=sys.stderr)
        return 1
    if plan.env_file:
        write_env_file(run_dir, os.environ, cfg.launcher.export_env_vars)
    logger.info("run directory: %s", run_dir)
    logger.info("launching: %s", " ".join(c if len(c) < 200 else c[:60] + "..." for c in plan.cmd))
    env = {**os.environ, **plan.env}
    if not plan.in_place:
        remote = plan.hosts if plan.pdsh_nodes else []
        scheduler = len(plan.hosts) > 1 and cfg.launcher.launcher != "pdsh" and args.node_rank is None
        return Supervisor(plan.cmd, env, run_dir, remote, cfg.launcher.stop_grace_period,
                          scheduler_started=scheduler).run()
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvpe(plan.cmd[0], plan.cmd, env)
    return 0  # not reached
