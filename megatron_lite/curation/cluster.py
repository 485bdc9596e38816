"""Cleaning on a cluster: the same stages as three datatrove pipelines (Slurm, Ray, or local
processes), the near-duplicate step a distributed grouping of LSH buckets.

1. **process** (``cluster.tasks`` tasks, default one per input file; task ``r`` takes the files
   ``f`` with ``f % tasks == r``): reads each file, runs the per-document stages (cleaner.py) and
   writes, per input file, the documents with their outcomes (``WORK/docs/F.pkl.zst``) and, per
   band and for the exact key, ``(document key, bucket hash)`` pairs (``WORK/buckets/B/F.npy``).
2. **buckets** (``(bands + 1) x cluster.bucket_shards`` tasks): task (band, shard) loads that
   band's pairs whose hash falls in its shard, sorts them by (hash, key) and writes, for every
   document that is not first in its bucket, the first one's key (dedup.first_in_groups).
3. **finalize** (one task): a document's earliest duplicate is the smallest first-key over its
   buckets (exact before near), which is exactly what the in-process index decides (dedup.py);
   it streams the documents back file by file, in input order, into the same sink as the local
   run, so the four outputs are byte-identical to ``--executor pool``'s.

Memory: a bucket task holds its share of one band (16 bytes per document / shards); finalize
holds the duplicate map (16 bytes per removed duplicate) and one batch of documents.
``WORK`` must be on storage every node sees (Slurm, Ray); it is removed after a local run.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import pickle
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import numpy as np
import zstandard

from megatron_lite.curation.cleaner import DocumentCleaner, Outcome, build_decontaminator
from megatron_lite.curation.dedup import EXACT, NEAR, band_hashes, first_in_groups, merge_first
from megatron_lite.curation.pipeline import (
    CleanOptions,
    base_report,
    no_documents,
    prepare_output_dir,
    read_documents,
    timing_summary,
)
from megatron_lite.curation.sink import Sink
from megatron_lite.data.readers import ReadStats, expand_inputs
from megatron_lite.utils.logging import get_logger, setup_logging

logger = get_logger(__name__)
_BATCH = 256
_WORK_DIRS = ("docs", "buckets", "dups", "timings", "logs")


class _Stage:
    """A datatrove pipeline step (``step(data, rank, world_size)``): picklable, options only."""

    def __init__(self, opts: CleanOptions, paths: list[str], work: str) -> None:
        self.opts, self.paths, self.work = opts, paths, work

    def band_dir(self, band: int) -> str:
        return os.path.join(self.work, "buckets", f"{band:03d}")


class ProcessStage(_Stage):
    """Stage 1: per-document stages and bucket pairs for the files of task ``rank``."""

    def __call__(self, data: Any, rank: int = 0, world_size: int = 1) -> None:
        cfg = self.opts.cfg
        cleaner = DocumentCleaner(cfg, build_decontaminator(cfg), self.opts.build_tokenizer())
        for index in range(rank, len(self.paths), world_size):
            self._file(cleaner, index)
        with open(os.path.join(self.work, "timings", f"{rank:05d}.json"), "w") as handle:
            json.dump({"seconds": cleaner.seconds, "bytes": cleaner.bytes}, handle)

    def _file(self, cleaner: DocumentCleaner, index: int) -> None:
        d, stats = self.opts.cfg.dedup, ReadStats()
        # per batch: (keys [n], exact keys [n]) and (keys [m], band hashes [m, bands])
        exact_parts: list[tuple[list[int], list[int]]] = []
        band_parts: list[tuple[list[int], np.ndarray]] = []
        docs = read_documents(self.paths, self.opts.keys, stats, self.opts.strict, self.opts.txt_blocks, [index])
        path = os.path.join(self.work, "docs", f"{index:06d}.pkl.zst")
        with open(path, "wb") as raw, zstandard.ZstdCompressor(level=1).stream_writer(raw) as out:
            while batch := [doc for _, doc in zip(range(_BATCH), docs)]:
                outcomes = cleaner.process_batch([texts for _, _, texts in batch])
                keys = [key for key, _, _ in batch]
                exact = [(k, o.exact) for k, o in zip(keys, outcomes) if o.exact is not None]
                exact_parts.append(([k for k, _ in exact], [e for _, e in exact]))
                near = [(k, band_hashes(o.minhash, d)) for k, o in zip(keys, outcomes) if o.minhash is not None]
                if near:
                    band_parts.append(([k for k, _ in near], np.stack([h for _, h in near])))
                # the band hashes are all the later stages need of a signature
                pickle.dump([(k, record, o._replace(minhash=None)) for k, (_, record, _), o in zip(keys, batch, outcomes)], out)
        self._save_band(d.bands, index, [k for p in exact_parts for k in p[0]], [e for p in exact_parts for e in p[1]])
        band_keys = [k for p in band_parts for k in p[0]]
        matrix = np.concatenate([m for _, m in band_parts]) if band_parts else np.zeros((0, d.bands), np.uint64)
        for band in range(d.bands):
            self._save_band(band, index, band_keys, matrix[:, band])
        with open(os.path.join(self.work, "docs", f"{index:06d}.stats.json"), "w") as handle:
            json.dump({"documents": stats.documents, "bytes": stats.bytes, "skipped": stats.skipped}, handle)

    def _save_band(self, band: int, index: int, keys: list[int], hashes: Any) -> None:
        os.makedirs(self.band_dir(band), exist_ok=True)
        array = np.stack([np.array(keys, dtype=np.uint64), np.asarray(hashes, dtype=np.uint64)])  # [2, n]
        np.save(os.path.join(self.band_dir(band), f"{index:06d}.npy"), array)


class BucketStage(_Stage):
    """Stage 2: task (band, shard) groups its buckets; writes ``(keys, first keys)``."""

    def __call__(self, data: Any, rank: int = 0, world_size: int = 1) -> None:
        shards = self.opts.cfg.cluster.bucket_shards
        band, shard = divmod(rank, shards)
        keys, hashes = [], []
        for path in sorted(glob.glob(os.path.join(self.band_dir(band), "*.npy"))):
            array = np.load(path)
            mine = array[1] % np.uint64(shards) == np.uint64(shard)
            keys.append(array[0][mine])
            hashes.append(array[1][mine])
        later, first = first_in_groups(np.concatenate(keys or [np.zeros(0, np.uint64)]),
                                       np.concatenate(hashes or [np.zeros(0, np.uint64)]))
        np.save(os.path.join(self.work, "dups", f"{band:03d}_{shard:05d}.npy"), np.stack([later, first]))


class FinalizeStage(_Stage):
    """Stage 3: the duplicate decisions, then every document in input order into the sink."""

    remove_intermediates = False  # Slurm: this job is the last one, nobody else would

    def __call__(self, data: Any, rank: int = 0, world_size: int = 1) -> tuple[dict, Counter, Counter, int]:
        opts, bands = self.opts, self.opts.cfg.dedup.bands
        exact = merge_first(self._pairs(f"{bands:03d}_*.npy"))
        near = merge_first(self._pairs("[0-9][0-9][0-9]_*.npy", skip=f"{bands:03d}_"))
        stats = ReadStats()
        sink = Sink(opts.output_dir, self.paths, opts.keys, opts.cfg.stats.source_field, bool(opts.tokenizer_type))
        try:
            for key, record, outcome in self._documents(stats):
                duplicate = None
                if outcome.reason is None:
                    duplicate = (EXACT, exact[key]) if key in exact else (NEAR, near[key]) if key in near else None
                sink.add(key, record, outcome, duplicate)
            if sink.input_docs == 0:
                raise no_documents(self.paths, stats)
            report = sink.finish(base_report(opts, self.paths, stats))
        except BaseException:
            sink.abort()
            raise
        if self.remove_intermediates:
            self._end_job(report)
        return (report, *self._timings(), stats.bytes)

    def _end_job(self, report: dict) -> None:
        """The last Slurm job: the intermediates go (the logs stay), and its log says what it wrote."""
        for sub in _WORK_DIRS[:-1]:
            shutil.rmtree(os.path.join(self.work, sub), ignore_errors=True)
        setup_logging()  # in a job, no entry point of ours configured it
        logger.info("wrote %s: %d documents, %d kept, %d removed", os.path.abspath(self.opts.output_dir),
                    report["input_docs"], report["output_docs"], report["removed_docs"])

    def _pairs(self, pattern: str, skip: str | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for path in sorted(glob.glob(os.path.join(self.work, "dups", pattern))):
            if skip is None or not os.path.basename(path).startswith(skip):
                later, first = np.load(path)
                yield later, first

    def _documents(self, stats: ReadStats) -> Iterator[tuple[int, dict, Outcome]]:
        for index in range(len(self.paths)):
            with open(os.path.join(self.work, "docs", f"{index:06d}.stats.json")) as handle:
                part = json.load(handle)
            stats.documents += part["documents"]
            stats.bytes += part["bytes"]
            stats.skipped.update(part["skipped"])
            with open(os.path.join(self.work, "docs", f"{index:06d}.pkl.zst"), "rb") as raw:
                reader = zstandard.ZstdDecompressor().stream_reader(raw)
                while True:
                    try:
                        yield from pickle.load(reader)
                    except EOFError:
                        break

    def _timings(self) -> tuple[Counter, Counter]:
        """The per-stage seconds and bytes of every process task."""
        seconds, nbytes = Counter(), Counter()
        for path in glob.glob(os.path.join(self.work, "timings", "*.json")):
            with open(path) as handle:
                part = json.load(handle)
            seconds.update(part["seconds"])
            nbytes.update(part["bytes"])
        return seconds, nbytes


def _executor(kind: str, step: _Stage, tasks: int, workers: int, logs: str, depends: Any) -> Any:
    """datatrove's local or Ray executor running ``step`` (Slurm: slurm.py)."""
    c = step.opts.cfg.cluster
    if kind == "local":
        from datatrove.executor import LocalPipelineExecutor

        # fork: a task starts in milliseconds with everything imported (forkserver re-imports)
        return LocalPipelineExecutor([step], tasks=tasks, workers=min(workers, tasks), logging_dir=logs,
                                     depends=depends, skip_completed=False, start_method="fork")
    from datatrove.executor import RayPipelineExecutor

    # no depends=: ray_run.run_stage runs the stages in turn (datatrove would wait forever on a
    # failed dependency)
    return RayPipelineExecutor([step], tasks=tasks, workers=workers, logging_dir=logs,
                               cpus_per_task=c.cpus_per_task, mem_per_cpu_gb=c.mem_per_cpu_gb,
                               skip_completed=False)


def _remove_work(work: str, keep_logs: bool = False) -> None:
    """Our folders in ``work`` (a --work-dir given by the user may hold other files)."""
    for sub in _WORK_DIRS[:-1] if keep_logs else _WORK_DIRS:
        shutil.rmtree(os.path.join(work, sub), ignore_errors=True)
    try:
        os.rmdir(work)
    except OSError:  # absent, or holds files of someone else
        pass


def run_cluster(opts: CleanOptions, kind: str, work: str | None = None) -> tuple[dict, dict]:
    """Run the three stages on datatrove's ``kind`` executor (local, slurm or ray). A local or
    Ray run returns ``(report, timings)`` when done; a Slurm run returns ``({}, jobs)`` once the
    jobs are submitted (slurm.submit; the outputs appear when the finalize job ends)."""
    try:
        import datatrove  # noqa: F401
    except ImportError as exc:
        raise ImportError("--executor local/slurm/ray needs datatrove (pip install datatrove)") from exc
    start = time.perf_counter()
    paths = expand_inputs(opts.input)
    build_decontaminator(opts.cfg)  # a bad evaluation file fails here, before any job
    if kind == "slurm":
        from megatron_lite.curation.slurm import check_slurm

        check_slurm(opts.cfg.cluster)  # before the output directory is made
    workers = opts.cfg.cluster.workers or opts.workers
    session: Any = contextlib.nullcontext()
    if kind == "ray":
        from megatron_lite.curation.ray_run import ray_session

        session = ray_session(opts.cfg.cluster, workers)
    with session:  # Ray: connected (or refused) before the output directory is made
        return _run_stages(opts, kind, paths, work, workers, start)


def _run_stages(opts: CleanOptions, kind: str, paths: list[str], work: str | None, workers: int,
                start: float) -> tuple[dict, dict]:
    prepare_output_dir(opts.output_dir, opts.force)
    work = os.path.abspath(work or os.path.join(opts.output_dir, ".work"))
    _remove_work(work)
    for sub in _WORK_DIRS[:-1]:
        os.makedirs(os.path.join(work, sub))
    c = opts.cfg.cluster
    tasks = min(c.tasks or len(paths), len(paths))
    stages = [ProcessStage(opts, paths, work), BucketStage(opts, paths, work), FinalizeStage(opts, paths, work)]
    counts = [tasks, (opts.cfg.dedup.bands + 1) * c.bucket_shards, 1]
    if kind == "slurm":
        from megatron_lite.curation.slurm import SubmitError, submit

        stages[2].remove_intermediates = True  # no run_cluster is left to do it
        try:
            return {}, submit(stages, counts, work)
        except SubmitError as exc:
            if not exc.jobs_left:  # nothing runs: the output directory is as it was
                _remove_work(work)
            raise
    done = False
    try:
        if kind == "ray":
            _run_ray(stages, counts, workers, work)
        else:
            process = _executor(kind, stages[0], counts[0], workers, os.path.join(work, "logs", "1_process"), None)
            _executor(kind, stages[1], counts[1], workers, os.path.join(work, "logs", "2_buckets"), process).run()
        report, seconds, nbytes, input_bytes = stages[2](None)
        done = True
    finally:
        # local: nothing is left in the output directory, done or failed; Ray: a failure keeps
        # the logs, which its error message points to
        _remove_work(work, keep_logs=kind == "ray" and not done)
    return report, timing_summary(seconds, nbytes, input_bytes, time.perf_counter() - start)


def _run_ray(stages: list[_Stage], counts: list[int], workers: int, work: str) -> None:
    """The process and bucket stages on Ray, one after the other, each checked complete."""
    from megatron_lite.curation.ray_run import run_stage

    for step, tasks, name in zip(stages[:2], counts, ("1_process", "2_buckets")):
        logs = os.path.join(work, "logs", name)
        run_stage(_executor("ray", step, tasks, workers, logs, None), name.split("_", 1)[1], logs)
