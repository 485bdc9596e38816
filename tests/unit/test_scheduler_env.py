"""Ranks started by mpirun or srun (DeepSpeed's openmpi/mvapich/slurm runners) find their place
from the scheduler's variables, as GPT-NeoX's deepspeed_mpi / deepspeed_slurm (issue #18)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from megatron_lite.launcher.scheduler_env import (
    SchedulerEnvError,
    apply_scheduler_ranks,
    scheduler_ranks,
)
from tests.distributed.spawn import free_port

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("environ, expected", [
    ({"OMPI_COMM_WORLD_RANK": "3", "OMPI_COMM_WORLD_SIZE": "8", "OMPI_COMM_WORLD_LOCAL_RANK": "1"}, ("3", "8", "1")),
    ({"MV2_COMM_WORLD_RANK": "2", "MV2_COMM_WORLD_SIZE": "4", "MV2_COMM_WORLD_LOCAL_RANK": "0"}, ("2", "4", "0")),
    ({"PMI_RANK": "5", "PMI_SIZE": "6", "MPI_LOCALRANKID": "2"}, ("5", "6", "2")),
    ({"SLURM_PROCID": "7", "SLURM_NTASKS": "16", "SLURM_LOCALID": "7"}, ("7", "16", "7")),
    # mpirun inside a Slurm allocation: the MPI ranks are the ones that count
    ({"OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "2", "SLURM_PROCID": "0", "SLURM_NTASKS": "1"}, ("1", "2", "0")),
])
def test_ranks_from_each_scheduler(environ, expected):
    found = scheduler_ranks(environ)
    assert (found["RANK"], found["WORLD_SIZE"], found["LOCAL_RANK"]) == expected


def test_a_launcher_set_rank_wins_unless_the_key_asks_for_the_scheduler():
    environ = {"RANK": "0", "WORLD_SIZE": "1", "SLURM_PROCID": "4", "SLURM_NTASKS": "8", "SLURM_LOCALID": "0"}
    assert scheduler_ranks(environ) is None
    assert scheduler_ranks(environ, slurm=True)["RANK"] == "4"
    env = dict(environ)
    apply_scheduler_ranks(env, "node-1", 12345, slurm=True)
    assert (env["RANK"], env["WORLD_SIZE"], env["MASTER_ADDR"], env["MASTER_PORT"]) == ("4", "8", "node-1", "12345")


def test_the_key_without_the_scheduler_is_one_line():
    with pytest.raises(SchedulerEnvError, match="deepspeed_slurm: true but SLURM_PROCID is not set"):
        scheduler_ranks({}, slurm=True)
    with pytest.raises(SchedulerEnvError, match="deepspeed_mpi: true but OMPI_COMM_WORLD_RANK or "
                                                "MV2_COMM_WORLD_RANK or PMI_RANK is not set"):
        scheduler_ranks({"RANK": "0"}, mpi=True)


def test_two_ranks_started_as_mpirun_starts_them_form_one_world(tmp_path):
    """What DeepSpeed's OpenMPIRunner runs on each rank: the script, no RANK, Open MPI's variables."""
    port = free_port()
    config = tmp_path / "c.yml"
    config.write_text(json.dumps({"num_layers": 2, "hidden_size": 16, "num_attention_heads": 2, "seq_length": 8,
                                  "model_parallel_size": 2, "master_addr": "127.0.0.1", "master_port": port,
                                  "tokenizer_type": "CharLevelTokenizer", "deepspeed_mpi": True}))
    base = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    procs = [subprocess.Popen(
        [sys.executable, str(REPO / "tests/scripts/report_parallel_state.py"),
         f"--megatron_lite_config={config}", f"--run_dir={tmp_path}"],
        env={**base, "PYTHONPATH": str(REPO), "OMPI_COMM_WORLD_RANK": str(r), "OMPI_COMM_WORLD_SIZE": "2",
             "OMPI_COMM_WORLD_LOCAL_RANK": str(r)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in (0, 1)]
    for proc in procs:
        _, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err[-3000:]
    states = [json.loads((tmp_path / f"state_rank{r}.json").read_text()) for r in (0, 1)]
    assert [s["rank"] for s in states] == [0, 1]
    assert all(s["world_size"] == 2 and s["measured"]["tp"] == 2 for s in states)
