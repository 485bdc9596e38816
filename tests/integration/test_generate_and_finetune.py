"""generate.py through deepy.py (modes, tp=2 == tp=1, errors), greedy parity with transformers,
and fine-tuning a converted Hugging Face model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from megatron_lite.data.indexed_dataset import (
    MMapIndexedDatasetBuilder,
    data_file_path,
    index_file_path,
)
from tests.distributed.spawn import free_port
from tests.integration.common import deepy, gen_config

REPO = Path(__file__).resolve().parents[2]


def test_input_file_mode_writes_records_and_matches_transformers_greedy(tmp_path, hf_checkpoint):
    from transformers import GPTNeoXForCausalLM

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("the model reads\n\nand then predicts\n")
    out = tmp_path / "samples.jsonl"
    result = deepy("generate.py", str(hf_checkpoint["ckpt"] / "config.yml"), gen_config(tmp_path, hf_checkpoint["ckpt"]),
                   cwd=tmp_path, extra=["-i", str(prompts), "-o", str(out)])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "skipped 1 empty prompt" in result.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["context"] for r in records] == ["the model reads", "and then predicts"]
    for rec in records:
        assert set(rec) == {"context", "text", "length", "finished", "duration_seconds"}
    hf = GPTNeoXForCausalLM.from_pretrained(hf_checkpoint["hf"]).eval()
    from megatron_lite.tokenizer import build_tokenizer_from

    tok = build_tokenizer_from("HFTokenizer", str(hf_checkpoint["hf"] / "tokenizer.json"))
    for rec in records:
        ids = torch.tensor([tok.tokenize(rec["context"])])
        ref = hf.generate(ids, max_new_tokens=12, do_sample=False, pad_token_id=tok.eod, eos_token_id=None)
        expected = ref[0, ids.shape[1]:].tolist()
        expected = expected[: expected.index(tok.eod) + 1] if tok.eod in expected else expected
        assert rec["text"] == tok.detokenize([t for t in expected if t != tok.eod])


def test_tp2_greedy_equals_tp1(tmp_path, hf_checkpoint):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("the model\nreads a token and\n")
    texts = []
    for tp in (1, 2):
        out = tmp_path / f"tp{tp}.jsonl"
        cfg = gen_config(tmp_path, hf_checkpoint["ckpt"], model_parallel_size=tp, num_gpus=tp)
        result = deepy("generate.py", str(hf_checkpoint["ckpt"] / "config.yml"), cfg, cwd=tmp_path,
                       extra=["-i", str(prompts), "-o", str(out)])
        assert result.returncode == 0, result.stderr[-3000:]
        texts.append([json.loads(x)["text"] for x in out.read_text().splitlines()])
    assert texts[0] == texts[1] and all(texts[0])


def test_unconditional_and_interactive_modes(tmp_path, hf_checkpoint):
    out = tmp_path / "u.jsonl"
    cfg = gen_config(tmp_path, hf_checkpoint["ckpt"], text_gen_type="unconditional", num_samples=3,
                     temperature=1.0, sample_output_file=str(out))
    result = deepy("generate.py", str(hf_checkpoint["ckpt"] / "config.yml"), cfg, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(out.read_text().splitlines()) == 3
    cfg = gen_config(tmp_path, hf_checkpoint["ckpt"], text_gen_type="interactive")
    result = deepy("generate.py", str(hf_checkpoint["ckpt"] / "config.yml"), cfg, cwd=tmp_path,
                   stdin="the model\nreads\n")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("Prompt (Ctrl-D to quit): ") == 3  # two prompts, then end of input


@pytest.mark.parametrize("case, expected", [("empty_file", "holds no prompts"), ("no_checkpoint", "load")])
def test_generation_errors(tmp_path, hf_checkpoint, case, expected):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n\n" if case == "empty_file" else "hello\n")
    configs = [str(hf_checkpoint["ckpt"] / "config.yml")]
    keys = {}
    if case == "no_checkpoint":
        keys["load"] = str(tmp_path / "nothing_here")
    result = deepy("generate.py", *configs, gen_config(tmp_path, hf_checkpoint["ckpt"], **keys), cwd=tmp_path,
                   extra=["-i", str(prompts)])
    assert result.returncode != 0
    assert expected in result.stderr and "Traceback" not in result.stderr


def _finetune(tmp_path: Path, hf_checkpoint: dict, name: str, lr: float, prefix: str) -> tuple[Path, list[dict]]:
    save = tmp_path / name
    cfg = tmp_path / f"{name}.yml"
    cfg.write_text(json.dumps({
        "finetune": True, "save": str(save), "data_path": prefix, "split": "90,10,0",
        "train_micro_batch_size_per_gpu": 4, "train_iters": 8, "seq_length": 32,
        "optimizer": {"type": "Adam", "params": {"lr": lr}}, "lr_decay_style": "constant", "warmup": 0.0,
        "eval_interval": 4, "eval_iters": 1, "log_interval": 1, "num_workers": 0,
        "log_dir": str(tmp_path / f"logs_{name}"), "master_port": free_port(), "num_gpus": 1}))
    result = deepy("train.py", str(hf_checkpoint["ckpt"] / "config.yml"), str(cfg), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "loaded model weights from" in result.stderr
    run_dir = next((tmp_path / f"logs_{name}").iterdir())
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if "split" not in x]
    return save, records


def test_finetune_converted_hf_model(tmp_path, hf_checkpoint):
    from transformers import GPTNeoXForCausalLM

    import megatron_lite
    from megatron_lite.tokenizer import build_tokenizer_from

    tok = build_tokenizer_from("HFTokenizer", str(hf_checkpoint["hf"] / "tokenizer.json"))
    prefix = str(tmp_path / "sft_text_document")
    with MMapIndexedDatasetBuilder(data_file_path(prefix), np.uint16) as builder:
        for i in range(40):
            builder.add_item(tok.tokenize(f"the model {i} reads a token and then predicts") + [tok.eod])
            builder.end_document()
        builder.finalize(index_file_path(prefix))
    # lr 0: the saved weights must be exactly the Hugging Face model's (loaded, not random).
    frozen, records = _finetune(tmp_path, hf_checkpoint, "frozen", 0.0, prefix)
    assert [r["iteration"] for r in records] == list(range(1, 9))  # starts at iteration 0
    ours, _ = megatron_lite.load_model(str(frozen))
    hf = GPTNeoXForCausalLM.from_pretrained(hf_checkpoint["hf"]).eval()
    x = torch.tensor([tok.tokenize("the model reads a token")])
    with torch.no_grad():
        torch.testing.assert_close(ours(x), hf(x).logits, rtol=1e-5, atol=1e-5)
    # A real learning rate: the loss on this data goes down.
    trained, records = _finetune(tmp_path, hf_checkpoint, "trained", 0.003, prefix)
    assert records[-1]["loss"] < records[0]["loss"] - 0.5
    assert (trained / "latest").read_text() == "global_step8"
