"""Supervised fine-tuning data end to end: preprocess prompt/completion and chat .jsonl into token
and label datasets (prompt tokens -100), then train on them with train_label_data_paths."""

from __future__ import annotations

import math
import struct
from pathlib import Path

import numpy as np

from megatron_lite.data.indexed_dataset import MMapIndexedDataset
from megatron_lite.tokenizer import build_tokenizer_from
from tests.integration import test_preprocess
from tests.integration.test_preprocess import leftovers, tok_args, tool, write_jsonl
from tests.integration.test_train import base_config, records, run_train

tokenizer_files = test_preprocess.tokenizer_files  # the module-scoped fixture: tiny trained BPE files

PAIRS = [{"prompt": "Q: what is 2+2?\nA:", "completion": " 4"},
         {"prompt": "Translate 'chat' to English:", "completion": " cat", "id": 7},
         {"prompt": "", "completion": "a completion without a prompt"},
         {"prompt": "ünïcödé prompt ✓ ", "completion": "and its ✓ answer"}]
CHATS = [
    {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"},
                  {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Bye"},
                  {"role": "assistant", "content": "Goodbye."}]},
    {"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]},
]


def datasets(prefix: Path) -> tuple[MMapIndexedDataset, MMapIndexedDataset]:
    return MMapIndexedDataset(f"{prefix}_text_document"), MMapIndexedDataset(f"{prefix}_label_document")


def test_prompt_completion_labels_mask_the_prompt(tmp_path):
    src = write_jsonl(tmp_path / "pairs.jsonl", PAIRS * 10)
    outs = []
    for workers in ("1", "2"):
        out = tmp_path / f"w{workers}"
        result = tool("preprocess_data.py", "--input", str(src), "--output-prefix", str(out), "--append-eod",
                      "--prompt-key", "prompt", "--completion-key", "completion", "--workers", workers,
                      "--batch-size", "3", "--tokenizer-type", "CharLevelTokenizer")
        assert result.returncode == 0, result.stderr
        assert "documents: 40" in result.stdout and f"{out}_label_document.idx (int32)" in result.stdout
        outs.append(out)
    text, label = datasets(outs[0])
    assert np.array_equal(text.sizes, label.sizes) and np.array_equal(text.doc_idx, label.doc_idx)
    for i, pair in enumerate(PAIRS * 10):
        prompt, completion = list(pair["prompt"].encode()), list(pair["completion"].encode())
        assert text[i].tolist() == prompt + completion + [0]  # eod 0
        assert label[i].tolist() == [-100] * len(prompt) + completion + [0]
    # The label file is GPT-NeoX's int32 (dtype code 4): -100 does not fit the tokens' uint16.
    idx = Path(f"{outs[0]}_label_document.idx").read_bytes()
    assert struct.unpack("<B", idx[17:18])[0] == 4 and label.dtype == np.int32 and text.dtype == np.uint16
    for name in ("text", "label"):  # workers change nothing
        for ext in (".bin", ".idx"):
            assert Path(f"{outs[0]}_{name}_document{ext}").read_bytes() == \
                Path(f"{outs[1]}_{name}_document{ext}").read_bytes()


def _trained_text(tok, text: np.ndarray, label: np.ndarray) -> tuple[str, int]:
    """The decoded trained tokens (labels equal to the tokens there) and how many are eod."""
    keep = label >= 0
    assert np.array_equal(label[keep], text[keep].astype(np.int64)) and bool((label[~keep] == -100).all())
    return tok.detokenize(text[keep].tolist()), int((text[keep] == tok.eod).sum())


def test_chat_labels_train_on_assistant_turns(tmp_path, tokenizer_files):
    src = write_jsonl(tmp_path / "chat.jsonl", CHATS)
    tok = build_tokenizer_from("HFTokenizer", tokenizer_files["json"])
    for extra, expected in (([], [("Hello!Goodbye.", 2), ("4", 1)]), (["--only-last-turn"], [("Goodbye.", 1), ("4", 1)])):
        out = tmp_path / f"chat{len(extra)}"
        result = tool("preprocess_data.py", "--input", str(src), "--output-prefix", str(out), "--chat-key",
                      "messages", *extra, *tok_args("HFTokenizer", tokenizer_files))
        assert result.returncode == 0, result.stderr
        text, label = datasets(out)
        assert np.array_equal(text.sizes, label.sizes) and text.num_documents == 2
        assert [_trained_text(tok, text[i], label[i]) for i in range(2)] == expected
        # The whole document is the template, each piece tokenized on its own.
        pieces = ["<|user|>\n", "2+2?", "<|assistant|>\n", "4"]
        ids = [i for piece in pieces[:2] for i in tok.tokenize(piece)] + [tok.eod]
        ids += [i for piece in pieces[2:] for i in tok.tokenize(piece)] + [tok.eod]
        assert text[1].tolist() == ids


def test_bad_sft_lines_are_reported_and_strict_is_fatal(tmp_path):
    lines = [PAIRS[0], {"prompt": "no completion"}, {"prompt": ["x"], "completion": "y"}, "{oops",
             {"prompt": "empty completion", "completion": "  "}, PAIRS[1]]
    src = write_jsonl(tmp_path / "in.jsonl", lines)
    base = ["--input", str(src), "--prompt-key", "prompt", "--tokenizer-type", "CharLevelTokenizer"]
    result = tool("preprocess_data.py", *base, "--output-prefix", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    for where in ("in.jsonl:2: missing key 'completion'", "in.jsonl:3: missing key 'prompt' (a list, not a string)",
                  "in.jsonl:4: not valid JSON", "in.jsonl:5: nothing to train on (empty 'completion')"):
        assert where in result.stderr, where
    assert "documents: 2" in result.stdout
    assert "skipped: missing key: 2, not valid JSON: 1, nothing to train on: 1" in result.stdout
    strict = tool("preprocess_data.py", *base, "--output-prefix", str(tmp_path / "out2"), "--strict")
    assert strict.returncode == 1 and "in.jsonl:2: missing key 'completion'" in strict.stderr
    assert "Traceback" not in strict.stderr and not list(tmp_path.glob("out2*"))
    chats = write_jsonl(tmp_path / "c.jsonl", [CHATS[1], {"messages": [{"role": "user", "content": 1}]},
                                               {"messages": [{"role": "user", "content": "only a question"}]}])
    chat = tool("preprocess_data.py", "--input", str(chats), "--chat-key", "messages", "--output-prefix",
                str(tmp_path / "out3"), "--tokenizer-type", "CharLevelTokenizer", "--strict")
    assert chat.returncode == 1 and "c.jsonl:2: wrong type 'messages[0].content' (a int" in chat.stderr
    assert not list(tmp_path.glob("out3*"))


def test_sft_flag_errors_and_help(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", PAIRS)
    (tmp_path / "in.txt").write_text("plain text")
    base = ["--output-prefix", str(tmp_path / "out"), "--tokenizer-type", "CharLevelTokenizer"]
    both = tool("preprocess_data.py", "--input", str(src), "--prompt-key", "p", "--chat-key", "m", *base)
    assert both.returncode == 2 and "not both" in both.stderr
    lonely = tool("preprocess_data.py", "--input", str(src), "--only-last-turn", *base)
    assert lonely.returncode == 2 and "need --chat-key" in lonely.stderr
    keys = tool("preprocess_data.py", "--input", str(src), "--prompt-key", "p", "--jsonl-keys", "text", *base)
    assert keys.returncode == 2
    txt = tool("preprocess_data.py", "--input", str(tmp_path / "in.txt"), "--chat-key", "messages", *base)
    assert txt.returncode == 1 and "reads JSON records" in txt.stderr and leftovers(tmp_path) == []
    words = " ".join(tool("preprocess_data.py", "--help").stdout.split())
    for phrase in ("--prompt-key KEY", "--completion-key KEY", "--chat-key KEY", "--only-last-turn",
                   "--generation-role ROLE", "train_label_data_paths", "_label_document"):
        assert phrase in words, phrase


def test_train_on_sft_data_with_label_paths(tmp_path):
    """A tiny CPU run on preprocessed SFT data: train and valid both use label datasets."""
    rng = np.random.default_rng(0)
    records_ = [{"prompt": f"Q{int(n)}: " + "".join(rng.choice(list("xyzw"), 12)) + "\nA:",
                 "completion": " the answer is always this"} for n in rng.integers(0, 99, 40)]
    src = write_jsonl(tmp_path / "sft.jsonl", records_)
    prefix = tmp_path / "data" / "sft"
    made = tool("preprocess_data.py", "--input", str(src), "--output-prefix", str(prefix), "--prompt-key",
                "prompt", "--append-eod", "--tokenizer-type", "CharLevelTokenizer")
    assert made.returncode == 0, made.stderr
    text, label = f"{prefix}_text_document", f"{prefix}_label_document"
    cfg = base_config(tmp_path, "", train_micro_batch_size_per_gpu=4, train_iters=8, eval_interval=4,
                      train_data_paths=[text], train_label_data_paths=[label],
                      valid_data_paths=[text], valid_label_data_paths=[label])
    del cfg["data_path"], cfg["split"]
    run_train(tmp_path, cfg)
    train = {r["iteration"]: r["loss"] for r in records(tmp_path)}
    valid = records(tmp_path, "valid")
    assert sorted(train) == list(range(1, 9)) and all(math.isfinite(v) for v in train.values())
    assert train[8] < train[1], train
    assert [r["iteration"] for r in valid] == [4, 8] and all(math.isfinite(r["loss"]) for r in valid)
    # The same tokens without the label datasets: every token counts, so the loss differs from
    # the first step on (same weights, same batch); the labels did reach the loss.
    plain = tmp_path / "plain"
    plain.mkdir()
    run_train(plain, {**cfg, "train_label_data_paths": None, "valid_label_data_paths": None,
                      "log_dir": str(plain / "logs"), "train_iters": 1, "eval_interval": 0})
    assert records(plain)[0]["loss"] != train[1]
