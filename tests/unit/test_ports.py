"""deepy's rendezvous port (issue #17, 12): a free one for a single-node run without
`master_port`, 29500 across nodes, one clear line for a taken explicit port."""

from __future__ import annotations

import socket

import pytest

from megatron_lite.config import config_from_flat
from megatron_lite.launcher import deepy
from megatron_lite.launcher.ports import with_rendezvous_port


def _cfg(**keys):
    return config_from_flat({"num_layers": 1, **keys})


def test_single_node_without_master_port_takes_a_free_port_each_time():
    ports = {with_rendezvous_port(_cfg(), single_node=True).launcher.master_port for _ in range(5)}
    assert len(ports) >= 2 and all(1024 <= p <= 65535 for p in ports)
    assert with_rendezvous_port(_cfg(), single_node=False).launcher.master_port == 29500
    assert with_rendezvous_port(_cfg(master_port=12345), single_node=False).launcher.master_port == 12345


def test_a_taken_explicit_port_is_one_line_before_launch(tmp_path, capsys):
    with socket.socket() as holder:  # another run's rendezvous server, from outside deepy
        holder.bind(("", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(ValueError, match=f"master_port: {port} is in use on this machine"):
            with_rendezvous_port(_cfg(master_port=port), single_node=True)
        script = tmp_path / "noop.py"
        script.write_text("")
        config = tmp_path / "c.yml"
        config.write_text(f"num_layers: 1\nmaster_port: {port}\nlog_dir: {tmp_path / 'logs'}\n")
        assert deepy.main([str(script), str(config), "--dry_run"]) == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [f"deepy.py: error: master_port: {port} is in use on this machine "
                                        "(another run?): choose another port, or leave master_port "
                                        "unset for a free one"]


def test_the_chosen_port_is_recorded_in_the_run_config(tmp_path, capsys):
    from tests.integration.common import resolved_config_of

    script = tmp_path / "noop.py"
    script.write_text("")
    config = tmp_path / "c.yml"
    config.write_text(f"num_layers: 1\nlog_dir: {tmp_path / 'logs'}\n")
    assert deepy.main([str(script), str(config), "--dry_run"]) == 0
    resolved = resolved_config_of(capsys.readouterr().out)
    port = int(next(line for line in resolved.splitlines() if line.startswith("master_port:")).split()[1])
    assert port != 29500  # a free port from the ephemeral range, recorded for every rank
