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
    with pytest.raises(ValueError, match="tokenizer_type: 'SentencePiece' is not one of .*SPMTokenizer"):
        build_tokenizer_from("SentencePiece", "x.model")
    with pytest.raises(ValueError, match="HFTokenizer needs vocab_file"):
        build_tokenizer_from("HFTokenizer")
    (tmp_path / "junk.json").write_text("not json")
    with pytest.raises(ValueError, match="junk.json is not a tokenizers JSON file"):
        build_tokenizer_from("HFTokenizer", str(tmp_path / "junk.json"))
    from tokenizers import Tokenizer, models

    Tokenizer(models.BPE()).save(str(tmp_path / "noeod.json"))
    with pytest.raises(ValueError, match="noeod.json has none of the end-of-document tokens"):
        build_tokenizer_from("HFTokenizer", str(tmp_path / "noeod.json"))
    with pytest.raises(FileNotFoundError, match="merge_file: .*nope.txt not found"):
        vocab_size_of("HFGPT2Tokenizer", str(files / "vocab.json"), str(tmp_path / "nope.txt"))


# --- SPMTokenizer and TiktokenTokenizer: tiny files built here, checked against the libraries ---

SPM_TEXTS = ["the quick brown fox jumps over the lazy dog", "Hello world.\nA second  line",
             "ünïcödé ✓ 🙂 «x»", "  leading spaces", "<|endoftext|> inside text", ""]


def train_spm(root, name: str, vocab_size: int = 150, **options) -> str:
    """A SentencePiece model trained in ~0.1 s on a few hundred generated lines."""
    import random

    import sentencepiece

    rng = random.Random(0)
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyzüé") for _ in range(rng.randint(2, 7)))
             for _ in range(300)] + "the quick brown fox jumps over lazy dog hello world".split()
    corpus = root / "corpus.txt"
    corpus.write_text("\n".join(" ".join(rng.choice(words) for _ in range(12)) for _ in range(400)))
    sentencepiece.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(root / name),
                                             vocab_size=vocab_size, minloglevel=2, **options)
    return str(root / f"{name}.model")


@pytest.fixture(scope="module")
def spm_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("spm")
    return {"eot": train_spm(root, "eot", 300, user_defined_symbols=["<|endoftext|>"], byte_fallback=True),
            "llama": train_spm(root, "llama"),  # no <|endoftext|>: <unk> 0, <s> 1, </s> 2
            "pad": train_spm(root, "pad", pad_id=3),
            "noeos": train_spm(root, "noeos", eos_id=-1)}


def test_spm_ids_are_sentencepieces(spm_models, monkeypatch):
    """GPT-NeoX's SentencePieceTokenizer: SentencePieceProcessor(model_file=...).encode(text),
    no BOS/EOS, decode(ids), get_piece_size(), eod = the <|endoftext|> piece."""
    import sentencepiece

    for key in ("eot", "llama"):
        ref = sentencepiece.SentencePieceProcessor(model_file=spm_models[key])
        tok = build_tokenizer(SimpleNamespace(tokenizer_type="SPMTokenizer", vocab_file=spm_models[key],
                                              merge_file=None))
        for text in SPM_TEXTS:
            assert tok.tokenize(text) == ref.encode(text)
            assert tok.detokenize(tok.tokenize(text)) == ref.decode(ref.encode(text))
        assert tok.tokenize_batch(SPM_TEXTS) == [tok.tokenize(t) for t in SPM_TEXTS]
        monkeypatch.setenv("TOKENIZERS_PARALLELISM", "true")  # the library's threads (conftest: off)
        assert tok.tokenize_batch(SPM_TEXTS * 9) == [tok.tokenize(t) for t in SPM_TEXTS * 9]
        monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
        assert ref.bos_id() not in tok.tokenize("hello world")
        assert tok.vocab_size == ref.get_piece_size() == {"eot": 300, "llama": 150}[key] == vocab_size_of("spmtokenizer", spm_models[key])
    eot = build_tokenizer_from("SPMTokenizer", spm_models["eot"])
    assert eot.eod == eot.eod_id == eot.pad == eot.token_id("<|endoftext|>") == 3
    assert 3 in eot.tokenize("dog <|endoftext|>")  # a user-defined piece: matched in text
    for text in ("the quick brown fox", "ünïcödé ✓ 🙂"):  # byte fallback: exact round trips
        assert eot.detokenize(eot.tokenize(text)) == text
    assert eot.detokenize(eot.tokenize("dog") + [eot.vocab_size, 10_000]) == "dog"  # padding-row ids dropped


def test_spm_eod_and_pad_fallbacks(spm_models, tmp_path):
    llama = build_tokenizer_from("SPMTokenizer", spm_models["llama"])
    assert llama.token_id("<|endoftext|>") is None
    assert llama.eod == llama.pad == 2  # </s>, where GPT-NeoX's piece_to_id gives <unk> (0)
    padded = build_tokenizer_from("SPMTokenizer", spm_models["pad"])
    assert (padded.eod, padded.pad) == (2, 3)
    with pytest.raises(ValueError, match="noeos.model has neither a <|endoftext|> piece nor"):
        build_tokenizer_from("SPMTokenizer", spm_models["noeos"])


def write_tiktoken(path, merges=(b"th", b"he", b"the", b" t", b" the", b"in", b"ing", b"er", b" a")) -> dict:
    """A .tiktoken rank file: every single byte (ranks 0-255) and a few merges after them."""
    import base64

    ranks = {bytes([b]): b for b in range(256)}
    for merge in merges:
        ranks[merge] = len(ranks)
    path.write_bytes(b"".join(base64.b64encode(t) + b" %d\n" % r for t, r in ranks.items()))
    return ranks


def test_tiktoken_ids_are_tiktokens(tmp_path, monkeypatch):
    """A rank file of another name: tiktoken.Encoding with the cl100k_base pattern and
    <|endoftext|> after the last rank; ids, n_vocab and eot_token are the library's."""
    import tiktoken
    import tiktoken.load

    from megatron_lite.tokenizer.tiktoken_tokenizer import CL100K_PATTERN

    ranks = write_tiktoken(tmp_path / "tiny.tiktoken")
    tok = build_tokenizer_from("TiktokenTokenizer", str(tmp_path / "tiny.tiktoken"))
    ref = tiktoken.Encoding("ref", pat_str=CL100K_PATTERN, mergeable_ranks=ranks,
                            special_tokens={"<|endoftext|>": len(ranks)})
    for text in SPM_TEXTS + PARITY_TEXTS:
        assert tok.tokenize(text) == ref.encode(text, allowed_special="all")
        assert tok.detokenize(tok.tokenize(text)) == text  # byte-level: exact
    assert tok.tokenize_batch(SPM_TEXTS) == [tok.tokenize(t) for t in SPM_TEXTS]
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "true")  # the library's threads (conftest: off)
    assert tok.tokenize_batch(SPM_TEXTS * 9) == [tok.tokenize(t) for t in SPM_TEXTS * 9]
    assert tok.tokenize(" the thing") == [ranks[b" the"], ranks[b" "], ranks[b"th"], ranks[b"ing"]]
    assert tok.eod == tok.pad == ref.eot_token == len(ranks) and tok.tokenize("<|endoftext|>") == [tok.eod]
    assert tok.vocab_size == ref.n_vocab == len(ranks) + 1 == vocab_size_of("TiktokenTokenizer", str(tmp_path / "tiny.tiktoken"))
    assert tok.detokenize([ranks[b"\xc3"]]) == "\ufffd"  # half a character: replaced, not raised
    assert tok.detokenize([ranks[b"in"], tok.vocab_size + 5]) == "in"  # a padding-row id: dropped
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")  # tiktoken's own reader, without its /tmp cache
    assert tok.encoding._mergeable_ranks == tiktoken.load.load_tiktoken_bpe(str(tmp_path / "tiny.tiktoken"))


def test_tiktoken_file_named_after_an_encoding_gets_its_pattern_and_specials(tmp_path):
    write_tiktoken(tmp_path / "cl100k_base.tiktoken")
    tok = build_tokenizer_from("TiktokenTokenizer", str(tmp_path / "cl100k_base.tiktoken"))
    from megatron_lite.tokenizer.tiktoken_tokenizer import CL100K_PATTERN

    assert tok.encoding._pat_str == CL100K_PATTERN  # our constant is tiktoken's cl100k_base pattern
    assert (tok.eod, tok.vocab_size, tok.token_id("<|fim_prefix|>")) == (100257, 100277, 100258)
    write_tiktoken(tmp_path / "r50k_base.tiktoken")  # r50k_base has 50256 ranks, not 265
    with pytest.raises(ValueError, match="r50k_base.tiktoken is not a tiktoken BPE rank file .265 ranks"):
        build_tokenizer_from("TiktokenTokenizer", str(tmp_path / "r50k_base.tiktoken"))


def test_tiktoken_encoding_names_come_from_the_cache_only(tmp_path, monkeypatch):
    """GPT-NeoX's form (vocab_file: an encoding name): tiktoken's cache or a clear error, and
    never a download."""
    import hashlib

    import requests
    import tiktoken.load
    import tiktoken.registry

    def no_network(*args, **kwargs):
        raise AssertionError("tried to download")

    monkeypatch.setattr(requests, "get", no_network)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(tiktoken.registry, "ENCODINGS", {})
    with pytest.raises(ValueError, match="'cl100k_base' is a tiktoken encoding that is not in tiktoken's cache.*"
                                         "pass a local .tiktoken file"):
        build_tokenizer_from("TiktokenTokenizer", "cl100k_base")
    url = "https://example.invalid/tiny_base.tiktoken"
    (tmp_path / "cache").mkdir()
    write_tiktoken(tmp_path / "cache" / hashlib.sha1(url.encode()).hexdigest())
    tiktoken.registry.list_encoding_names()  # loads the plugins' constructors
    from megatron_lite.tokenizer.tiktoken_tokenizer import CL100K_PATTERN

    monkeypatch.setitem(tiktoken.registry.ENCODING_CONSTRUCTORS, "tiny_base", lambda: {
        "name": "tiny_base", "pat_str": CL100K_PATTERN, "mergeable_ranks": tiktoken.load.load_tiktoken_bpe(url),
        "special_tokens": {"<|endoftext|>": 265}})
    cached = build_tokenizer_from("TiktokenTokenizer", "tiny_base")
    write_tiktoken(tmp_path / "local.tiktoken")
    local = build_tokenizer_from("TiktokenTokenizer", str(tmp_path / "local.tiktoken"))
    assert cached.tokenize(SPM_TEXTS[1]) == local.tokenize(SPM_TEXTS[1]) and cached.eod == local.eod == 265


def test_spm_and_tiktoken_bad_files(tmp_path, spm_models):
    (tmp_path / "junk.model").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="vocab_file: .*junk.model is not a SentencePiece model"):
        build_tokenizer_from("SPMTokenizer", str(tmp_path / "junk.model"))
    with pytest.raises(FileNotFoundError, match="vocab_file: .*absent.model not found .SPMTokenizer needs"):
        build_tokenizer_from("SPMTokenizer", str(tmp_path / "absent.model"))
    with pytest.raises(ValueError, match="SPMTokenizer needs vocab_file"):
        build_tokenizer_from("SPMTokenizer")
    with pytest.raises(FileNotFoundError, match="vocab_file: .*absent.tiktoken not found .TiktokenTokenizer"):
        build_tokenizer_from("TiktokenTokenizer", str(tmp_path / "absent.tiktoken"))
    cases = {b"not base64 and ranks\n": "too many values", b"": "256 single bytes have no rank",
             b"YQ== 0\n": "255 single bytes have no rank", b"YQ== x\n": "invalid literal"}
    for data, reason in cases.items():
        (tmp_path / "bad.tiktoken").write_bytes(data)
        with pytest.raises(ValueError, match=f"bad.tiktoken is not a tiktoken BPE rank file .{reason}"):
            build_tokenizer_from("TiktokenTokenizer", str(tmp_path / "bad.tiktoken"))
    with pytest.raises(ValueError, match="eot.model is not a tiktoken BPE rank file"):  # a binary file
        build_tokenizer_from("TiktokenTokenizer", spm_models["eot"])
    write_tiktoken(tmp_path / "dup.tiktoken", merges=(b"ab", b"cd"))
    (tmp_path / "dup.tiktoken").write_bytes((tmp_path / "dup.tiktoken").read_bytes().replace(b" 257\n", b" 256\n"))
    with pytest.raises(ValueError, match="1 ranks are given to more than one token"):  # a Rust panic otherwise
        build_tokenizer_from("TiktokenTokenizer", str(tmp_path / "dup.tiktoken"))


def test_config_derives_padded_vocab_from_spm_and_tiktoken(spm_models, tmp_path):
    from megatron_lite.config import ConfigError, config_from_flat, pad_vocab_size
    from megatron_lite.config.derived import resolve

    base = {"num_layers": 2, "hidden_size": 64, "num_attention_heads": 4, "seq_length": 32}
    write_tiktoken(tmp_path / "t.tiktoken")
    for kind, path, vocab in (("SPMTokenizer", spm_models["eot"], 300),
                              ("TiktokenTokenizer", str(tmp_path / "t.tiktoken"), 266)):
        cfg = resolve(config_from_flat({**base, "tokenizer_type": kind, "vocab_file": path}), 1)
        assert cfg.model.padded_vocab_size == pad_vocab_size(vocab, 128, 1)
    (tmp_path / "junk.model").write_bytes(b"junk")
    with pytest.raises(ConfigError, match="junk.model is not a SentencePiece model"):
        resolve(config_from_flat({**base, "tokenizer_type": "SPMTokenizer", "vocab_file": str(tmp_path / "junk.model")}), 1)


@pytest.mark.parametrize("tokens, eod", [
    (["<|begin_of_text|>", "<|end_of_text|>"], "<|end_of_text|>"),  # Llama 3's tokenizer.json
    (["<s>", "</s>"], "</s>"),  # Llama 2's and Mistral's
    (["</s>", "<|endoftext|>"], "<|endoftext|>"),  # GPT-NeoX's token first, wherever it is
])
def test_hf_tokenizer_ends_documents_with_the_models_own_token(tmp_path, tokens, eod):
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({"a": 0, "b": 1, "[UNK]": 2}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(tokens)
    tok.save(str(tmp_path / "tokenizer.json"))
    built = build_tokenizer_from("HFTokenizer", str(tmp_path / "tokenizer.json"))
    assert built.eod == tok.token_to_id(eod) and built.tokenize("a b") == [0, 1]
