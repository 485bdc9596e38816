"""The command that starts a run's workers, and how deepy.py runs it.

- world size 1 without a hostfile: the script itself, run in deepy.py's place (``exec``), with
  the rendezvous variables set, so a laptop run has no launcher overhead;
- ``--node_rank K``: ``deepspeed.launcher.launch`` for this node's ranks (a manual launch);
- otherwise ``deepspeed.launcher.runner`` with hostfile, num_nodes, num_gpus, include/exclude,
  master_addr/port and launcher (pdsh/openmpi/mvapich/slurm) from the config; on a machine
  without GPUs it starts ``num_gpus`` CPU processes (gloo).
Both launcher forms run under ``supervisor.py``.
"""

from __future__ import annotations

import base64
import json
import os
import shlex
import sys
from dataclasses import dataclass, field

from megatron_lite.config import Config
from megatron_lite.config.resources import plan_world
from megatron_lite.launcher.worker_args import encode_worker_args


class LaunchError(RuntimeError):
    """A problem found before launch (missing script, input file, ...)."""


@dataclass(frozen=True)
class LaunchPlan:
    cmd: list[str]
    env: dict[str, str]  # added to deepy.py's environment
    in_place: bool  # exec the script itself (one rank, this machine)
    hosts: list[str]  # the nodes taking part, in hostfile order
    pdsh_nodes: bool = False  # DeepSpeed's runner reaches the other nodes over pdsh + ssh
    env_file: str | None = None  # <run_dir>/deepspeed_env, written just before launch
    node_commands: list[tuple[str, list[str]]] = field(default_factory=list)  # (host, argv)


def _master_addr(cfg: Config, hosts: list[str]) -> str:
    return cfg.launcher.master_addr or ("127.0.0.1" if hosts == ["localhost"] else hosts[0])


def node_command(cfg: Config, script: str, run_dir: str, node_rank: int) -> list[str]:
    """``deepspeed.launcher.launch`` for node ``node_rank``'s ranks: what ``--node_rank`` runs,
    and what DeepSpeed's runner runs on that node over pdsh."""
    la = cfg.launcher
    hosts, _ = plan_world(la.hostfile, la.num_nodes, la.num_gpus, la.include, la.exclude)
    if not 0 <= node_rank < len(hosts):
        raise LaunchError(f"--node_rank {node_rank} but the hostfile lists {len(hosts)} nodes")
    world_info = {host: list(range(slots)) for host, slots in hosts.items()}
    encoded = base64.urlsafe_b64encode(json.dumps(world_info).encode()).decode()
    return [sys.executable, "-u", "-m", "deepspeed.launcher.launch", f"--world_info={encoded}",
            f"--node_rank={node_rank}", f"--master_addr={_master_addr(cfg, list(hosts))}",
            f"--master_port={la.master_port}", script, *encode_worker_args(cfg, run_dir)]


def launch_plan(cfg: Config, script: str, run_dir: str, node_rank: int | None) -> LaunchPlan:
    """How to start the workers of ``script`` (nothing is written or started here)."""
    la = cfg.launcher
    hosts_slots, world = plan_world(la.hostfile, la.num_nodes, la.num_gpus, la.include, la.exclude)
    hosts = list(hosts_slots)
    if node_rank is not None:
        return LaunchPlan(node_command(cfg, script, run_dir, node_rank), {}, False, hosts)
    tail = [script, *encode_worker_args(cfg, run_dir)]
    if world == 1 and hosts == ["localhost"]:
        env = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1",
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(la.master_port)}
        return LaunchPlan([sys.executable, "-u", *tail], env, True, hosts)
    cmd = [sys.executable, "-u", "-m", "deepspeed.launcher.runner", f"--master_port={la.master_port}"]
    has_hostfile = bool(la.hostfile and os.path.isfile(la.hostfile))
    env, env_file = {}, None
    if has_hostfile:
        cmd += [f"--hostfile={la.hostfile}", f"--launcher={la.launcher}"]
        cmd += [f"--num_nodes={la.num_nodes}"] if la.num_nodes > 0 else []
        cmd.append(f"--master_addr={_master_addr(cfg, hosts)}")
        cmd += [f"--include={la.include}"] if la.include else []
        cmd += [f"--exclude={la.exclude}"] if la.exclude else []
        env_file = os.path.join(os.path.abspath(run_dir), "deepspeed_env")
        env = {"DS_ENV_FILE": env_file}
    if la.num_gpus is not None or not has_hostfile:
        cmd.append(f"--num_gpus={hosts_slots[hosts[0]]}")
    pdsh = la.launcher == "pdsh" and len(hosts) > 1  # DeepSpeed's runner goes multi-node
    nodes = [(h, node_command(cfg, script, run_dir, k)) for k, h in enumerate(hosts)] if pdsh else []
    return LaunchPlan(cmd + tail, env, False, hosts, pdsh, env_file, nodes)


def describe(plan: LaunchPlan) -> str:
    """What ``--dry_run`` prints: the command, and for a pdsh launch what each node runs."""
    lines = [shlex.join(plan.cmd)]
    for rank, (host, argv) in enumerate(plan.node_commands):
        lines.append(f"# node {rank} ({host}) runs, over pdsh: cd {shlex.quote(os.getcwd())} && {shlex.join(argv)}")
    return "\n".join(lines)
