"""Preference (DPO / reward model) and KTO data end to end: preprocess_data.py writes GPT-NeoX's
pos/neg (chosen/rejected) and reward datasets; chat records follow the model's own chat template."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from megatron_lite.data.indexed_dataset import MMapIndexedDataset
from megatron_lite.data.sft import render_chat
from megatron_lite.tokenizer import build_tokenizer_from
from tests.integration.test_preprocess import tool, write_jsonl
from tests.unit.test_preference_data import CHAT, CHATML, SPECIALS, _transformers_ids, _write_config

PAIRS = [{"prompt": "Q: what is 2+2?\nA:", "chosen": " 4", "rejected": " 5"},
         {"prompt": "Say hi:", "chosen": " hi ✓", "rejected": " no", "id": 3}]
NAMES = ("chosen", "chosen_label", "rejected", "rejected_label")


def _read(prefix: Path, names) -> dict[str, MMapIndexedDataset]:
    return {n: MMapIndexedDataset(f"{prefix}_{n}_document") for n in names}


def test_pairwise_and_kto_records(tmp_path):
    bad = [{"prompt": "p", "chosen": "a"}, {"prompt": "p", "chosen": "same", "rejected": "same"},
           '{"prompt": "p", "chosen": "a\\ud800", "rejected": "b"}']  # a lone surrogate: no UTF-8 text
    src = write_jsonl(tmp_path / "pairs.jsonl", PAIRS * 5 + bad)
    base = ["--input", str(src), "--chosen-key", "chosen", "--append-eod", "--tokenizer-type", "CharLevelTokenizer"]
    outs = []
    for workers in ("1", "2"):
        out = tmp_path / f"w{workers}"
        result = tool("preprocess_data.py", *base, "--output-prefix", str(out), "--workers", workers, "--batch-size", "3")
        assert result.returncode == 0, result.stderr
        assert "documents: 10" in result.stdout and "skipped: chosen equals rejected: 1, missing key: 1, not valid UTF-8: 1" in result.stdout
        assert "pairs.jsonl:11: missing key 'rejected'" in result.stderr and "pairs.jsonl:12: chosen equals" in result.stderr
        outs.append(out)
    for name in NAMES:  # --workers changes nothing
        for ext in (".bin", ".idx"):
            assert Path(f"{outs[0]}_{name}_document{ext}").read_bytes() == Path(f"{outs[1]}_{name}_document{ext}").read_bytes()
    ds = _read(outs[0], NAMES)
    for side in ("chosen", "rejected"):
        text, label = ds[side], ds[f"{side}_label"]
        assert np.array_equal(text.sizes, label.sizes) and label.dtype == np.int32 and len(text) == 10
        for i, pair in enumerate(PAIRS * 5):
            prompt, answer = list(pair["prompt"].encode()), list(pair[side].encode())
            assert text[i].tolist() == prompt + answer + [0]  # the prompt is shared, eod ends the answer
            assert label[i].tolist() == [-100] * len(prompt) + answer + [0]
    strict = tool("preprocess_data.py", *base, "--output-prefix", str(tmp_path / "strict"), "--strict")
    assert strict.returncode == 1 and "pairs.jsonl:11: missing key 'rejected'" in strict.stderr
    assert "Traceback" not in strict.stderr and not list(tmp_path.glob("strict*"))
    # KTO: {"prompt", "completion", "label": true/false} -> text, label and one int32 reward per record.
    kto = [{"prompt": p["prompt"], "completion": p["chosen"], "label": True} for p in PAIRS]
    kto += [{"prompt": p["prompt"], "completion": p["rejected"], "label": False} for p in PAIRS]
    src = write_jsonl(tmp_path / "kto.jsonl", kto + [{"prompt": "x", "completion": "y", "label": 0.5}])
    out = tmp_path / "kto"
    result = tool("preprocess_data.py", "--input", str(src), "--output-prefix", str(out), "--reward-key", "label",
                  "--tokenizer-type", "CharLevelTokenizer")
    assert result.returncode == 0, result.stderr
    assert "kto.jsonl:5: wrong type 'label' (0.5: not true/false" in result.stderr
    ds = _read(out, ("text", "label", "reward"))
    assert ds["reward"].dtype == np.int32 and ds["reward"].sizes.tolist() == [1] * 4
    assert [int(ds["reward"][i][0]) for i in range(4)] == [1, 1, -1, -1]
    assert ds["text"][2].tolist() == list(b"Q: what is 2+2?\nA: 5")  # no eod without --append-eod
    assert ds["label"][2].tolist() == [-100] * 18 + list(b" 5")


def test_chat_records_use_the_models_chat_template(tmp_path):
    from tokenizers import ByteLevelBPETokenizer

    tok_dir = tmp_path / "tok"
    tok_dir.mkdir()
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator([m["content"] for m in CHAT] * 30, vocab_size=300, special_tokens=SPECIALS)
    bpe.save(str(tok_dir / "tokenizer.json"))
    _write_config(tok_dir, CHATML, "<|im_end|>")  # found next to the HFTokenizer file
    vocab = ["--tokenizer-type", "HFTokenizer", "--vocab-file", str(tok_dir / "tokenizer.json")]
    tok = build_tokenizer_from("HFTokenizer", str(tok_dir / "tokenizer.json"))
    eos = SPECIALS.index("<|im_end|>")
    rejected = CHAT[:-1] + [{"role": "assistant", "content": "Five."}]
    src = write_jsonl(tmp_path / "chat.jsonl", [{"messages": CHAT, "chosen": CHAT, "rejected": rejected}])
    for mode, names in ((["--chat-key", "messages", "--only-last-turn"], ("text", "label")),
                        (["--rejected-key", "rejected", "--workers", "2"], NAMES)):
        result = tool("preprocess_data.py", "--input", str(src), "--output-prefix", str(tmp_path / "t"), *mode, *vocab)
        assert result.returncode == 0, result.stderr
        ds = _read(tmp_path / "t", names)
        for side, messages in zip(names[::2], (CHAT, rejected)):
            ids = _transformers_ids(tok_dir, CHATML, messages, "<|im_end|>")
            assert ds[side][0].tolist() == ids + [eos]  # transformers' ids, then GPT-NeoX's eos
            label = ds[names[names.index(side) + 1]][0]
            prompt = len(_transformers_ids(tok_dir, CHATML, CHAT[:4], "<|im_end|>"))
            assert (label[:prompt] == -100).all() and label[-1] == eos
    # --chat-template-from none: the built-in <|role|> format, each piece tokenized on its own.
    result = tool("preprocess_data.py", "--input", str(src), "--output-prefix", str(tmp_path / "b"), "--chat-key",
                  "messages", "--chat-template-from", "none", *vocab)
    assert result.returncode == 0, result.stderr
    pieces = render_chat(CHAT)
    expected = [i for text, _ in pieces for i in ([tok.eod] if text is None else tok.tokenize(text))]
    assert _read(tmp_path / "b", ("text",))["text"][0].tolist() == expected
    missing = tool("preprocess_data.py", "--input", str(src), "--output-prefix", str(tmp_path / "m"), "--chat-key",
                   "messages", "--chat-template-from", str(tmp_path), *vocab)
    assert missing.returncode == 1 and "has no chat template" in missing.stderr and not list(tmp_path.glob("m_*"))
