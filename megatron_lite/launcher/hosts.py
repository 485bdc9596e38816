"""Before a multi-node launch: every host resolves and answers ssh, and every path is shell-safe.

DeepSpeed's runner checks only the first host; one unreachable host elsewhere left the other
ranks waiting for the rendezvous timeout (600 s) before a traceback. The checks run in parallel
(one ssh per host, a 10 s connect timeout) and the first failure is one line naming the host.

DeepSpeed's pdsh command (``cd <cwd>; <python> -u -m deepspeed.launcher.launch ... <script>
<args>``) puts paths into the remote shell unquoted (or in double quotes, where ``$`` and
backquotes still run): a path with a space breaks ``cd``, one with shell syntax runs it on every
node. We cannot quote inside DeepSpeed's command, so such a path is refused with one line.
"""

from __future__ import annotations

import re
import socket
import subprocess
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor

SSH_CONNECT_TIMEOUT_S = 10
_SHELL_SAFE = re.compile(r"^[\w@%+=:,./-]*$")  # DeepSpeed's own "needs no quotes" set


class HostCheckError(RuntimeError):
    """A host that cannot take part, or a path the remote shell would misread (one line)."""


def check_shell_safe_paths(paths: Iterable[tuple[str, str]]) -> None:
    """Refuse ``(what, path)`` pairs whose path the remote shell would split or interpret."""
    for what, path in paths:
        if not _SHELL_SAFE.match(path):
            bad = sorted({c for c in path if not _SHELL_SAFE.match(c)})
            raise HostCheckError(
                f"{what} {path!r} holds {''.join(bad)!r}, which DeepSpeed's pdsh command passes to "
                "the remote shell unquoted: use a path of letters, digits and _@%+=:,./- "
                "(or start each node by hand with --node_rank)")


def _resolves(host: str) -> str | None:
    try:
        socket.getaddrinfo(host, 22)
    except socket.gaierror as exc:
        return f"host {host} does not resolve ({exc.strerror})"
    return None


def _answers_ssh(host: str) -> str | None:
    """None when ``host`` answers ssh without a password (as pdsh will reach it), else why not."""
    argv = ["ssh", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={SSH_CONNECT_TIMEOUT_S}", host, "true"]
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=SSH_CONNECT_TIMEOUT_S + 20)
    except subprocess.TimeoutExpired:
        return f"host {host} does not answer ssh within {SSH_CONNECT_TIMEOUT_S + 20} s"
    except FileNotFoundError:
        return "ssh is not installed on this machine (pdsh launches reach the nodes through it)"
    if result.returncode != 0:
        reason = (result.stderr.strip().splitlines() or [f"exit code {result.returncode}"])[-1]
        return f"host {host} does not answer ssh without a password ({reason})"
    return None


def check_hosts(hosts: Sequence[str]) -> None:
    """Raise ``HostCheckError`` naming the first host (hostfile order) that does not resolve,
    else the first that does not answer ssh. Hosts are checked in parallel."""
    with ThreadPoolExecutor(max_workers=min(32, max(1, len(hosts)))) as pool:
        for check in (_resolves, _answers_ssh):
            problem = next((p for p in pool.map(check, hosts) if p), None)
            if problem:
                raise HostCheckError(problem)
