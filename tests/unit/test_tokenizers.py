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


PARITY_TEXTS = ["It's a dog's life, isn't it? We'll see.", "  two  spaces\n\nand   more\t\ttabs  ",
                "numbers 12345 and 3.14", "ünïcödé ✓ 🙂", "<|endoftext|> inside text"]


@pytest.mark.parametrize("kind", ["GPT2BPETokenizer", "HFGPT2Tokenizer"])
def test_gpt2_types_match_transformers_gpt2_tokenizer(files, kind):
    """Same ids, vocab size, eod and pad as GPT-NeoX's HFGPT2Tokenizer (transformers'
    GPT2TokenizerFast on the same local files, pad token added)."""
    from transformers import GPT2TokenizerFast

    ref = GPT2TokenizerFast.from_pretrained(str(files))  # local vocab.json + merges.txt
    if kind == "HFGPT2Tokenizer":
        ref.add_special_tokens({"pad_token": "<|padding|>"})
    tok = build_tokenizer_from(kind, str(files / "vocab.json"), str(files / "merges.txt"))
    for text in PARITY_TEXTS:
        assert tok.tokenize(text) == ref.encode(text)
    assert tok.vocab_size == len(ref) and tok.eod == tok.eod_id == ref.eos_token_id
    if kind == "HFGPT2Tokenizer":
        assert tok.pad == tok.pad_id == ref.pad_token_id


def test_hf_tokenizer_follows_gpt_neox_encode_decode(files, tmp_path):
    """GPT-NeoX's HFTokenizer calls encode(text) and decode(ids) with the library defaults: the
    file's post-processor applies (a BOS here) and decoding skips special tokens."""
    from tokenizers import Tokenizer, processors

    backend = Tokenizer.from_file(str(files / "t.json"))
    backend.add_special_tokens(["<s>"])
    bos = backend.token_to_id("<s>")
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", bos)])
    backend.save(str(tmp_path / "bos.json"))
    tok = build_tokenizer_from("HFTokenizer", str(tmp_path / "bos.json"))
    ids = tok.tokenize("Hello world.")
    assert ids == backend.encode("Hello world.").ids and ids[0] == bos
    assert tok.tokenize_batch(["Hello world."]) == [ids]
    assert tok.detokenize(ids + [tok.eod]) == "Hello world."
    assert tok.vocab_size == bos + 1 == vocab_size_of("HFTokenizer", str(tmp_path / "bos.json"))


def test_vocab_size_of_reads_the_files_without_building(files, tmp_path):
    from tokenizers import ByteLevelBPETokenizer

    bare = ByteLevelBPETokenizer()  # a GPT-2 style vocab.json without <|endoftext|>
    bare.train_from_iterator(TEXTS * 10, vocab_size=280)
    (tmp_path / "bare").mkdir()
    bare.save_model(str(tmp_path / "bare"))
    for kind in ("GPT2BPETokenizer", "HFGPT2Tokenizer"):
        for root in (files, tmp_path / "bare"):
            tok = build_tokenizer_from(kind, str(root / "vocab.json"), str(root / "merges.txt"))
            assert vocab_size_of(kind, str(root / "vocab.json"), str(root / "merges.txt")) == tok.vocab_size
    plain = build_tokenizer_from("GPT2BPETokenizer", str(tmp_path / "bare" / "vocab.json"),
                                 str(tmp_path / "bare" / "merges.txt"))
    assert plain.eod == plain.vocab_size - 1 and plain.detokenize(plain.tokenize(TEXTS[1])) == TEXTS[1]


def test_names_are_case_insensitive_and_gpt2_dirs_accepted(files):
    tok = build_tokenizer_from("hfgpt2tokenizer", str(files))  # GPT-NeoX passes a directory
    assert tok.name == "HFGPT2Tokenizer" and tok.detokenize(tok.tokenize(TEXTS[0])) == TEXTS[0]
    char = build_tokenizer_from("charleveltokenizer")
    assert (char.eod_id, char.pad_id) == (0, 1)
    assert char.tokenize_batch("ab") == [[97, 98]]


def test_more_errors(tmp_path, files):
    with pytest.raises(ValueError, match="'SPMTokenizer' is a GPT-NeoX type megatron_lite does not implement"):
        build_tokenizer_from("SPMTokenizer", "x.model")
    with pytest.raises(ValueError, match="HFTokenizer needs vocab_file"):
        build_tokenizer_from("HFTokenizer")
    (tmp_path / "junk.json").write_text("not json")
    with pytest.raises(ValueError, match="junk.json is not a tokenizers JSON file"):
        build_tokenizer_from("HFTokenizer", str(tmp_path / "junk.json"))
    from tokenizers import Tokenizer, models

    Tokenizer(models.BPE()).save(str(tmp_path / "noeod.json"))
    with pytest.raises(ValueError, match="noeod.json has no <|endoftext|> token"):
        build_tokenizer_from("HFTokenizer", str(tmp_path / "noeod.json"))
    with pytest.raises(FileNotFoundError, match="merge_file: .*nope.txt not found"):
        vocab_size_of("HFGPT2Tokenizer", str(files / "vocab.json"), str(tmp_path / "nope.txt"))
