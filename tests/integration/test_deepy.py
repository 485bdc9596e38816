"""deepy.py end to end: CPU workers under the DeepSpeed launcher report a consistent
ParallelState; bad inputs fail before any worker starts; a two-node run is simulated."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.distributed.spawn import free_port
from tests.integration.common import resolved_config_of

REPO = Path(__file__).resolve().parents[2]
REPORT = "tests/scripts/report_parallel_state.py"


def write_config(tmp_path: Path, name: str = "run.yml", **keys) -> str:
    base = {
        "num_layers": 2, "hidden_size": 64, "num_attention_heads": 4, "seq_length": 32,
        "train_micro_batch_size_per_gpu": 2,
        "optimizer": {"type": "Adam", "params": {"lr": 0.001}},
        "log_dir": str(tmp_path / "logs"), "master_port": free_port(),
    }
    base.update(keys)
    path = tmp_path / name
    path.write_text(json.dumps(base))  # JSON is YAML
    return str(path)


def deepy(*args: str, timeout: int = 240, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, str(REPO / "deepy.py"), *args],
        capture_output=True, text=True, cwd=cwd, timeout=timeout, env=env,
    )


def read_states(tmp_path: Path) -> list[dict]:
    run_dirs = sorted((tmp_path / "logs").iterdir())
    states = []
    for run_dir in run_dirs:
        states += [json.loads(p.read_text()) for p in sorted(run_dir.glob("state_rank*.json"))]
    return sorted(states, key=lambda s: s["rank"])


def expected_coords(rank: int, tp: int, pp: int, dp: int) -> tuple[int, int, int]:
    # DeepSpeed's PipeModelDataParallelTopology: model innermost, then data, then pipe.
    return rank % tp, (rank // tp) % dp, rank // (tp * dp)


@pytest.mark.parametrize(
    "world, tp, pp",
    [(2, 2, 0), (2, 1, 2), (4, 2, 2), (4, 2, 0)],
    ids=["tp2", "pp2", "tp2xpp2", "tp2xdp2"],
)
def test_workers_report_consistent_parallel_state(tmp_path, world, tp, pp):
    cfg = write_config(tmp_path, num_gpus=world, model_parallel_size=tp, pipe_parallel_size=pp)
    result = deepy(REPORT, cfg)
    assert result.returncode == 0, result.stderr[-3000:]
    # DeepSpeed's per-rank CPU all-reduce buffers in /dev/shm are unlinked, not left behind.
    port = json.loads(Path(cfg).read_text())["master_port"]
    assert not glob.glob(f"/dev/shm/deepspeed_allreduce_buffer_*_{port}_*")
    states = read_states(tmp_path)
    assert [s["rank"] for s in states] == list(range(world))
    stages = max(pp, 1)
    dp = world // (tp * stages)
    for s in states:
        assert (s["world_size"], s["tp_size"], s["pp_size"], s["dp_size"]) == (world, tp, stages, dp)
        assert (s["tp_rank"], s["dp_rank"], s["pp_rank"]) == expected_coords(s["rank"], tp, stages, dp)
        assert s["measured"] == {"tp": tp, "pp": stages, "dp": dp, "mp": tp * stages}
        assert s["config_dp"] == dp and s["config_world"] == world
    # The run directory holds the resolved config, which loads back, and one log per rank.
    run_dir = next((tmp_path / "logs").iterdir())
    for rank in range(world):
        log = (run_dir / f"rank{rank}.log").read_text()
        assert f"[rank {rank}] INFO megatron_lite.launcher.worker: parallel layout" in log
    # The console shows rank 0's INFO lines only.
    assert "[rank 0] INFO" in result.stderr and "[rank 1] INFO" not in result.stderr
    printed = subprocess.run(
        [sys.executable, "-m", "megatron_lite.config", str(run_dir / "config.yml")],
        capture_output=True, text=True, cwd=REPO, timeout=60,
    )
    assert printed.returncode == 0, printed.stderr
    assert f"model_parallel_size: {tp}" in printed.stdout


def test_single_rank_runs_in_process(tmp_path):
    cfg = write_config(tmp_path, num_gpus=1)
    result = deepy(REPORT, cfg)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "deepspeed.launcher.runner" not in result.stderr
    [state] = read_states(tmp_path)
    assert state["world_size"] == 1 and state["measured"]["dp"] == 1


def test_two_nodes_simulated_over_loopback(tmp_path):
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("# two 'nodes', both this machine\nnode-a slots=1\nnode-b slots=1\n")
    cfg = write_config(tmp_path, hostfile=str(hostfile), master_addr="127.0.0.1", model_parallel_size=2)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen(
            [sys.executable, str(REPO / "deepy.py"), REPORT, cfg, "--node_rank", str(rank)],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for rank in (0, 1)
    ]
    outputs = [p.communicate(timeout=240) for p in procs]
    for proc, (_, err) in zip(procs, outputs):
        assert proc.returncode == 0, err[-3000:]
    states = read_states(tmp_path)
    assert [s["rank"] for s in states] == [0, 1]
    assert all(s["world_size"] == 2 and s["tp_size"] == 2 and s["measured"]["tp"] == 2 for s in states)


def test_dry_run_builds_the_multi_node_runner_command(tmp_path):
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("worker-1 slots=8\nworker-2 slots=8\nworker-3 slots=8\n")
    cfg = write_config(
        tmp_path, hostfile=str(hostfile), num_nodes=2, launcher="slurm", model_parallel_size=2,
        pipe_parallel_size=2, master_port=12345,
    )
    result = deepy(REPORT, cfg, "--dry_run")
    assert result.returncode == 0, result.stderr
    cmd = result.stdout.strip()
    for part in ("-m deepspeed.launcher.runner", f"--hostfile={hostfile}", "--launcher=slurm",
                 "--num_nodes=2", "--master_port=12345", "--master_addr=worker-1", REPORT):
        assert part in cmd
    resolved = resolved_config_of(result.stdout)
    assert "global_num_gpus: 16" in resolved and "data_parallel_size: 4" in resolved
    assert not (tmp_path / "logs").exists()  # a dry run writes nothing


def test_dry_run_prints_what_each_pdsh_node_runs(tmp_path):
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("worker-1 slots=2\nworker-2 slots=2\n")
    cfg = write_config(tmp_path, hostfile=str(hostfile), master_port=12345)
    result = deepy(REPORT, cfg, "--dry_run")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert "--launcher=pdsh" in lines[0] and len(lines) == 3
    for rank, host in enumerate(("worker-1", "worker-2")):
        assert lines[1 + rank].startswith(f"# node {rank} ({host}) runs, over pdsh: cd ")
        assert "-m deepspeed.launcher.launch --world_info=" in lines[1 + rank]
        assert f"--node_rank={rank} --master_addr=worker-1 --master_port=12345" in lines[1 + rank]


def test_cli_options_override_config(tmp_path):
    cfg = write_config(tmp_path, num_gpus=1)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("hello\n")
    result = deepy(REPORT, cfg, "--dry_run", "-i", str(prompts), "-o", "out.jsonl",
                   "--eval_tasks", "piqa", "lambada_openai", "--iteration", "3",
                   "--wandb_group", "g1")
    assert result.returncode == 0, result.stderr
    resolved = resolved_config_of(result.stdout)
    for line in ("text_gen_type: input-file", f"sample_input_file: {prompts}",
                 "sample_output_file: out.jsonl", "iteration: 3", "wandb_group: g1"):
        assert line in resolved
    assert "eval_tasks: [piqa, lambada_openai]" in resolved


@pytest.mark.parametrize(
    "case, expected",
    [
        ("missing_script", "script not found: nothere.py"),
        ("missing_config", "config file not found"),
        ("unknown_key", "unknown config key 'num_layerz'"),
        ("bad_hostfile", "expected 'hostname slots=N'"),
        ("world_layout", "not divisible by model_parallel_size"),
        ("missing_data", "dataset"),
        ("missing_prompts", "sample_input_file"),
    ],
)
def test_errors_exit_nonzero_before_any_worker(tmp_path, case, expected):
    script = REPORT
    args: list[str] = []
    if case == "missing_script":
        script, args = "nothere.py", [write_config(tmp_path)]
    elif case == "missing_config":
        args = [str(tmp_path / "absent.yml")]
    elif case == "unknown_key":
        args = [write_config(tmp_path, num_layerz=3)]
    elif case == "bad_hostfile":
        hostfile = tmp_path / "hosts"
        hostfile.write_text("node-a 8\n")
        args = [write_config(tmp_path, hostfile=str(hostfile))]
    elif case == "world_layout":
        args = [write_config(tmp_path, num_gpus=3, model_parallel_size=2)]
    elif case == "missing_data":
        (tmp_path / "train.py").write_text("raise SystemExit('worker must not start')\n")
        script = str(tmp_path / "train.py")
        args = [write_config(tmp_path, data_path=str(tmp_path / "nope_text_document"))]
    elif case == "missing_prompts":
        (tmp_path / "generate.py").write_text("raise SystemExit('worker must not start')\n")
        script = str(tmp_path / "generate.py")
        args = [write_config(tmp_path), "-i", str(tmp_path / "absent.txt")]
    result = deepy(script, *args)
    assert result.returncode != 0
    assert expected in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert "worker must not start" not in result.stderr
    logs = tmp_path / "logs"
    assert not logs.exists() or not any(logs.iterdir()), "no run directory for a failed launch"
