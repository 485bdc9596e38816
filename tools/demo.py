#!/usr/bin/env python
"""`make demo`: from nothing to a trained model and a generated sample, on this machine.

1. build the sample corpus (this Python's standard library source, no download);
2. clean it (tools/clean_data.py --preset code: duplicates, PII; the report's path is printed);
3. train a 4096-token byte-level BPE tokenizer on the cleaned corpus;
4. preprocess it into .bin/.idx;
5. train configs/demo.yml for a few minutes (on the GPU when there is one);
6. generate a continuation of a prompt from the saved checkpoint;
7. evaluate it through evaluate.py on held-out text (this repository's own Python source, which
   the model never saw): perplexity, and BLEU/ROUGE of docstrings generated for ``def`` lines.
Everything lands under ``demo/`` (override with DEMO_DIR); rerunning reuses finished steps.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORK = os.path.abspath(os.environ.get("DEMO_DIR", os.path.join(REPO, "demo")))
PY = sys.executable


def step(title: str, cmd: list[str], done: str | None = None) -> None:
    if done and os.path.exists(done):
        print(f"== {title}: already done ({os.path.relpath(done, REPO)})", flush=True)
        return
    print(f"== {title}\n   $ {' '.join(os.path.relpath(c, REPO) if c.startswith(REPO) else c for c in cmd)}", flush=True)
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=REPO)
    print(f"   ({time.perf_counter() - start:.0f} s)", flush=True)


def main() -> int:
    os.makedirs(WORK, exist_ok=True)
    corpus, tokenizer = os.path.join(WORK, "stdlib.jsonl.zst"), os.path.join(WORK, "tokenizer.json")
    prefix = os.path.join(WORK, "stdlib")
    step("1/7 sample corpus", [PY, f"{REPO}/tools/make_sample_corpus.py", "--output", corpus], corpus)
    clean_dir = os.path.join(WORK, "clean")
    cleaned = os.path.join(clean_dir, "cleaned.jsonl.zst")
    step("2/7 clean", [PY, f"{REPO}/tools/clean_data.py", "--input", corpus, "--output-dir", clean_dir,
                       "--preset", "code", "--workers", "2", "--force"], cleaned)
    step("3/7 tokenizer", [PY, f"{REPO}/tools/train_tokenizer.py", "--input", cleaned,
                           "--vocab-size", "4096", "--output", tokenizer], tokenizer)
    step("4/7 preprocess", [PY, f"{REPO}/tools/preprocess_data.py", "--input", cleaned, "--output-prefix", prefix,
                            "--tokenizer-type", "HFTokenizer", "--vocab-file", tokenizer, "--append-eod",
                            "--workers", "2"], prefix + "_text_document.idx")
    paths = {"data_path": prefix + "_text_document", "vocab_file": tokenizer,
             "save": os.path.join(WORK, "checkpoints"), "load": os.path.join(WORK, "checkpoints"),
             "log_dir": os.path.join(WORK, "logs"), "tensorboard_dir": os.path.join(WORK, "tensorboard"),
             "sample_input_file": os.path.join(WORK, "prompts.txt"),
             "sample_output_file": os.path.join(WORK, "samples.jsonl"),
             "eval_perplexity_data": os.path.join(WORK, "heldout.jsonl"), "eval_bootstrap_iters": 0}
    if _has_gpu():
        paths.update(bf16={"enabled": True}, train_micro_batch_size_per_gpu=32, train_iters=2000)
    local = os.path.join(WORK, "local_setup.yml")
    with open(local, "w") as handle:
        json.dump(paths, handle, indent=2)
    with open(paths["sample_input_file"], "w") as handle:
        handle.write("def read_config(path):\nclass Cache:\n")
    step("5/7 train", [PY, f"{REPO}/deepy.py", f"{REPO}/train.py", f"{REPO}/configs/demo.yml", local],
         os.path.join(paths["save"], "latest"))
    step("6/7 generate", [PY, f"{REPO}/deepy.py", f"{REPO}/generate.py", f"{REPO}/configs/demo.yml", local])
    heldout = _write_heldout(os.path.join(WORK, "heldout.jsonl"), os.path.join(WORK, "references.jsonl"))
    eval_cfg = os.path.join(WORK, "eval.yml")
    with open(eval_cfg, "w") as handle:  # bleu_rouge: greedy, up to the closing quotes
        json.dump({"eval_references_file": os.path.join(WORK, "references.jsonl"), "eval_bootstrap_iters": 1000,
                   "maximum_tokens": 16, "temperature": 0.0, "stop_strings": ['"""']}, handle, indent=2)
    step("7/7 evaluate", [PY, f"{REPO}/deepy.py", f"{REPO}/evaluate.py", f"{REPO}/configs/demo.yml", local,
                          eval_cfg, "--eval_tasks", "perplexity", "bleu_rouge"])
    print(f"   (held-out code: {os.path.relpath(heldout, REPO)}; results in {paths['log_dir']}/eval_results_*.json)")
    print("\nSamples:")
    with open(paths["sample_output_file"]) as handle:
        for line in handle:
            rec = json.loads(line)
            print(f"--- prompt: {rec['context']!r}\n{rec['context']}{rec['text']}\n")
    latest = open(os.path.join(paths["save"], "latest")).read().strip()
    print(f"cleaning:   {os.path.join(WORK, 'clean', 'report.html')} (what was removed and why)")
    print(f"checkpoint: {os.path.join(paths['save'], latest)}")
    print(f"logs:       {paths['log_dir']} (metrics.jsonl, rank0.log; TensorBoard: {paths['tensorboard_dir']})")
    print(f"next:       python tools/convert_to_hf.py --input_dir {paths['save']} --output_dir {WORK}/hf")
    return 0


def _write_heldout(path: str, references: str) -> str:
    """This repository's own modules as JSON lines: Python the model never trained on; and, for
    bleu_rouge, each module's first documented function: its ``def`` line and the docstring's
    opening quotes as the prompt, the docstring's first line as the reference."""
    src = os.path.join(REPO, "megatron_lite")
    modules = []
    for folder, _, files in sorted(os.walk(src)):
        for name in sorted(f for f in files if f.endswith(".py")):
            with open(os.path.join(folder, name), encoding="utf-8") as module:
                modules.append(module.read())
    from megatron_lite.utils.files import atomic_write_jsonl

    atomic_write_jsonl(path, ({"text": text} for text in modules))
    records = []
    for text in modules:
        lines = text.split("\n")
        pairs = [(a, b.strip()) for a, b in zip(lines, lines[1:]) if a.startswith("def ") and b.strip().startswith('"""')]
        if pairs:  # the prompt opens the docstring; the reference is its first line's text
            reference = pairs[0][1][3:].replace('"""', "").strip()
            records.append({"prompt": pairs[0][0] + '\n    """', "reference": reference})
    atomic_write_jsonl(references, records)
    return path


def _has_gpu() -> bool:
    from megatron_lite.config.resources import local_gpu_count

    return local_gpu_count() > 0


if __name__ == "__main__":
    sys.exit(main())
