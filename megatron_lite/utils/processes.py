"""What a helper process forked from a rank (a DataLoader worker) does first.

- It ignores stop signals (SIGINT, SIGTERM, SIGHUP). The rank decides when to stop: it saves a
  checkpoint first, then ends its workers. A worker killed by a Ctrl-C sent to the terminal's
  process group, or by a stop signal matched on the rank's command line (its workers share it),
  made the rank's next batch fail instead of letting it save.
- It closes the listening sockets it inherited. Rank 0 runs the rendezvous server; a forked
  worker held its port open after the run ended, so the next run on that port failed with
  ``EADDRINUSE``. Closing the child's copy does not touch the parent's socket.
"""

from __future__ import annotations

import os
import signal

import psutil  # DeepSpeed's dependency: a portable list of this process's sockets and their fds

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def close_listening_sockets() -> int:
    """Close this process's listening TCP sockets; how many were closed."""
    closed = 0
    for conn in psutil.Process().net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.fd >= 0:
            try:
                os.close(conn.fd)
                closed += 1
            except OSError:
                pass
    return closed


def detach_helper_process(_worker_id: int = 0) -> None:
    """A DataLoader ``worker_init_fn``: ignore stop signals, drop inherited listening sockets."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    close_listening_sockets()
