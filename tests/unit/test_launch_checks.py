"""Checks before a multi-node launch, and the stop signal's target (issue #17, 23, 24, 27)."""

from __future__ import annotations

import shlex
import signal
import socket
import subprocess

import pytest

from megatron_lite.config.resources import HostfileError, parse_hostfile
from megatron_lite.launcher import deepy
from megatron_lite.launcher.hosts import HostCheckError, check_hosts, check_shell_safe_paths
from megatron_lite.launcher.supervisor import is_worker, remote_signal_command

RUN_DIR = "/runs/a b/$HOME/20261129-train"  # a path with a space and shell syntax


@pytest.mark.parametrize("host", ["node;id", "$(id)", "a`b`", "-oProxyCommand=x", "n..1"])
def test_a_host_name_with_shell_syntax_is_refused(tmp_path, host):
    hostfile = tmp_path / "hosts"
    hostfile.write_text(f"good-1 slots=1\n{host} slots=1\n")
    with pytest.raises(HostfileError, match="hosts:2: .* is not a valid host name"):
        parse_hostfile(str(hostfile))


def test_host_names_and_addresses_are_accepted(tmp_path):
    hostfile = tmp_path / "hosts"
    hostfile.write_text("gpu-node-01.cluster.local slots=8\nnode_2 slots=8\n10.0.0.3 slots=8\nfe80::1 slots=8\n")
    assert list(parse_hostfile(str(hostfile))) == ["gpu-node-01.cluster.local", "node_2", "10.0.0.3", "fe80::1"]


def test_a_path_the_remote_shell_would_misread_is_refused():
    check_shell_safe_paths([("the script", "/home/u/megatron_lite/train.py")])
    with pytest.raises(HostCheckError, match=r"the run directory '/runs/a b/\$HOME/20261129-train' holds ' \$'"):
        check_shell_safe_paths([("the run directory", RUN_DIR)])


def _ssh_port_open(host: str) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((host, 22)) == 0


def test_an_unresolvable_host_is_named():
    with pytest.raises(HostCheckError, match="host no-such-host.invalid does not resolve"):
        check_hosts(["localhost", "no-such-host.invalid"])


def test_a_host_without_ssh_is_named():
    if _ssh_port_open("127.0.0.2"):
        pytest.skip("an ssh server listens here")
    with pytest.raises(HostCheckError, match="host 127.0.0.2 does not answer ssh"):
        check_hosts(["127.0.0.2"])


def test_deepy_checks_every_host_before_launch(tmp_path, capsys):
    hostfile = tmp_path / "hosts"
    hostfile.write_text("localhost slots=1\nno-such-host.invalid slots=1\n")
    config = tmp_path / "c.yml"
    config.write_text(f"num_layers: 1\nhostfile: {hostfile}\nlog_dir: {tmp_path / 'logs'}\n")
    script = tmp_path / "noop.py"
    script.write_text("")
    assert deepy.main([str(script), str(config)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["deepy.py: error: host no-such-host.invalid does not resolve (Name or service not known)"]
    assert not (tmp_path / "logs").exists()


def test_the_stop_signal_matches_this_runs_workers_only():
    worker = ["/venv/bin/python", "-u", "train.py", "--local_rank=1", "--megatron_lite_config=eA==",
              f"--run_dir={RUN_DIR}"]
    launch = ["/venv/bin/python", "-u", "-m", "deepspeed.launcher.launch", "--world_info=e30=", "--node_rank=0",
              "train.py", "--megatron_lite_config=eA==", f"--run_dir={RUN_DIR}"]
    other_run = [*worker[:-1], f"--run_dir={RUN_DIR}-1"]
    assert is_worker(worker, RUN_DIR) and not is_worker(launch, RUN_DIR) and not is_worker(other_run, RUN_DIR)
    argv = remote_signal_command(["node-1", "node-2"], RUN_DIR, signal.SIGTERM)
    assert argv[:6] == ["pdsh", "-S", "-f", "1024", "-w", "node-1,node-2"]
    remote = shlex.split(argv[6])  # what the remote shell makes of it: no expansion, one pattern
    assert remote[:4] == ["pkill", "-TERM", "-f", "--"] and len(remote) == 5
    lines = "\n".join(" ".join(a) for a in (worker, launch, other_run)) + "\n"
    found = subprocess.run(["grep", "-E", "--", remote[4]], input=lines, capture_output=True, text=True).stdout
    assert found.splitlines() == [" ".join(worker)]  # pkill -f matches the same way


def test_a_missing_peer_is_one_line_after_rendezvous_timeout(tmp_path):
    """Rank 0 of 2 started alone (its peer's node never came up) with rendezvous_timeout: 2."""
    import os
    import sys
    from pathlib import Path

    from tests.distributed.spawn import free_port

    repo = Path(__file__).resolve().parents[2]
    config = tmp_path / "c.yml"
    config.write_text("num_layers: 1\nhidden_size: 8\nnum_attention_heads: 2\nseq_length: 8\n"
                      "tokenizer_type: CharLevelTokenizer\nrendezvous_timeout: 2\n")
    env = {**os.environ, "PYTHONPATH": str(repo), "RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0",
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    result = subprocess.run([sys.executable, str(repo / "generate.py"), f"--megatron_lite_config={config}",
                             f"--run_dir={tmp_path}"], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    assert "rank 0 of 2: no rendezvous with the other ranks at 127.0.0.1:" in result.stderr
    assert "within rendezvous_timeout=2s" in result.stderr


def test_finetune_without_load_loads_as_a_config_but_does_not_train(tmp_path, capsys):
    """GPT-NeoX's llama/train_config.yml sets finetune for a `load` given in another file."""
    from megatron_lite.config import load_config

    prefix = tmp_path / "corpus_text_document"
    for suffix in (".bin", ".idx"):
        prefix.with_name(prefix.name + suffix).write_bytes(b"")
    config = tmp_path / "c.yml"
    config.write_text(f"num_layers: 1\nfinetune: true\ndata_path: {prefix}\nlog_dir: {tmp_path / 'logs'}\n")
    assert load_config([str(config)], world_size=1).checkpoint.finetune
    script = tmp_path / "train.py"
    script.write_text("")
    assert deepy.main([str(script), str(config)]) == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        "deepy.py: error: finetune: true needs `load`: the checkpoint to start from"]


def test_a_groupedquery_config_as_llemma_writes_it(tmp_path):
    from megatron_lite.config import load_config

    config = tmp_path / "c.yml"
    config.write_text("num_layers: 1\nhidden_size: 64\nnum_attention_heads: 8\nattention_type: groupedquery\n"
                      "num_kv_heads: 2\ndata_types: {grad_accum_dtype: fp32}\n")
    cfg = load_config([str(config)], world_size=1)
    from megatron_lite.config.deepspeed_config import build_deepspeed_config

    assert cfg.model.num_kv_heads == 2
    cfg = load_config([str(config), str(_write(tmp_path, "b.yml", "train_micro_batch_size_per_gpu: 1\n"))], world_size=1)
    assert build_deepspeed_config(cfg, on_gpu=False)["data_types"] == {"grad_accum_dtype": "fp32"}


def _write(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_text(text)
    return path
