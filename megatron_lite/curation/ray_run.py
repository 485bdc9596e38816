"""Running the cluster stages (cluster.py) with datatrove's RayPipelineExecutor.

What datatrove leaves to us, found by running its executor here (tests/integration/
test_clean_data_ray.py): it expects ``ray.init()`` done by the caller; a failed task is only a
warning ("Only 0/2 tasks completed") and ``run()`` returns normally, after which a dependent
executor (``depends=``) polls the missing ranks every two minutes, forever; a task that asks for
more CPUs or memory than any node has waits forever for a placement group. So the stages run one
after the other here, each checked for completion, and the resources are checked first.

Where Ray runs: ``RAY_ADDRESS`` set (``auto``: the ``ray start`` cluster of this machine;
``host:6379``; ``ray://host:10001``): that cluster, which stays up. Unset: a Ray instance of our
own on this machine (``--workers`` CPUs, a small object store), shut down when the run ends.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
from collections.abc import Iterator
from typing import Any

from megatron_lite.curation.config import ClusterConfig
from megatron_lite.utils.logging import get_logger

logger = get_logger(__name__)
# Only the pickled executor and the tasks' small results go through the object store (the
# documents go through the work directory), so a local instance needs little: Ray's minimum is
# 75 MiB, and the default (30% of the machine's memory) would be reserved in /dev/shm for nothing.
_OBJECT_STORE_BYTES = 96 * 1024**2
_GIB = 1024**3
_CONNECT_SECONDS = 10
# the last "SomeError: message" line of a task's log (datatrove logs the traceback there)
_ERROR_LINE = re.compile(r"^(?:[\w.]+\.)?(\w*(?:Error|Exception|Interrupt)): (.+)$")


class RayRunError(RuntimeError):
    """The Ray run cannot start or a stage failed: one line for the user."""


def _ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise ImportError("--executor ray needs ray (pip install 'ray>=2.9')") from exc
    return ray


def _init(ray: Any, c: ClusterConfig, workers: int) -> tuple[str, bool]:
    """Connect to RAY_ADDRESS, or start a local instance sized for this run; returns where, and
    whether it is a local instance of ours."""
    address = os.environ.get("RAY_ADDRESS", "").strip()
    if address:
        answers = _check_reachable(address)
        try:
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
        except Exception as exc:  # ConnectionError, ValueError (bad address), RuntimeError, ...
            # Ray's token authentication (on by default in the Ray tested, 2.60) is used with an
            # explicit address only when RAY_AUTH_MODE says so; else the cluster refuses us
            hint = "" if os.environ.get("RAY_AUTH_MODE") or not answers else \
                " (a cluster with token authentication also needs RAY_AUTH_MODE=token and its token)"
            raise RayRunError(f"--executor ray: cannot connect to RAY_ADDRESS={address}: "
                              f"{_first_line(exc)}{hint}") from None
        return f"the Ray cluster at {address}", False
    cpus = workers * c.cpus_per_task
    # "local": never attach to a `ray start` cluster that happens to run here (RAY_ADDRESS=auto
    # does that); _memory: the tasks' reservations fit whatever the machine has free right now
    try:
        ray.init(address="local", num_cpus=cpus, object_store_memory=_OBJECT_STORE_BYTES,
                 _memory=int(cpus * c.mem_per_cpu_gb * _GIB), include_dashboard=False,
                 # The tasks log to the run's logs folder; forwarded here, a failing task's
                 # traceback would come before our one-line error.
                 logging_level=logging.WARNING, log_to_driver=False)
    except Exception as exc:  # Ray's processes did not come up (its logs: RAY_TMPDIR, /tmp/ray)
        raise RayRunError(f"--executor ray: cannot start a local Ray instance: {_first_line(exc)}") from exc
    return f"a local Ray instance ({cpus} CPUs)", True


def _check_reachable(address: str) -> bool:
    """A ``host:port`` (or ``ray://host:port``) that nothing listens on fails here in seconds:
    ray.init would retry the connection for minutes, printing a warning every few seconds.
    ``auto`` and malformed addresses are left to ray.init, which refuses them at once (False)."""
    match = re.fullmatch(r"(?:ray://)?\[?([\w.:-]+?)\]?:(\d+)", address)
    if not match:
        return False
    try:
        socket.create_connection((match.group(1), int(match.group(2))), timeout=_CONNECT_SECONDS).close()
    except OSError as exc:
        raise RayRunError(f"--executor ray: cannot connect to RAY_ADDRESS={address}: {exc.strerror or exc} "
                          "(a Ray head's address, host:6379 or ray://host:10001; unset: a local instance)") from None
    return True


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def check_resources(ray: Any, c: ClusterConfig, autoscaled: bool) -> None:
    """Some alive node must hold one task (cpus_per_task CPUs, their memory), else every task
    waits for its placement group: forever on a fixed cluster (an error), until the autoscaler
    adds a node on one that has it (``autoscaled``, which cannot be told from here: a warning)."""
    cpus, memory = c.cpus_per_task, c.mem_per_cpu_gb * c.cpus_per_task * _GIB
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    if any(r.get("CPU", 0) >= cpus and r.get("memory", 0) >= memory for r in nodes):
        return
    largest = max(nodes, key=lambda r: (r.get("CPU", 0), r.get("memory", 0)), default={})
    message = (f"no Ray node has {cpus} CPUs and {memory / _GIB:.1f} GB for one task (cluster.cpus_per_task x "
               f"cluster.mem_per_cpu_gb); the largest has {largest.get('CPU', 0):g} CPUs and "
               f"{largest.get('memory', 0) / _GIB:.1f} GB")
    if not autoscaled:
        raise RayRunError(f"--executor ray: {message}")
    logger.warning("%s: the tasks wait until the autoscaler adds such a node (Ctrl-C stops the run)", message)


@contextlib.contextmanager
def ray_session(c: ClusterConfig, workers: int) -> Iterator[None]:
    """Ray, connected (and checked) for the ``with`` block; disconnected after it, and a local
    instance of ours stopped with all its processes."""
    ray = _ray()
    where, local = _init(ray, c, workers)
    logger.info("running on %s", where)
    try:
        check_resources(ray, c, autoscaled=not local)
        yield
    finally:
        ray.shutdown()


def run_stage(executor: Any, name: str, logs: str) -> None:
    """``executor.run()``, then an error naming the first failed task and its error."""
    executor.run()
    # skip_completed=True: the completion markers (with False, datatrove calls every rank incomplete)
    failed = executor.get_incomplete_ranks(range(executor.world_size), skip_completed=True)
    if not failed:
        return
    log = os.path.join(logs, "logs", f"task_{failed[0]:05d}.log")
    raise RayRunError(f"--executor ray: {len(failed)} of {executor.world_size} {name} tasks failed; "
                      f"task {failed[0]}: {_task_error(log)} (log: {log})")


def _task_error(log: str) -> str:
    """The error a task's log ends with ("InputError: ..."), or that the log is missing."""
    try:
        with open(log, errors="replace") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return "no log (the worker died?)"
    for line in reversed(lines):
        match = _ERROR_LINE.match(line.strip())
        if match:
            return f"{match.group(1)}: {match.group(2)}"
    return "no error in its log"
