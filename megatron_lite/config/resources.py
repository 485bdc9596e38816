"""Hostfiles and local devices: how many ranks a run will have, without importing torch (used by
deepy.py before launch and by ``python -m megatron_lite.config``).

A hostfile is DeepSpeed's format, one ``hostname slots=N`` per line, ``#`` comments allowed.
GPT-NeoX configs ship a placeholder ``hostfile: /mock_path``; like DeepSpeed's runner we treat
a hostfile that does not exist as "local resources only" (with a warning), while a hostfile
that exists but is malformed is an error naming the file and line.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections import OrderedDict

from megatron_lite.config import ConfigError, load_unresolved, resolve
from megatron_lite.config.schema import Config
from megatron_lite.utils.logging import get_logger

logger = get_logger(__name__)

_LINE = re.compile(r"^(?P<host>\S+)\s+slots\s*=\s*(?P<slots>\d+)\s*$")
# A host name (RFC 1123 labels, '_' allowed as /etc/hosts does), an IPv4 address or an IPv6 one: the name reaches a remote shell
# (pdsh, ssh), so anything else, shell syntax included, is refused.
_HOST = re.compile(r"^(?:[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*$"
                   r"|^[0-9A-Fa-f:]+$")


class HostfileError(ValueError):
    """A malformed hostfile (the message names the file and line)."""


def parse_hostfile(path: str) -> OrderedDict[str, int]:
    """``host -> slots`` in file order."""
    hosts: OrderedDict[str, int] = OrderedDict()
    with open(path, encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, start=1):
            text = line.split("#", 1)[0].strip()
            if not text:
                continue
            match = _LINE.match(text)
            if match is None:
                raise HostfileError(
                    f"{path}:{lineno}: expected 'hostname slots=N', got {line.strip()!r}"
                )
            host, slots = match["host"], int(match["slots"])
            if not _HOST.match(host) or len(host) > 253:
                raise HostfileError(f"{path}:{lineno}: {host!r} is not a valid host name")
            if slots < 1:
                raise HostfileError(f"{path}:{lineno}: slots must be at least 1")
            if host in hosts:
                raise HostfileError(f"{path}:{lineno}: host {host} is listed twice")
            hosts[host] = slots
    if not hosts:
        raise HostfileError(f"{path}: no hosts listed")
    return hosts


def read_hostfile(path: str | None) -> OrderedDict[str, int] | None:
    """The hostfile's hosts, or None when unset or missing (local run, as DeepSpeed does)."""
    if not path:
        return None
    if not os.path.isfile(path):
        logger.warning("hostfile %s not found: running on local resources only", path)
        return None
    return parse_hostfile(path)


def _filter_hosts(hosts: OrderedDict[str, int], include: str | None, exclude: str | None):
    """Apply DeepSpeed's ``host1:0,1@host2`` include/exclude syntax to slot counts."""
    def parse(spec: str) -> dict[str, list[int] | None]:
        out: dict[str, list[int] | None] = {}
        for part in spec.split("@"):
            name, _, slots = part.partition(":")
            if name not in hosts:
                raise HostfileError(f"include/exclude names unknown host {name!r}")
            out[name] = [int(s) for s in slots.split(",")] if slots else None
        return out

    result = OrderedDict(hosts)
    if include:
        chosen = parse(include)
        result = OrderedDict(
            (h, len(s) if s is not None else hosts[h]) for h, s in chosen.items()
        )
    if exclude:
        for host, slots in parse(exclude).items():
            if slots is None:
                result.pop(host, None)
            elif host in result:
                result[host] = result[host] - len(slots)
        result = OrderedDict((h, n) for h, n in result.items() if n > 0)
    return result


def local_gpu_count() -> int:
    """GPUs on this machine: CUDA_VISIBLE_DEVICES, else ``nvidia-smi -L``, else 0."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    if shutil.which("nvidia-smi") is None:
        return 0
    try:
        out = subprocess.run(
            ["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))


def plan_world(
    hostfile: str | None,
    num_nodes: int,
    num_gpus: int | None,
    include: str | None = None,
    exclude: str | None = None,
) -> tuple[OrderedDict[str, int], int]:
    """(host -> processes, world size) that the DeepSpeed runner will start."""
    hosts = read_hostfile(hostfile)
    if hosts is None:
        per_node = num_gpus if num_gpus is not None else max(local_gpu_count(), 1)
        if num_nodes not in (-1, 1):
            raise HostfileError(f"num_nodes: {num_nodes} needs a hostfile listing the nodes")
        hosts = OrderedDict([("localhost", per_node)])
    else:
        hosts = _filter_hosts(hosts, include, exclude)
        if num_nodes > 0:
            if num_nodes > len(hosts):
                raise HostfileError(
                    f"num_nodes: {num_nodes} but the hostfile {hostfile} lists {len(hosts)} hosts"
                )
            hosts = OrderedDict(list(hosts.items())[:num_nodes])
        if num_gpus is not None:
            hosts = OrderedDict((h, min(n, num_gpus)) for h, n in hosts.items())
    return hosts, sum(hosts.values())


def launch_world_size(cfg: Config) -> int:
    """Ranks the run will have: ``global_num_gpus`` when the config sets it, else what the
    DeepSpeed runner starts for the hostfile (or this machine)."""
    if cfg.parallel.global_num_gpus is not None:
        return cfg.parallel.global_num_gpus
    la = cfg.launcher
    return plan_world(la.hostfile, la.num_nodes, la.num_gpus, la.include, la.exclude)[1]


def load_for_launch(names: list[str], config_dir: str | None = None,
                    overrides: dict | None = None, world_size: int | None = None) -> Config:
    """The merged config, derived for ``world_size`` ranks, or for the world the launcher will
    start (hostfile, num_nodes, num_gpus, include/exclude or ``global_num_gpus``): what deepy.py
    and ``python -m megatron_lite.config`` resolve."""
    cfg = load_unresolved(names, config_dir, overrides)
    if world_size is None:
        try:
            world_size = launch_world_size(cfg)
        except (HostfileError, OSError) as exc:
            raise ConfigError(str(exc)) from None
    return resolve(cfg, world_size)

