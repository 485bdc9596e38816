"""The README's "Fine-tuning an existing model" worked example, end to end, as a user runs it:
import, SFT, evaluation, preference data, DPO with LoRA, evaluation, export.

A tiny random-init GPTNeoX directory with a tokenizer.json stands in for a downloaded Pythia
(the same files, the same architecture options) at the README's path ``pythia-160m/``. The
commands are the README's, checked against its text and run as subprocesses in a working
directory that holds ``data/`` and ``checkpoints/`` at the same relative paths; ``finetune.yml``,
``eval.yml`` and ``dpo.yml`` are the README's blocks, with ``test.yml`` (sizes and learning rates
for a CPU test, a free port; rewritten before the DPO run) merged last. After the eight steps,
transformers loads the export and must give the DPO checkpoint's (adapters merged) logits.
"""

from __future__ import annotations

import json
import math
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.distributed.spawn import free_port
from tests.integration.common import deepy

REPO = Path(__file__).resolve().parents[2]
IMPORTED, FINETUNED, ALIGNED = "checkpoints/pythia-160m", "checkpoints/pythia-160m-sft", "checkpoints/pythia-160m-dpo"

# What a user types, in order: must be the README's bash block, command for command.
COMMANDS = [
    "python tools/convert_from_hf.py --input_dir pythia-160m --output_dir checkpoints/pythia-160m",
    "python tools/preprocess_data.py --input data/sft.jsonl --output-prefix data/sft --prompt-key prompt "
    "--completion-key completion --append-eod --tokenizer-type HFTokenizer --vocab-file pythia-160m/tokenizer.json",
    "./deepy.py train.py checkpoints/pythia-160m/config.yml finetune.yml",
    "./deepy.py evaluate.py checkpoints/pythia-160m/config.yml eval.yml --eval_tasks perplexity bleu_rouge",
    "./deepy.py evaluate.py checkpoints/pythia-160m/config.yml eval.yml sft.yml --eval_tasks perplexity bleu_rouge",
    "python tools/preprocess_data.py --input data/prefs.jsonl --output-prefix data/prefs --prompt-key prompt "
    "--chosen-key chosen --rejected-key rejected --append-eod --tokenizer-type HFTokenizer "
    "--vocab-file pythia-160m/tokenizer.json",
    "./deepy.py train.py checkpoints/pythia-160m/config.yml dpo.yml",
    "./deepy.py evaluate.py checkpoints/pythia-160m/config.yml eval.yml dpo-model.yml --eval_tasks perplexity bleu_rouge",
    "python tools/convert_to_hf.py --input_dir checkpoints/pythia-160m-dpo --output_dir pythia-160m-dpo",
]

# A task a 2-layer, 64-wide model picks up in 30 steps: one template whose answer repeats the
# prompt's noun, plus a colour to memorize per noun.
FACTS = [("apple", "red"), ("banana", "yellow"), ("grass", "green"), ("sky", "blue"), ("snow", "white"),
         ("coal", "black"), ("cherry", "red"), ("lemon", "yellow"), ("leaf", "green"), ("ocean", "blue"),
         ("milk", "white"), ("night", "black"), ("tomato", "red"), ("corn", "yellow"), ("frog", "green"),
         ("jeans", "blue"), ("cloud", "white"), ("crow", "black"), ("ruby", "red"), ("sun", "yellow")]
HELD_OUT = 4  # the last facts: never trained on; the perplexity and BLEU/ROUGE data
REFUSAL = " I don't know."  # the rejected answer of every preference pair: DPO learns to avoid it


def prompt(thing: str) -> str:
    return f"Q: What colour is the {thing}?\nA:"


def completion(thing: str, colour: str) -> str:
    return f" The {thing} is {colour}."


def readme_section() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    start = text.index("## Fine-tuning an existing model")
    return text[start:text.index("\n## ", start)]


def code_blocks(section: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", section, re.S)


def readme_commands(section: str) -> list[str]:
    """The bash block's commands, continuation lines joined, comments dropped, spacing normalized."""
    script = code_blocks(section, "bash")[0].replace("\\\n", " ")
    return [shlex.join(argv) for line in script.splitlines() if (argv := shlex.split(line, comments=True))]


def run_records(cwd: Path, before: set[Path]) -> list[dict]:
    """The training records (not validation) of the one train run started since ``before``."""
    new = set(cwd.glob("runs/*-train/metrics.jsonl")) - before
    assert len(new) == 1, new
    return [r for line in new.pop().read_text().splitlines() if "split" not in (r := json.loads(line))]


def answer_logp(model, tokenizer, prompt_text: str, answer: str) -> float:
    """log p(answer | prompt) under a model that returns [batch, seq, vocab] logits."""
    ids, n = tokenizer.tokenize(prompt_text + answer), len(tokenizer.tokenize(prompt_text))
    x = torch.tensor([ids])
    with torch.no_grad():
        logits = model(x)
    logits = (logits.logits if hasattr(logits, "logits") else logits)[0, :-1].float()
    logp = torch.log_softmax(logits, -1).gather(-1, x[0, 1:, None]).squeeze(-1)
    return logp[n - 1:].sum().item()


def write_jsonl(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def make_hf_model(hf_dir: Path) -> None:
    """What a user has downloaded: config.json + model.safetensors + tokenizer.json, Pythia's
    architecture in miniature (partial rotary, parallel residual, untied head, its special tokens)."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    tok = ByteLevelBPETokenizer()
    corpus = [prompt(t) + completion(t, c) for t, c in FACTS] + ["what is the colour of a thing in the sky"] * 5
    tok.train_from_iterator(corpus * 10, vocab_size=400, special_tokens=["<|endoftext|>", "<|padding|>"])
    torch.manual_seed(0)
    cfg = GPTNeoXConfig(vocab_size=tok.get_vocab_size(), hidden_size=64, num_hidden_layers=2,
                        num_attention_heads=4, intermediate_size=256, max_position_embeddings=64,
                        use_parallel_residual=True, tie_word_embeddings=False,
                        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.25})
    GPTNeoXForCausalLM(cfg).save_pretrained(hf_dir)
    tok.save(str(hf_dir / "tokenizer.json"))


def run(command: str, cwd: Path) -> subprocess.CompletedProcess:
    """One README command: ``python tools/X.py`` with this interpreter, ``./deepy.py`` with
    test.yml merged after the command's configs (the options after them stay last)."""
    argv = shlex.split(command)
    if argv[0] == "python":
        result = subprocess.run([sys.executable, str(REPO / argv[1]), *argv[2:]], capture_output=True, text=True,
                                cwd=cwd, timeout=120)
    else:
        assert argv[0] == "./deepy.py", command
        n = next((i for i, a in enumerate(argv) if a.startswith("--")), len(argv))
        result = deepy(argv[1], *argv[2:n], "test.yml", cwd=cwd, extra=argv[n:])
    assert result.returncode == 0, f"{command}\n{result.stderr[-3000:]}"
    return result


def evaluate(command: str, cwd: Path) -> dict:
    """Run an evaluate.py command; the results JSON it wrote (README: runs/eval_results_<time>.json)."""
    before = set(cwd.glob("runs/eval_results_*.json"))
    run(command, cwd)
    new = set(cwd.glob("runs/eval_results_*.json")) - before
    assert len(new) == 1, new
    results = json.loads(new.pop().read_text())["results"]
    ppl, bleu = results["perplexity"], results["bleu_rouge"]
    assert ppl["documents,none"] == HELD_OUT and ppl["tokens,none"] > 0 and ppl["bits_per_byte,none"] > 0
    assert math.isclose(ppl["perplexity,none"], math.exp(ppl["loss,none"]), rel_tol=1e-9)
    assert bleu["records,none"] == HELD_OUT and 0 <= bleu["bleu,none"] <= 100 and 0 <= bleu["rougeL,none"] <= 1
    return results


@pytest.mark.meta
def test_readme_finetune_section_is_the_tested_workflow():
    section = readme_section()
    assert readme_commands(section) == COMMANDS
    finetune_yml, eval_yml, dpo_yml = code_blocks(section, "yaml")
    assert finetune_yml.startswith("# finetune.yml") and eval_yml.startswith("# eval.yml")
    assert dpo_yml.startswith("# dpo.yml")
    assert "(sft.yml: `load: checkpoints/pythia-160m-sft`)" in section
    assert "(dpo-model.yml: `load: checkpoints/pythia-160m-dpo`)" in section


def test_finetune_workflow_from_hf_to_hf(tmp_path):
    sizes = write_workspace(tmp_path)
    before = check_import_and_sft(tmp_path)
    check_lora_dpo(tmp_path, sizes, before)
    check_export(tmp_path)


def write_workspace(tmp_path: Path) -> dict:
    """The HF model, the data files and the README's configs; returns test.yml's sizes."""
    finetune_yml, eval_yml, dpo_yml = code_blocks(readme_section(), "yaml")  # the README's configs
    make_hf_model(tmp_path / "pythia-160m")
    train, held_out = FACTS[:-HELD_OUT], FACTS[-HELD_OUT:]
    write_jsonl(tmp_path / "data/sft.jsonl", [{"prompt": prompt(t), "completion": completion(t, c)} for t, c in train])
    write_jsonl(tmp_path / "data/heldout.jsonl", [{"text": prompt(t) + completion(t, c)} for t, c in held_out])
    write_jsonl(tmp_path / "data/references.jsonl",
                [{"prompt": prompt(t), "reference": completion(t, c)} for t, c in held_out])
    write_jsonl(tmp_path / "data/prefs.jsonl",
                [{"prompt": prompt(t), "chosen": completion(t, c), "rejected": REFUSAL} for t, c in train])
    (tmp_path / "finetune.yml").write_text(finetune_yml)
    (tmp_path / "eval.yml").write_text(eval_yml)
    (tmp_path / "dpo.yml").write_text(dpo_yml)
    (tmp_path / "sft.yml").write_text(f"load: {FINETUNED}\n")
    (tmp_path / "dpo-model.yml").write_text(f"load: {ALIGNED}\n")
    # The README's sizes are for a GPU and a 160M model: a context the tiny model has (64), a
    # learning rate that moves a random model in 30 steps, answers that fit the context.
    sizes = {"seq_length": 64, "train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 1,
             "train_iters": 30, "optimizer": {"type": "Adam", "params": {"lr": 3e-3}}, "warmup": 0.1, "min_lr": 3e-4,
             "log_interval": 5, "maximum_tokens": 12, "num_workers": 0, "num_gpus": 1, "master_port": free_port()}
    (tmp_path / "test.yml").write_text(json.dumps(sizes))
    return sizes


def check_import_and_sft(tmp_path: Path) -> dict:
    """Steps 1-4; returns the original model's evaluation."""
    # 1. import
    run(COMMANDS[0], tmp_path)
    assert (tmp_path / IMPORTED / "latest").read_text() == "global_step0"
    # 2. SFT data: text and labels
    run(COMMANDS[1], tmp_path)
    for name in ("sft_text_document", "sft_label_document"):
        assert (tmp_path / "data" / f"{name}.bin").stat().st_size > 0
    # 3. fine-tune: weights from the import, iterations from 0, checkpoints to the new directory
    result = run(COMMANDS[2], tmp_path)
    assert "loaded model weights from" in result.stderr
    train_records = run_records(tmp_path, set())
    assert [r["iteration"] for r in train_records] == [5, 10, 15, 20, 25, 30]
    assert train_records[-1]["loss"] < train_records[0]["loss"] - 1.0, train_records
    assert (tmp_path / FINETUNED / "latest").read_text() == "global_step30"
    assert (tmp_path / IMPORTED / "latest").read_text() == "global_step0"  # the import is untouched
    # 4. evaluate both on the same held-out records: fine-tuning made them likelier, and the
    # answers to the held-out prompts now share words with the references.
    before, after = evaluate(COMMANDS[3], tmp_path), evaluate(COMMANDS[4], tmp_path)
    assert after["perplexity"]["perplexity,none"] < 0.8 * before["perplexity"]["perplexity,none"], (before, after)
    assert after["bleu_rouge"]["rougeL,none"] > before["bleu_rouge"]["rougeL,none"], (before, after)
    return before


def check_lora_dpo(tmp_path: Path, sizes: dict, before: dict) -> None:
    """Steps 5-7: preference data, LoRA-DPO from the SFT model, evaluation."""
    import yaml

    # 5. preference pairs: the prompt masked in the labels of both answers
    run(COMMANDS[5], tmp_path)
    for name in ("chosen", "chosen_label", "rejected", "rejected_label"):
        assert (tmp_path / "data" / f"prefs_{name}_document.bin").stat().st_size > 0
    # 6. DPO with LoRA on the SFT model, which is also the reference. Half the pairs per step and
    # a learning rate that moves rank-8 adapters in 10 steps.
    (tmp_path / "test.yml").write_text(json.dumps({
        **sizes, "train_micro_batch_size_per_gpu": 8, "train_iters": 10, "log_interval": 2,
        "optimizer": {"type": "Adam", "params": {"lr": 1e-2}}, "min_lr": 1e-3, "master_port": free_port()}))
    sft_run = set(tmp_path.glob("runs/*-train/metrics.jsonl"))
    result = run(COMMANDS[6], tmp_path)
    sft_step = tmp_path / FINETUNED / "global_step30"
    assert f"reference model: the LoRA base ({sft_step})" in result.stderr
    dpo = run_records(tmp_path, sft_run)
    assert [r["iteration"] for r in dpo] == [2, 4, 6, 8, 10]
    for r in dpo:
        for key in ("loss", "reward_margin", "reward_accuracy", "chosen_rewards", "rejected_rewards",
                    "logp_chosen", "logp_rejected"):
            assert math.isfinite(r[key]), (key, r)
    assert dpo[-1]["loss"] < dpo[0]["loss"] - 0.1 and dpo[-1]["reward_margin"] > 0.1, dpo
    assert dpo[-1]["reward_accuracy"] >= 0.9, dpo
    assert (tmp_path / ALIGNED / "latest").read_text() == "global_step10"
    assert (tmp_path / FINETUNED / "latest").read_text() == "global_step30"  # the SFT model is untouched
    saved = yaml.safe_load((tmp_path / ALIGNED / "global_step10" / "config.yml").read_text())
    assert saved["lora"]["base"] == str(sft_step) and saved["train_impl"] == "dpo"
    # 7. evaluate the aligned model: still far better on the held-out records than the original
    aligned = evaluate(COMMANDS[7], tmp_path)
    assert aligned["perplexity"]["perplexity,none"] < 0.8 * before["perplexity"]["perplexity,none"], (before, aligned)


def check_export(tmp_path: Path) -> None:
    """Step 8: the merged export against our reading of the LoRA checkpoint."""
    from transformers import AutoTokenizer, GPTNeoXForCausalLM

    import megatron_lite

    # 8. export, the adapters merged; transformers loads it offline, with the model's tokenizer,
    # and agrees with our reading of the LoRA checkpoint
    run(COMMANDS[8], tmp_path)
    hf = GPTNeoXForCausalLM.from_pretrained(tmp_path / "pythia-160m-dpo", local_files_only=True).eval()
    hf_tok = AutoTokenizer.from_pretrained(tmp_path / "pythia-160m-dpo", local_files_only=True)
    ours, tokenizer = megatron_lite.load_model(str(tmp_path / ALIGNED))
    sft, _ = megatron_lite.load_model(str(tmp_path / FINETUNED))
    text = prompt("sky") + completion("sky", "blue")
    assert hf_tok(text)["input_ids"] == tokenizer.tokenize(text)
    x = torch.tensor([tokenizer.tokenize(text)])
    with torch.no_grad():
        torch.testing.assert_close(hf(x).logits, ours(x), rtol=1e-5, atol=1e-5)
        assert not torch.allclose(sft(x), hf(x).logits)  # the export holds the DPO weights
    # The preference carries over to a held-out prompt: the refusal is less likely than after SFT.
    thing = FACTS[-1][0]
    assert answer_logp(hf, tokenizer, prompt(thing), REFUSAL) < answer_logp(sft, tokenizer, prompt(thing), REFUSAL) - 1
