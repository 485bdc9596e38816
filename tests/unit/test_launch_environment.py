"""The environment reaches every rank on every node (issue #17, 25): deepy writes the variables a
run needs into the run directory's deepspeed_env and points DeepSpeed's runner at it."""

from __future__ import annotations

import os
import stat

from megatron_lite.config import config_from_flat, resolve
from megatron_lite.launcher import deepy
from megatron_lite.launcher.environment import exported_variables


def test_multi_node_runs_export_hf_wandb_and_listed_variables(tmp_path, monkeypatch):
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("worker-1 slots=2\nworker-2 slots=2\n")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("WANDB_API_KEY", "secret")
    monkeypatch.setenv("MY_SETTING", "a b $c")
    monkeypatch.setenv("UNRELATED", "x")
    cfg = resolve(config_from_flat({"num_layers": 1, "hostfile": str(hostfile), "master_port": 12345,
                                    "export_env_vars": ["MY_SETTING"]}), 4)
    cmd, env = deepy.launch_command(cfg, "train.py", str(tmp_path), None)
    assert "deepspeed.launcher.runner" in " ".join(cmd)
    env_file = env["DS_ENV_FILE"]
    lines = open(env_file).read().splitlines()
    assert "HF_HUB_OFFLINE=1" in lines and "WANDB_API_KEY=secret" in lines and "MY_SETTING=a b $c" in lines
    assert not any(line.startswith("UNRELATED=") for line in lines)
    assert stat.S_IMODE(os.stat(env_file).st_mode) == 0o600  # it may hold keys
    # DeepSpeed's runner finds it: its search joins the name to ~ and ., an absolute name wins.
    assert os.path.join(os.path.expanduser("~"), env_file) == env_file


def test_a_value_with_a_newline_is_left_out():
    assert exported_variables({"HF_A": "x\ny", "HF_B": "z"}) == {"HF_B": "z"}


def test_a_local_run_inherits_the_environment_without_a_file(tmp_path):
    cfg = resolve(config_from_flat({"num_layers": 1, "num_gpus": 2, "master_port": 12345}), 2)
    _, env = deepy.launch_command(cfg, "train.py", str(tmp_path), None)
    assert "DS_ENV_FILE" not in env and not (tmp_path / "deepspeed_env").exists()
