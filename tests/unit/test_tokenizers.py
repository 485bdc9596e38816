"""Tokenizers: every type round-trips text; eod/pad ids; batch == single; clear errors."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from megatron_lite.tokenizer import build_tokenizer, build_tokenizer_from, vocab_size_of

TEXTS = ["Hello world.\nA second line", "ünïcödé ✓ 🙂 «x»", "   leading spaces and\ttabs", ""]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from tokenizers import ByteLevelBPETokenizer

    root = tmp_path_factory.mktemp("tok")
    tok = ByteLevelBPETokenizer()
    tok.train_from_iterator(TEXTS * 10, vocab_size=300, special_tokens=["<|endoftext|>", "<|padding|>"])
    tok.save(str(root / "t.json"))
    tok.save_model(str(root))
    return root


@pytest.mark.parametrize("kind", ["HFTokenizer", "GPT2BPETokenizer", "HFGPT2Tokenizer", "CharLevelTokenizer"])
def test_round_trip_and_batch(files, kind):
    vocab = str(files / ("t.json" if kind == "HFTokenizer" else "vocab.json"))
    cfg = SimpleNamespace(tokenizer_type=kind, vocab_file=vocab, merge_file=str(files / "merges.txt"))
    tok = build_tokenizer(cfg)
    assert tok.tokenize_batch(TEXTS) == [tok.tokenize(t) for t in TEXTS]
    for text in TEXTS:
        assert tok.detokenize(tok.tokenize(text)) == text
    assert tok.vocab_size == vocab_size_of(kind, vocab, str(files / "merges.txt"))
    assert tok.eod == 0
    assert tok.pad == (0 if kind == "GPT2BPETokenizer" else 1)


def test_char_level_is_gpt_neox_byte_level():
    tok = build_tokenizer_from("CharLevelTokenizer")
    assert tok.vocab_size == 512 and tok.tokenize("é") == [195, 169]
    assert tok.detokenize([104, 0, 105]) == "hi"  # eod dropped


def test_errors_name_the_type_or_file(tmp_path):
    with pytest.raises(ValueError, match="tokenizer_type: 'Nope'"):
        build_tokenizer_from("Nope")
    with pytest.raises(FileNotFoundError, match="vocab_file: .*absent.json not found"):
        build_tokenizer_from("HFTokenizer", str(tmp_path / "absent.json"))
    (tmp_path / "v.json").write_text("{}")
    with pytest.raises(ValueError, match="GPT2BPETokenizer needs merge_file"):
        build_tokenizer_from("GPT2BPETokenizer", str(tmp_path / "v.json"), None)
