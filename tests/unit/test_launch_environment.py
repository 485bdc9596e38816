"""The environment reaches every rank on every node (issue #17, 25): deepy writes the variables a
run needs into the run directory's deepspeed_env and points DeepSpeed's runner at it."""

from __future__ import annotations

import argparse
import os
import shlex
import stat
import subprocess

import pytest

from megatron_lite.config import config_from_flat, resolve
from megatron_lite.launcher.commands import launch_plan
from megatron_lite.launcher.environment import exported_variables, shell_escaped, write_env_file


def test_multi_node_runs_export_hf_wandb_and_listed_variables(tmp_path, monkeypatch):
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("worker-1 slots=2\nworker-2 slots=2\n")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("WANDB_API_KEY", "secret")
    monkeypatch.setenv("MY_SETTING", "a b $c")
    monkeypatch.setenv("UNRELATED", "x")
    cfg = resolve(config_from_flat({"num_layers": 1, "hostfile": str(hostfile), "master_port": 12345,
                                    "export_env_vars": ["MY_SETTING"]}), 4)
    plan = launch_plan(cfg, "train.py", str(tmp_path), None)
    assert "deepspeed.launcher.runner" in " ".join(plan.cmd)
    env_file = plan.env["DS_ENV_FILE"]
    assert write_env_file(str(tmp_path), os.environ, cfg.launcher.export_env_vars) == env_file
    lines = open(env_file).read().splitlines()
    assert "HF_HUB_OFFLINE=1" in lines and "WANDB_API_KEY=secret" in lines
    assert "MY_SETTING=a b \\$c" in lines  # escaped for DeepSpeed's remote `export K="..."`
    assert not any(line.startswith("UNRELATED=") for line in lines)
    assert stat.S_IMODE(os.stat(env_file).st_mode) == 0o600  # it may hold keys
    # DeepSpeed's runner finds it: its search joins the name to ~ and ., an absolute name wins.
    assert os.path.join(os.path.expanduser("~"), env_file) == env_file


def test_a_value_with_a_newline_is_left_out():
    assert exported_variables({"HF_A": "x\ny", "HF_B": "z"}) == {"HF_B": "z"}


def test_a_local_run_inherits_the_environment_without_a_file(tmp_path):
    cfg = resolve(config_from_flat({"num_layers": 1, "num_gpus": 2, "master_port": 12345}), 2)
    plan = launch_plan(cfg, "train.py", str(tmp_path), None)
    assert "DS_ENV_FILE" not in plan.env and plan.env_file is None


@pytest.mark.parametrize("value", ["a b $c", "x`id`", 'q"uote\\', "$(touch pwned)", "plain", "it's"])
def test_values_reach_the_remote_shell_as_data(tmp_path, value):
    """DeepSpeed's pdsh command: ``export K=<v>``, with <v> in double quotes once it holds a
    character outside its safe set (its add_export). The escaped value comes back exactly."""
    from deepspeed.launcher.multinode_runner import PDSHRunner

    runner = PDSHRunner(argparse.Namespace(user_args=[], user_script="x"), "")
    runner.add_export("K", shell_escaped(value))
    script = f"cd {shlex.quote(str(tmp_path))}; export K={runner.exports['K']}; printf %s \"$K\""
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout
    assert out == value and not (tmp_path / "pwned").exists()
