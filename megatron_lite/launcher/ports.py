"""The rendezvous port: a free one for a single-node run unless the config names one.

Two runs on one machine (back to back, or side by side) would otherwise both take 29500, and
the second dies in the rendezvous with ``EADDRINUSE``. As ``torchrun --standalone`` does, a
single-node run without ``master_port`` binds port 0 and takes what the kernel hands out; a run
over several nodes keeps DeepSpeed's 29500 (every node must agree without talking first). An
explicit port that is taken on this machine is one line before anything starts.
"""

from __future__ import annotations

import socket
from dataclasses import replace

from megatron_lite.config import Config

DEFAULT_MULTI_NODE_PORT = 29500  # DeepSpeed's and torch.distributed's default


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("", 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int) -> bool:
    """Whether a rendezvous server could listen on ``port`` here (as TCPStore binds: all
    interfaces, address reuse on, so a port in TIME_WAIT counts as free)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("", port))
        except OSError:
            return False
        return True


def with_rendezvous_port(cfg: Config, single_node: bool) -> Config:
    """``cfg`` with ``master_port`` chosen (recorded in the run's config, seen by every rank).

    Raises ``ValueError`` naming the key when an explicit port is taken on this machine."""
    port = cfg.launcher.master_port
    if port is None:
        port = free_port() if single_node else DEFAULT_MULTI_NODE_PORT
    elif single_node and not port_is_free(port):
        raise ValueError(f"master_port: {port} is in use on this machine (another run?): choose "
                         "another port, or leave master_port unset for a free one")
    return replace(cfg, launcher=replace(cfg.launcher, master_port=port))
