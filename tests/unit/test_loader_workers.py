"""DataLoader workers of a rank hold no listening socket and ignore stop signals (issue #17, 4, 12)."""

from __future__ import annotations

import signal
import socket

import numpy as np
import psutil

from megatron_lite.data.loaders import build_data_loader


class _WorkerReport:
    """A dataset whose samples describe the process that loads them."""

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> dict:
        listening = [c for c in psutil.Process().net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN]
        ignored = [signal.getsignal(s) == signal.SIG_IGN for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)]
        return {"text": np.array([len(listening), *ignored], dtype=np.int64)}


def test_workers_drop_the_rendezvous_socket_and_ignore_stop_signals():
    with socket.socket() as server:  # the rank's rendezvous server (TCPStore), listening
        server.bind(("127.0.0.1", 0))
        server.listen()
        loader = build_data_loader(_WorkerReport(), micro_batch_size=2, dp_rank=0, dp_size=1, num_workers=1)
        batches = [b["text"].tolist() for b in loader]
        own = [c for c in psutil.Process().net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN]
    assert batches == [[[0, 1, 1, 1]] * 2] * 2  # no listening socket, SIGINT/TERM/HUP ignored
    assert len(own) == 1  # the rank's own socket is untouched
