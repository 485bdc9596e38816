"""deepy.py: resolve the config, write it to a run directory, start the workers.

No torch import here: a bad config, hostfile, script or input file fails in a second with a
clear message, before the DeepSpeed runner (and its workers) start.

How workers are started:
- world size 1 without a hostfile: the script runs in this process's place (``exec``), with the
  rendezvous variables set, so a laptop run has no launcher overhead;
- otherwise ``python -m deepspeed.launcher.runner`` with hostfile, num_nodes, num_gpus,
  include/exclude, master_addr/port and launcher (pdsh/openmpi/mvapich/slurm) from the config;
  on a machine without GPUs it starts ``num_gpus`` CPU processes (gloo);
- ``--node_rank K``: start only this node's share of a multi-node job with
  ``deepspeed.launcher.launch`` (what the runner runs on each node over pdsh), for clusters where
  each node is started by hand or by a scheduler. Two of these on one machine simulate two nodes.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import time
from typing import Any

from megatron_lite.config import Config, ConfigError, dump_yaml
from megatron_lite.config.resources import HostfileError, load_for_launch, plan_world
from megatron_lite.launcher.environment import write_env_file
from megatron_lite.launcher.ports import with_rendezvous_port
from megatron_lite.launcher.worker_args import encode_worker_args
from megatron_lite.utils.files import atomic_write_text
from megatron_lite.utils.logging import get_logger

logger = get_logger(__name__)


class LaunchError(RuntimeError):
    """A problem found before launch (missing script, input file, ...)."""


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
        if path and not os.path.isfile(path):
            raise LaunchError(f"{key}: {path} not found")
    name = os.path.basename(script)
    if name == "train.py":
        d = cfg.data
        if d.data_path is None and not d.train_data_paths:
            raise LaunchError("no training data: set data_path or train_data_paths")
        if d.data_path is not None:
            _require_prefix(d.data_path, "data_path")
        for which in ("train", "valid", "test"):
            for key in (f"{which}_data_paths", f"{which}_label_data_paths"):
                for prefix in getattr(d, key) or []:
                    _require_prefix(prefix, key)
        _check_save_dir(cfg.checkpoint.save)
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


def make_run_dir(cfg: Config, script: str) -> str:
    """``<log_dir or runs>/<timestamp>-<script>``, holding the resolved config and rank logs."""
    root = cfg.logging.log_dir or "runs"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = os.path.join(root, f"{stamp}-{os.path.splitext(os.path.basename(script))[0]}")
    run_dir, n = base, 1
    while True:  # makedirs, not an existence check: two deepy processes may start in the same second
        try:
            os.makedirs(run_dir)
            break
        except FileExistsError:
            run_dir, n = f"{base}-{n}", n + 1
    atomic_write_text(os.path.join(run_dir, "config.yml"), dump_yaml(cfg))
    return os.path.abspath(run_dir)


def launch_command(cfg: Config, script: str, run_dir: str, node_rank: int | None) -> tuple[list[str], dict[str, str]]:
    """(argv, extra environment) that starts the workers."""
    la = cfg.launcher
    hosts, world = plan_world(la.hostfile, la.num_nodes, la.num_gpus, la.include, la.exclude)
    py = sys.executable
    tail = [script, *encode_worker_args(cfg, run_dir)]
    master_addr = la.master_addr or ("127.0.0.1" if list(hosts) == ["localhost"] else next(iter(hosts)))
    if node_rank is not None:
        if not 0 <= node_rank < len(hosts):
            raise LaunchError(f"--node_rank {node_rank} but the hostfile lists {len(hosts)} nodes")
        world_info = {host: list(range(slots)) for host, slots in hosts.items()}
        encoded = base64.urlsafe_b64encode(json.dumps(world_info).encode()).decode()
        return [py, "-u", "-m", "deepspeed.launcher.launch", f"--world_info={encoded}",
                f"--node_rank={node_rank}", f"--master_addr={master_addr}",
                f"--master_port={la.master_port}", *tail], {}
    if world == 1 and list(hosts) == ["localhost"]:
        env = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1",
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(la.master_port)}
        return [py, "-u", *tail], env
    cmd = [py, "-u", "-m", "deepspeed.launcher.runner", f"--master_port={la.master_port}"]
    if la.hostfile and os.path.isfile(la.hostfile):
        cmd += [f"--hostfile={la.hostfile}", f"--launcher={la.launcher}"]
        if la.num_nodes > 0:
            cmd.append(f"--num_nodes={la.num_nodes}")
        cmd.append(f"--master_addr={master_addr}")
        cmd += [f"--include={la.include}"] if la.include else []
        cmd += [f"--exclude={la.exclude}"] if la.exclude else []
        env = {"DS_ENV_FILE": write_env_file(run_dir, os.environ, la.export_env_vars)}
    else:
        env = {}
    if la.num_gpus is not None or not (la.hostfile and os.path.isfile(la.hostfile)):
        cmd.append(f"--num_gpus={hosts[next(iter(hosts))]}")
    return cmd + tail, env


def _choose_port(cfg: Config, node_rank: int | None) -> Config:
    la = cfg.launcher
    hosts, _ = plan_world(la.hostfile, la.num_nodes, la.num_gpus, la.include, la.exclude)
    try:
        return with_rendezvous_port(cfg, single_node=list(hosts) == ["localhost"] and node_rank is None)
    except ValueError as exc:
        raise LaunchError(str(exc)) from None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if not os.path.isfile(args.script):
            raise LaunchError(f"script not found: {args.script}")
        cfg = load_for_launch(args.configs, args.conf_dir, cli_overrides(args))
        check_inputs(cfg, args.script)
        cfg = _choose_port(cfg, args.node_rank)
        run_dir = make_run_dir(cfg, args.script)
        cmd, env = launch_command(cfg, args.script, run_dir, args.node_rank)
    except (ConfigError, HostfileError, LaunchError) as exc:
        print(f"deepy.py: error: {exc}", file=sys.stderr)
        return 1
    logger.info("run directory: %s", run_dir)
    logger.info("launching: %s", " ".join(c if len(c) < 200 else c[:60] + "..." for c in cmd))
    if args.dry_run:
        print(" ".join(cmd))
        return 0
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvpe(cmd[0], cmd, {**os.environ, **env})
    return 0  # not reached
