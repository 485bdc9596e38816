"""Submitting the cluster stages (cluster.py) to Slurm with datatrove's SlurmPipelineExecutor:
three job arrays chained by ``afterok``, each followed by datatrove's stats-merging job.

What datatrove leaves to us, found by running its executor against fake ``sbatch``/``srun``
(tests/integration/test_clean_data_slurm.py): sbatch takes whole memory units only, the job
script must find datatrove's commands without the caller's virtual environment on PATH, and a
refused submission is a ``CalledProcessError`` whose message went to stderr, after which the
jobs already submitted would wait forever for a dependency that never comes.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from typing import Any

from megatron_lite.curation.config import ClusterConfig

_STAGES = ("process", "buckets", "finalize")


class SubmitError(RuntimeError):
    """Slurm refused the run: sbatch missing or failing, or an incomplete cluster config.
    ``jobs_left``: some submitted job could not be cancelled (its work directory is in use)."""

    def __init__(self, message: str, jobs_left: bool = False) -> None:
        super().__init__(message)
        self.jobs_left = jobs_left


class JobIds:
    """datatrove's ``job_id_retriever`` for every sbatch call (sbatch prints "Submitted batch
    job N"), the stats-merging jobs' included, so that a failed submission can cancel them all."""

    def __init__(self) -> None:
        self.ids: list[str] = []

    def __call__(self, sbatch_output: str) -> str:
        self.ids.append(sbatch_output.split()[-1])
        return self.ids[-1]


def check_slurm(c: ClusterConfig) -> None:
    """What a submission needs, checked before the output directory or any job is made."""
    if not c.partition:
        raise SubmitError("--executor slurm needs cluster.partition in the config")
    if not shutil.which("sbatch"):
        raise SubmitError("--executor slurm needs sbatch on PATH (run it where you submit Slurm jobs)")
    if "SLURM_ARRAY_TASK_ID" in os.environ:
        # datatrove would take this process for one of its array tasks and run, not submit
        raise SubmitError("--executor slurm submits jobs: run it outside a Slurm job array")


def job_env_command() -> str:
    """The job script's first command: this interpreter's scripts directory first on PATH, for
    datatrove's ``launch_pickled_pipeline`` and ``merge_stats``. sbatch exports the caller's
    PATH, which lacks the virtual environment when it was not activated (``.venv/bin/python``)."""
    scripts = sysconfig.get_path("scripts")
    if not os.path.exists(os.path.join(scripts, "launch_pickled_pipeline")):
        found = shutil.which("launch_pickled_pipeline")
        scripts = os.path.dirname(found) if found else scripts
    return f"export PATH={shlex.quote(scripts)}:$PATH"


def _executor(step: Any, tasks: int, logs: str, depends: Any, ids: JobIds) -> Any:
    from datatrove.executor import SlurmPipelineExecutor

    c = step.opts.cfg.cluster
    return SlurmPipelineExecutor(
        [step], tasks=tasks, time=c.time, partition=c.partition, cpus_per_task=c.cpus_per_task,
        workers=c.workers or -1, logging_dir=logs, depends=depends, skip_completed=False,
        job_name=f"clean_data_{os.path.basename(logs)}", job_id_retriever=ids, env_command=job_env_command(),
        # sbatch refuses "--mem-per-cpu=2.0G" (whole units only), which datatrove writes for 2.0
        sbatch_args={"mem-per-cpu": f"{max(1, round(c.mem_per_cpu_gb * 1024))}M"},
        qos="")  # datatrove's default "normal" is not every cluster's: the partition's default


@contextlib.contextmanager
def _stderr_caught() -> Iterator[list[str]]:
    """File descriptor 2 into a temporary file: datatrove lets sbatch's stderr through to the
    terminal, and a refusal's message belongs in our one error line. The list gets the text."""
    caught: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield caught
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            caught.append(tmp.read().decode(errors="replace"))


def _refused(exc: subprocess.CalledProcessError, text: str, ids: JobIds) -> SubmitError:
    """One line: sbatch's message, and what became of the jobs submitted before."""
    message = "; ".join(line.strip() for line in text.splitlines() if line.startswith("sbatch:"))
    line = f"sbatch refused a job (exit status {exc.returncode}): {message or 'no message'}"
    if not ids.ids:
        return SubmitError(f"{line}; nothing was submitted")
    # without the later stages they would wait for nothing, or for a dependency that never ends
    cancel = subprocess.run(["scancel", *ids.ids], capture_output=True, text=True)
    done = "cancelled" if cancel.returncode == 0 else f"scancel failed ({cancel.stderr.strip()}): cancel"
    return SubmitError(f"{line}; {done} {' '.join(ids.ids)}, the jobs submitted before", cancel.returncode != 0)


def submit(stages: list[Any], tasks: list[int], work: str) -> dict:
    """Submit the three stages as chained job arrays; returns each stage's job id and task count,
    and where the logs are. Raises SubmitError (one line) when sbatch refuses a job."""
    ids, executors = JobIds(), []
    for n, (name, step, count) in enumerate(zip(_STAGES, stages, tasks)):
        logs = os.path.join(work, "logs", f"{n + 1}_{name}")
        executors.append(_executor(step, count, logs, executors[-1] if executors else None, ids))
    with _stderr_caught() as caught:
        try:
            executors[-1].run()  # submits its dependencies first
            error = None
        except subprocess.CalledProcessError as exc:
            error = exc
    if error is not None:
        # datatrove's progress lines stay; sbatch's own go into the error line
        sys.stderr.write("".join(line for line in caught[0].splitlines(True) if not line.startswith("sbatch:")))
        raise _refused(error, caught[0], ids) from None
    sys.stderr.write(caught[0])
    jobs = {name: {"job": str(e.job_id), "tasks": count} for name, e, count in zip(_STAGES, executors, tasks)}
    return {"jobs": jobs, "logs": os.path.join(work, "logs")}
