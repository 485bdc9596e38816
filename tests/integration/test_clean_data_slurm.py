"""tools/clean_data.py --executor slurm end to end, without Slurm: fake ``sbatch``, ``srun``,
``scontrol`` and ``scancel`` on PATH run each submitted job script here, at submission, as
Slurm would run it on a node (every array task with its SLURM_* variables, the job's output in
its ``--output`` file, ``afterok`` dependencies honoured). What runs is datatrove's real
SlurmPipelineExecutor: the sbatch scripts it writes, the executors it pickles, the
``launch_pickled_pipeline`` and ``merge_stats`` jobs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration import test_clean_data as base

corpus = base.corpus  # the fixture: two .jsonl.zst files (a bad line in one) and a .txt

# Runs every array task of the job at once (as a cluster may) and records the job in
# $FAKE_SLURM_DIR/jobs.json. It refuses what a real sbatch refuses that we can check here: an
# unknown partition, a malformed --mem-per-cpu or --time. FAKE_SBATCH_FAIL_AT=N: the N-th
# submission fails with sbatch's message.
SBATCH = r'''
import json, os, re, subprocess, sys

state = os.path.join(os.environ["FAKE_SLURM_DIR"], "jobs.json")
jobs = json.load(open(state)) if os.path.exists(state) else []
options = dict(arg[2:].split("=", 1) for arg in sys.argv[1:-1])
script = open(sys.argv[-1]).read()
directives = dict(re.findall(r"^#SBATCH --([\w-]+)=?(.*)$", script, re.M))

def refuse(message):
    print(f"sbatch: error: {message}", file=sys.stderr)
    sys.exit(1)

if len(jobs) + 1 == int(os.environ.get("FAKE_SBATCH_FAIL_AT", 0)):
    refuse("Batch job submission failed: Job violates accounting/QOS policy (job submit limit, user's size and/or time limits)")
if directives.get("partition") != os.environ["FAKE_SLURM_PARTITION"]:
    refuse(f"invalid partition specified: {directives.get('partition')}")
if not re.fullmatch(r"\d+[KMGT]?", directives.get("mem-per-cpu", "1")):
    refuse("Invalid --mem-per-cpu specification")
if not re.fullmatch(r"(\d+-)?\d+(:\d+){0,2}", directives.get("time", "1")):
    refuse("Invalid --time specification")
job_id = str(1000 + len(jobs))
first, last = map(int, directives.get("array", "0-0").split("%")[0].split("-"))
dependency = options.get("dependency") or directives.get("dependency")  # the stats job has it in the script
deps = [dep.split(":") for dep in filter(None, (dependency or "").split(","))]
states = {job["id"]: job["state"] for job in jobs}
state_now = "COMPLETED"
if any(kind == "afterok" and states[dep] != "COMPLETED" for kind, dep in deps):
    state_now = "PENDING (DependencyNeverSatisfied)"
else:
    env = {**os.environ, **dict(v.split("=", 1) for v in options.get("export", "ALL").split(",")[1:])}
    running = []
    for task in range(first, last + 1):
        log = directives["output"].replace("%A", job_id).replace("%a", str(task))
        running.append(subprocess.Popen(["bash", sys.argv[-1]], stdout=open(log, "a"), stderr=subprocess.STDOUT, env={
            **env, "SLURM_JOB_ID": job_id, "SLURM_ARRAY_JOB_ID": job_id, "SLURM_ARRAY_TASK_ID": str(task),
            "SLURM_JOB_NAME": directives["job-name"], "SLURM_NODELIST": "node-[1-2]", "SLURM_NODEID": "0",
            "SLURM_PROCID": "0", "SLURM_SUBMIT_DIR": os.getcwd()}))
    if any(process.wait() for process in running):
        state_now = "FAILED"
jobs.append({"id": job_id, "name": directives["job-name"], "tasks": last - first + 1, "state": state_now,
             "dependency": dependency, "script": script})
json.dump(jobs, open(state, "w"))
print(f"Submitted batch job {job_id}")
'''

SRUN = r'''
import os, sys

args = sys.argv[1:]
while args[0].startswith("-"):  # srun -l -n 1 COMMAND ...: one task, here
    if args.pop(0) in ("-n", "-N", "-c"):
        args.pop(0)
os.execvp(args[0], args)
'''

SCONTROL = r'''
import sys

if sys.argv[1:3] == ["show", "hostnames"]:
    print("node-1\nnode-2")
'''

SCANCEL = r'''
import os, sys

with open(os.path.join(os.environ["FAKE_SLURM_DIR"], "cancelled"), "a") as handle:
    handle.write(" ".join(sys.argv[1:]) + "\n")
'''


@pytest.fixture
def fake_slurm(tmp_path) -> dict:
    """A PATH with the four commands, and the environment that runs clean_data.py with it."""
    bin_dir, state = tmp_path / "fake_bin", tmp_path / "fake_slurm"
    bin_dir.mkdir()
    state.mkdir()
    for name, source in (("sbatch", SBATCH), ("srun", SRUN), ("scontrol", SCONTROL), ("scancel", SCANCEL)):
        (bin_dir / name).write_text(f"#!{sys.executable}\n{source}")
        (bin_dir / name).chmod(0o755)
    # PATH without the interpreter's bin directory: the job must find datatrove's commands itself
    env = {**os.environ, "PATH": f"{bin_dir}:/usr/bin:/bin", "FAKE_SLURM_DIR": str(state),
           "FAKE_SLURM_PARTITION": "cpu"}
    return {"env": env, "state": state}


def jobs(fake: dict) -> list[dict]:
    return json.loads((fake["state"] / "jobs.json").read_text())


def run_clean(cwd: Path, env: dict, *args: str, executor: str = "slurm") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(base.REPO / "tools" / "clean_data.py"), "--executor", executor, *args],
                          cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=240)


@pytest.fixture
def job_dir(corpus, tmp_path) -> Path:
    """The inputs, relative to the directory the jobs run in, and a small config: 4 bands (5
    bucket tasks, not 21: each task is one interpreter start), 2 process tasks for the 3 files
    (one task takes two), Slurm's keys."""
    shutil.copytree(corpus["root"], tmp_path / "in")
    (tmp_path / "c.yml").write_text("dedup: {num_perm: 16, bands: 4, rows: 4}\n"
                                    "cluster: {partition: cpu, tasks: 2, time: '1:00:00', mem_per_cpu_gb: 1.5}\n")
    return tmp_path


INPUT = "in/*.jsonl.zst,in/c.txt"


def test_slurm_run_matches_pool(job_dir, fake_slurm):
    """Three job arrays (2 process tasks, 5 bucket tasks, finalize) chained by afterok, each
    with its stats-merging job; the outputs equal the pool run's byte for byte."""
    env = fake_slurm["env"]
    pool = run_clean(job_dir, env, "--input", INPUT, "--output-dir", "pool", "--config", "c.yml", executor="pool")
    assert pool.returncode == 0, pool.stderr
    result = run_clean(job_dir, env, "--input", INPUT, "--output-dir", "out", "--config", "c.yml",
                       "--work-dir", "work")
    assert result.returncode == 0, result.stderr
    submitted = jobs(fake_slurm)
    assert [(j["name"], j["tasks"], j["state"]) for j in submitted] == [
        ("clean_data_1_process", 2, "COMPLETED"), ("clean_data_1_process", 1, "COMPLETED"),  # + merge_stats
        ("clean_data_2_buckets", 5, "COMPLETED"), ("clean_data_2_buckets", 1, "COMPLETED"),
        ("clean_data_3_finalize", 1, "COMPLETED"), ("clean_data_3_finalize", 1, "COMPLETED")]
    ids = [j["id"] for j in submitted]
    assert [j["dependency"] for j in submitted] == [None, f"afterok:{ids[0]}", f"afterok:{ids[0]}",
                                                    f"afterok:{ids[2]}", f"afterok:{ids[2]}", f"afterok:{ids[4]}"]
    assert "--mem-per-cpu=1536M" in submitted[0]["script"] and "--qos" not in submitted[0]["script"]
    for name in base.OUTPUTS:
        assert (job_dir / "out" / name).read_bytes() == (job_dir / "pool" / name).read_bytes(), name
    assert sorted(p.name for p in (job_dir / "out").iterdir()) == sorted(base.OUTPUTS)
    # what the user is told: the jobs, where the outputs appear, how to follow the run
    assert f"finalize job {ids[4]}" in result.stdout and f"squeue -j {ids[4]}" in result.stdout
    assert f"process job {ids[0]} (2 tasks)" in result.stdout and "out" in result.stdout
    assert str(job_dir / "work" / "logs") in result.stdout
    # the intermediates are gone once finalize is done; the logs stay
    assert sorted(p.name for p in (job_dir / "work").iterdir()) == ["logs"]
    final_log = (job_dir / "work" / "logs" / "3_finalize" / "slurm_logs" / f"{ids[4]}_0.out").read_text()
    assert f"wrote {job_dir / 'out'}: 15 documents, 12 kept, 3 removed" in final_log


@pytest.mark.parametrize("fail_at", [1, 3])
def test_failed_submission_is_one_line(job_dir, fake_slurm, fail_at):
    """sbatch refusing a job: its message and one error line, no traceback; the jobs already
    submitted (here: the process array and its stats job) are cancelled."""
    env = {**fake_slurm["env"], "FAKE_SBATCH_FAIL_AT": str(fail_at)}
    result = run_clean(job_dir, env, "--input", INPUT, "--output-dir", "out", "--config", "c.yml")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("clean_data.py: error:")]
    assert len(errors) == 1 and "sbatch" in errors[0], result.stderr
    assert "job submit limit" in errors[0]
    cancelled = (fake_slurm["state"] / "cancelled")
    if fail_at == 1:
        assert "nothing was submitted" in errors[0] and not cancelled.exists()
    else:
        assert cancelled.read_text().split() == ["1000", "1001"] and "cancelled 1000 1001" in errors[0]
    assert list((job_dir / "out").iterdir()) == []  # no outputs, no work directory: a re-run needs no --force


def test_bad_slurm_config_is_one_line(job_dir, fake_slurm):
    env = fake_slurm["env"]
    (job_dir / "c.yml").write_text("cluster: {partition: gpu}\n")
    result = run_clean(job_dir, env, "--input", INPUT, "--output-dir", "out", "--config", "c.yml")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert "clean_data.py: error: sbatch refused" in result.stderr and "invalid partition specified: gpu" in result.stderr
    (job_dir / "c.yml").write_text("dedup: {num_perm: 16, bands: 4, rows: 4}\n")
    result = run_clean(job_dir, env, "--input", INPUT, "--output-dir", "out2", "--config", "c.yml")
    assert result.returncode == 1 and "needs cluster.partition" in result.stderr
    (job_dir / "c.yml").write_text("cluster: {partition: cpu}\n")
    result = run_clean(job_dir, {**env, "PATH": "/usr/bin:/bin"}, "--input", INPUT, "--output-dir", "out3",
                       "--config", "c.yml")
    assert result.returncode == 1 and "needs sbatch on PATH" in result.stderr and "Traceback" not in result.stderr
    assert not (job_dir / "out2").exists() and not (job_dir / "out3").exists()  # checked before anything is made
