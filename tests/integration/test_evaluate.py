"""evaluate.py through deepy.py: parity with lm-eval's own Hugging Face model on local tasks
(multiple choice in PIQA's format, rolling loglikelihood in wikitext's, generation in
TriviaQA's), tp=2 == tp=1, perplexity, BLEU/ROUGE, and the error cases."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from megatron_lite.data.indexed_dataset import (
    MMapIndexedDatasetBuilder,
    data_file_path,
    index_file_path,
)
from tests.integration.common import deepy, gen_config

REPO = Path(__file__).resolve().parents[2]
TASKS = REPO / "tests" / "fixtures" / "lm_eval_tasks"
LOCAL_TASKS = ["piqa_style", "wikitext_style", "triviaqa_style"]


def evaluate(tmp_path: Path, ckpt: Path, *tasks: str, extra: list[str] = (), **keys) -> subprocess.CompletedProcess:
    cfg = gen_config(tmp_path, ckpt, eval_bootstrap_iters=0, **keys)
    return deepy("evaluate.py", str(ckpt / "config.yml"), cfg, cwd=tmp_path,
                 extra=["--eval_tasks", *tasks, "--include_path", str(TASKS), *extra], timeout=300)


def results_of(tmp_path: Path) -> dict:
    files = sorted((tmp_path / "logs").glob("eval_results_*.json"))
    assert len(files) == 1, files
    return json.loads(files[0].read_text())


@pytest.fixture(scope="module")
def hf_reference(hf_checkpoint, tmp_path_factory) -> dict:
    """lm-eval's own `hf` model on our checkpoint converted to a transformers directory."""
    out = tmp_path_factory.mktemp("hf_ref")
    hf_dir = out / "hf"
    subprocess.run([sys.executable, str(REPO / "tools/convert_to_hf.py"), "--input_dir", str(hf_checkpoint["ckpt"]),
                    "--output_dir", str(hf_dir)], check=True, capture_output=True, timeout=120)
    result = subprocess.run(
        [sys.executable, "-m", "lm_eval", "--model", "hf", "--model_args", f"pretrained={hf_dir},dtype=float32",
         "--tasks", ",".join(LOCAL_TASKS), "--include_path", str(TASKS), "--batch_size", "1",
         "--device", "cpu", "--output_path", str(out / "res"), "--log_samples"],
        capture_output=True, text=True, timeout=300, cwd=out)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads(next((out / "res").rglob("results_*.json")).read_text())["results"]
    samples = {task: read_samples(next((out / "res").rglob(f"samples_{task}_*.jsonl"))) for task in LOCAL_TASKS}
    return {"results": results, "samples": samples}


def read_samples(path: Path) -> dict[int, list]:
    """doc_id -> the filtered model responses of that document, numbers as floats."""
    return by_doc([json.loads(line) for line in path.read_text().splitlines()])


def by_doc(records: list[dict]) -> dict[int, list]:
    """doc_id -> the filtered model responses of lm-eval's sample records, numbers as floats."""
    def norm(x):
        if isinstance(x, (list, tuple)):
            return [norm(y) for y in x]
        try:
            return float(x) if not isinstance(x, bool) and x not in ("True", "False") else str(x)
        except (TypeError, ValueError):
            return x
    return {r["doc_id"]: norm(r["filtered_resps"]) for r in records}


def assert_close_nested(ours, ref, where) -> None:
    """Same structure; floats equal to 1e-4, everything else (texts, greedy flags) exactly."""
    if isinstance(ref, list):
        assert isinstance(ours, list) and len(ours) == len(ref), where
        for a, b in zip(ours, ref):
            assert_close_nested(a, b, where)
    elif isinstance(ref, float):
        assert ours == pytest.approx(ref, rel=1e-4, abs=1e-4), where
    else:
        assert ours == ref, where


def assert_same_numbers(ours: dict, ref: dict, tasks: list[str]) -> None:
    for task in tasks:
        numbers = {k: v for k, v in ref[task].items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and "stderr" not in k}
        assert numbers, ref[task]
        for key, value in numbers.items():
            assert ours[task][key] == pytest.approx(value, rel=1e-4, abs=1e-4), (task, key)


def test_local_tasks_equal_lm_eval_hf_model(tmp_path, hf_checkpoint, hf_reference):
    result = evaluate(tmp_path, hf_checkpoint["ckpt"], *LOCAL_TASKS, extra=["--batch_size", "3"],
                      eval_log_samples=True)
    assert result.returncode == 0, result.stderr[-3000:]
    results = results_of(tmp_path)
    assert_same_numbers(results["results"], hf_reference["results"], LOCAL_TASKS)
    # Per document: every choice's log-likelihood, every rolling total, every generated answer.
    run_dir = next((tmp_path / "logs").glob("*-evaluate"))
    for task in LOCAL_TASKS:
        ours, ref = read_samples(run_dir / f"samples_{task}.jsonl"), hf_reference["samples"][task]
        assert ours.keys() == ref.keys() and ours
        for doc_id, resps in ref.items():
            assert_close_nested(ours[doc_id], resps, (task, doc_id))
    generated = [r for r in hf_reference["samples"]["triviaqa_style"].values()]
    assert any(g and g != [""] for g in generated)  # the generation comparison compared text
    assert results["results"]["wikitext_style"]["bits_per_byte,none"] > 0
    assert "piqa_style" in result.stdout and "acc" in result.stdout  # the printed table
    record = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["split"] == "eval" and record["piqa_style/acc"] == results["results"]["piqa_style"]["acc,none"]


def test_local_tasks_on_a_llama_equal_lm_eval_hf_model(tmp_path):
    """The parity above for a Llama (GQA, llama3 rope scaling): lm-eval's own `hf` model on our
    LlamaForCausalLM export against our adapter on the converted checkpoint, in this process
    (two process launches cheaper; evaluate.py's own path is the test above)."""
    import shutil

    from lm_eval import evaluator
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    import megatron_lite
    from megatron_lite.evaluation.lm_adapter import MegatronLiteLM
    from tests.unit.test_hf_interop import add_tokenizer, tool_main
    from tests.unit.test_hf_llama import LLAMA3, hf_llama

    tok = add_tokenizer(tmp_path)  # tmp_path/tokenizer.json
    hf_dir, _ = hf_llama(tmp_path, num_key_value_heads=2, rope_parameters=LLAMA3, vocab_size=tok.get_vocab_size())
    shutil.copy(tmp_path / "tokenizer.json", hf_dir)
    ckpt, exported = tmp_path / "ckpt", tmp_path / "exported"
    assert tool_main("convert_from_hf.py", "--input_dir", hf_dir, "--output_dir", ckpt) == 0
    assert tool_main("convert_to_hf.py", "--input_dir", ckpt, "--output_dir", exported) == 0
    model, tokenizer = megatron_lite.load_model(str(ckpt))
    lms = {"ours": MegatronLiteLM(model.gpt, tokenizer, model.vocab_size, batch_size=3, show_progress=False),
           "hf": HFLM(pretrained=str(exported), dtype="float32", batch_size=1, device="cpu")}
    manager = TaskManager(include_path=str(TASKS))
    found = {name: evaluator.simple_evaluate(model=lm, tasks=LOCAL_TASKS, task_manager=manager, bootstrap_iters=0,
                                             log_samples=True, random_seed=1234, numpy_random_seed=1234,
                                             torch_random_seed=1234, fewshot_random_seed=1234)
             for name, lm in lms.items()}
    assert_same_numbers(found["ours"]["results"], found["hf"]["results"], LOCAL_TASKS)
    for task in LOCAL_TASKS:
        ours, ref = by_doc(found["ours"]["samples"][task]), by_doc(found["hf"]["samples"][task])
        assert ours.keys() == ref.keys() and ours
        for doc_id, resps in ref.items():
            assert_close_nested(ours[doc_id], resps, (task, doc_id))
    generated = by_doc(found["hf"]["samples"]["triviaqa_style"]).values()
    assert any(g and g != [""] for g in generated)  # the generation comparison compared text


def test_tp2_and_two_replicas_equal_one_rank_with_limit_and_fewshot(tmp_path, hf_checkpoint):
    """tp=2 (one replica of 2 ranks) and dp=2 (two replicas sharing the documents) give the
    numbers of one process, for lm-eval tasks and for our own."""
    texts = [f"the model {i} reads a token and then predicts the next one" for i in range(5)]
    (tmp_path / "ppl.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    (tmp_path / "refs.jsonl").write_text("".join(json.dumps({"prompt": t[:12], "reference": t[12:]}) + "\n"
                                                 for t in texts))
    tasks = ["piqa_style", "wikitext_style", "triviaqa_style", "perplexity", "bleu_rouge"]
    numbers = []
    for tp, ranks in ((1, 1), (2, 2), (1, 2)):
        run = tmp_path / f"tp{tp}_ranks{ranks}"
        run.mkdir()
        result = evaluate(run, hf_checkpoint["ckpt"], *tasks, extra=["--limit", "3", "--num_fewshot", "1"],
                          model_parallel_size=tp, num_gpus=ranks, eval_perplexity_data=str(tmp_path / "ppl.jsonl"),
                          eval_references_file=str(tmp_path / "refs.jsonl"))
        assert result.returncode == 0, result.stderr[-3000:]
        results = results_of(run)
        assert results["n-shot"]["piqa_style"] == 1 and results["n-samples"]["piqa_style"]["effective"] == 3
        assert results["results"]["perplexity"]["documents,none"] == 3
        numbers.append(results["results"])
    for other in numbers[1:]:
        assert_same_numbers(other, numbers[0], tasks)


def test_perplexity_on_dataset_and_text_file_and_bleu_rouge(tmp_path, hf_checkpoint):
    from megatron_lite.tokenizer import build_tokenizer_from

    tok = build_tokenizer_from("HFTokenizer", str(hf_checkpoint["hf"] / "tokenizer.json"))
    texts = [f"the model {i} reads a token and then predicts the next one, over and over" for i in range(6)]
    prefix = str(tmp_path / "ppl_text_document")
    with MMapIndexedDatasetBuilder(data_file_path(prefix), np.uint16) as builder:
        for text in texts:
            builder.add_item(tok.tokenize(text) + [tok.eod])
            builder.end_document()
        builder.finalize(index_file_path(prefix))
    jsonl = tmp_path / "ppl.jsonl"
    jsonl.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    refs = tmp_path / "refs.jsonl"
    refs.write_text("".join(json.dumps({"prompt": t[:14], "reference": t[14:]}) + "\n" for t in texts[:3]))
    found = {}
    for name, data in (("dataset", prefix), ("file", str(jsonl))):
        run = tmp_path / name
        run.mkdir()
        result = evaluate(run, hf_checkpoint["ckpt"], "perplexity", "bleu_rouge", eval_perplexity_data=data,
                          eval_references_file=str(refs))
        assert result.returncode == 0, result.stderr[-3000:]
        found[name] = results_of(run)["results"]
    ppl, file_ppl = found["dataset"]["perplexity"], found["file"]["perplexity"]
    assert ppl["documents,none"] == 6 and ppl["tokens,none"] == sum(len(tok.tokenize(t)) + 1 for t in texts)
    assert ppl["bytes,none"] == file_ppl["bytes,none"] == sum(len(t.encode()) for t in texts)
    assert ppl["perplexity,none"] == pytest.approx(math.exp(ppl["loss,none"]))
    assert file_ppl["tokens,none"] == ppl["tokens,none"] - 6  # no end-of-document tokens in raw text
    # A random model is close to uniform over its 300-token vocabulary.
    assert abs(ppl["loss,none"] - math.log(300)) < 1.0
    bleu = found["file"]["bleu_rouge"]
    assert bleu["records,none"] == 3 and 0 <= bleu["bleu,none"] <= 100 and 0 <= bleu["rougeL,none"] <= 1
    samples = next((tmp_path / "file" / "logs").glob("*-evaluate/samples_bleu_rouge.jsonl")).read_text().splitlines()
    assert [json.loads(x)["prompt"] for x in samples] == [t[:14] for t in texts[:3]]


def test_bleu_rouge_scores_known_outputs():
    from megatron_lite.evaluation.reference_metrics import score

    perfect = score(["the cat sat on the mat"], [["the cat sat on the mat"]])
    assert perfect["bleu"] == pytest.approx(100.0) and perfect["rougeL"] == pytest.approx(1.0)
    partial = score(["the cat sat on the mat today", "nothing alike"], [["the cat sat on the mat"], ["a b c", "x y"]])
    assert 0 < partial["bleu"] < 100 and 0.4 < partial["rougeL"] < 0.6


@pytest.mark.parametrize("case, expected", [
    ("unknown_task", "unknown lm-eval task 'piqa_stlye'; did you mean piqa_style"),
    ("no_network", "task piqa: its data could not be loaded"),
    ("no_tasks", "no tasks"),
    ("no_perplexity_data", "eval_perplexity_data"),
    ("bad_references", "refs.jsonl:2: not valid JSON"),
])
def test_evaluation_errors(tmp_path, hf_checkpoint, case, expected):
    refs = tmp_path / "refs.jsonl"
    refs.write_text('{"prompt": "a", "reference": "b"}\n{oops\n')
    tasks = {"unknown_task": ["piqa_stlye"], "no_network": ["piqa"], "no_tasks": [],
             "no_perplexity_data": ["perplexity"], "bad_references": ["bleu_rouge"]}[case]
    keys = {"eval_references_file": str(refs)} if case == "bad_references" else {}
    cfg = gen_config(tmp_path, hf_checkpoint["ckpt"], **keys)
    extra = ["--eval_tasks", *tasks, "--include_path", str(TASKS)] if tasks else []
    result = deepy("evaluate.py", str(hf_checkpoint["ckpt"] / "config.yml"), cfg, cwd=tmp_path, extra=extra)
    assert result.returncode != 0
    assert expected in result.stderr, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert not list((tmp_path / "logs").glob("eval_results_*"))
