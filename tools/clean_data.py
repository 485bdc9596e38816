#!/usr/bin/env python
"""Clean a corpus before preprocessing: deduplicate, filter noise, anonymize PII, keep
evaluation sets out, and measure what is left.

    python tools/clean_data.py --input "data/*.jsonl.zst" --output-dir data/clean \\
        [--jsonl-keys text] [--config curation.yml] [--preset web|code|none] [--workers N]

Reads what preprocess_data.py reads (.jsonl, .jsonl.zst, .jsonl.gz, .txt; comma-separated files
or globs) with the same bad-input rules, and writes to --output-dir:

  cleaned.jsonl.zst  the kept documents, every field of the record kept, the text edited
                     (PII replaced, C4's noise lines removed): the input of preprocess_data.py
  removed.jsonl.zst  every removed document, with reason, rule, detail, origin (file:line) and,
                     for a duplicate, duplicate_of (the file:line of the document it duplicates)
  report.json        input_docs, output_docs, removed (reason -> count), pii (kind -> count),
                     statistics before and after (documents, bytes, lengths, sources; tokens
                     with --tokenizer-type/--vocab-file)
  report.html        the same for a person, with plots and examples of each removal reason

Stages, in order: language, Gopher repetition, Gopher quality, C4, blocklist, decontamination,
exact and near (MinHash LSH) deduplication, PII. --preset picks their thresholds (web: English
web text; code: source code; none: all off) and --config (YAML, one section per stage) changes
them; docs/curation.md lists every key. Outputs are written under temporary names and renamed
when complete; a re-run with the same inputs and config gives byte-identical files, whatever
--workers or --executor.

--executor local|slurm|ray runs the same stages as datatrove pipelines (a cluster; the near-
duplicate step groups LSH buckets across tasks): local runs them here with --workers processes;
slurm submits three chained job arrays (config: cluster.partition) and returns at once, printing
the job ids: the outputs appear when the finalize job ends; ray runs them on the Ray cluster at
$RAY_ADDRESS, or, without it, on a Ray instance it starts here (--workers CPUs) and stops after.

Bad input: a line that is not UTF-8, not JSON, or lacks a key is skipped and reported as
file:line (--strict: fatal); a missing, truncated or corrupt input, no documents, an unknown
config key, or an output directory that is not empty (without --force) is an error (exit 1).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from megatron_lite.curation.config import PRESETS, load_config
from megatron_lite.curation.pipeline import CleanOptions, run_local
from megatron_lite.curation.ray_run import RayRunError
from megatron_lite.curation.slurm import SubmitError
from megatron_lite.data.readers import InputError
from megatron_lite.tokenizer import TOKENIZER_TYPES, tokenizer_type_arg
from megatron_lite.utils.logging import setup_logging

EXECUTORS = ("pool", "local", "slurm", "ray")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--input", required=True, help="comma-separated files or globs (.jsonl, .jsonl.zst, .jsonl.gz, .txt)")
    p.add_argument("--output-dir", required=True, help="where the four outputs go")
    p.add_argument("--jsonl-keys", nargs="+", default=["text"], help="the text fields (default: text)")
    p.add_argument("--config", default=None, help="YAML: one section per stage (docs/curation.md)")
    p.add_argument("--preset", default="web", choices=PRESETS, help="thresholds to start from (default: web)")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--batch-size", type=int, default=64, help="documents per worker task")
    p.add_argument("--executor", default="pool", choices=EXECUTORS,
                   help="pool: this machine, streaming (default); local/slurm/ray: datatrove pipelines")
    p.add_argument("--work-dir", default=None,
                   help="datatrove executors: intermediate files (default OUTPUT_DIR/.work; shared storage on a cluster)")
    p.add_argument("--strict", action="store_true", help="the first bad line is an error")
    p.add_argument("--txt-blocks", action="store_true", help=".txt inputs: one document per blank-line-separated block")
    p.add_argument("--force", action="store_true", help="replace the outputs in a non-empty --output-dir")
    p.add_argument("--log-interval", type=int, default=10000, help="documents between progress lines")
    p.add_argument("--tokenizer-type", default=None, type=tokenizer_type_arg,
                   metavar="{" + ",".join(TOKENIZER_TYPES) + "}",
                   help="count tokens with this tokenizer in report.json's statistics (as corpus_stats.py)")
    p.add_argument("--vocab-file", default=None, help="the tokenizer's file (as preprocess_data.py)")
    p.add_argument("--merge-file", default=None, help="GPT-2 merges.txt")
    args = p.parse_args(argv)
    if args.workers < 1 or args.batch_size < 1 or args.log_interval < 1:
        p.error("--workers, --batch-size and --log-interval must be at least 1")
    if (args.vocab_file or args.merge_file) and not args.tokenizer_type:
        p.error("--vocab-file and --merge-file need --tokenizer-type")
    return args


def run(args: argparse.Namespace) -> tuple[dict, dict]:
    cfg = load_config(args.config, args.preset)
    opts = CleanOptions(input=args.input, output_dir=args.output_dir, cfg=cfg, preset=args.preset,
                        keys=args.jsonl_keys, workers=args.workers, batch_size=args.batch_size,
                        strict=args.strict, txt_blocks=args.txt_blocks, force=args.force,
                        log_interval=args.log_interval, tokenizer_type=args.tokenizer_type,
                        vocab_file=args.vocab_file, merge_file=args.merge_file)
    if args.executor == "pool":
        return run_local(opts)
    from megatron_lite.curation.cluster import run_cluster

    return run_cluster(opts, args.executor, args.work_dir)


def _print_summary(report: dict, timings: dict, output_dir: str) -> None:
    removed = ", ".join(f"{k}: {v}" for k, v in report["removed"].items()) or "nothing"
    print(f"documents: {report['input_docs']}  kept: {report['output_docs']}  removed: {report['removed_docs']} "
          f"({removed})")
    print(f"pii replaced: {', '.join(f'{k}: {v}' for k, v in report['pii'].items()) or 'none'}")
    if timings:
        print(f"input: {timings['megabytes']:.2f} MB  time: {timings['seconds']:.1f} s ({timings['mb_per_s']:.2f} MB/s)"
              f"  MB/s per worker by stage: {json.dumps(timings['stage_mb_per_s_per_worker'])}")
    print(f"wrote {os.path.join(output_dir, 'cleaned.jsonl.zst')}, removed.jsonl.zst, report.json")
    print(f"report: {os.path.join(output_dir, 'report.html')}")


def _print_submitted(submitted: dict, output_dir: str) -> None:
    jobs = submitted["jobs"]
    print("submitted to Slurm: " + ", ".join(
        f"{name} job {j['job']} ({j['tasks']} task{'s' * (j['tasks'] > 1)})" for name, j in jobs.items()))
    final = jobs["finalize"]["job"]
    print(f"the outputs appear in {output_dir} when job {final} ends: `squeue -j {final}` lists it until then, "
          f"`sacct -j {final}` gives its state (a failed stage leaves it pending: DependencyNeverSatisfied)")
    print(f"logs: {submitted['logs']}/<stage>/slurm_logs (each job's output), .../logs (each task's)")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(logging.INFO)
    try:
        report, timings = run(args)
    except KeyboardInterrupt:
        print("clean_data.py: interrupted; no output written", file=sys.stderr)
        return 130
    except (InputError, ValueError, OSError, ImportError, SubmitError, RayRunError) as exc:
        print(f"clean_data.py: error: {exc}", file=sys.stderr)
        return 1
    if not report:  # slurm: submitted, not run; timings holds the jobs
        _print_submitted(timings, args.output_dir)
        return 0
    _print_summary(report, timings, args.output_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
