"""Long texts tokenized in pieces: the same ids as one call, bounded text per call, and a limit
(reported as file:line) for tokenizers that cannot be split exactly."""

from __future__ import annotations

import random

import numpy as np
import pytest

from megatron_lite.data.readers import Document, InputError, ReadStats
from megatron_lite.tokenizer import build_tokenizer_from
from megatron_lite.tokenizer.long_text import (
    PIECES_PER_CALL,
    TOO_LONG,
    LongTextEncoder,
    probe_split,
    skip_too_long,
    split_points,
)

FRAGMENTS = ["the", "Word", "naïve", "слово", "漢字", "🙂", "e\u0301", "7", "1234567", "3.14", "'s", "don't",
             "O'Neil", ".", "...", ",", "(x)", "#", "--", "€5", "<|endoftext|>"]
GLUE = [" ", " ", "\n", "  ", "\n\n", "\t", "\r\n", " \n ", "\u00a0", "   ", ""]


def tricky_text(n: int, seed: int = 0, glue: list[str] = GLUE) -> str:
    rng = random.Random(seed)
    parts = [rng.choice(["", " ", "\n", "  "])]
    while sum(map(len, parts)) < n:
        parts += [rng.choice(FRAGMENTS), rng.choice(glue)]
    return "".join(parts)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A byte-level BPE (GPT-2 pre-tokenizer) and a Metaspace BPE, trained here on tricky text."""
    from tokenizers import ByteLevelBPETokenizer, Tokenizer, models, pre_tokenizers, trainers

    root = tmp_path_factory.mktemp("tok")
    corpus = [tricky_text(400, seed) for seed in range(50)]
    special = ["<|endoftext|>", "<|padding|>"]
    byte_level = ByteLevelBPETokenizer()
    byte_level.train_from_iterator(corpus, vocab_size=600, special_tokens=special)
    byte_level.save(str(root / "bytelevel.json"))
    byte_level.save_model(str(root))
    meta = Tokenizer(models.BPE())
    meta.pre_tokenizer = pre_tokenizers.Metaspace()  # prepends "▁" to every call's text
    meta.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=400, special_tokens=special))
    meta.save(str(root / "metaspace.json"))
    return root


def hf(files, name: str = "bytelevel.json"):
    return build_tokenizer_from("HFTokenizer", str(files / name))


def gpt2(files):
    return build_tokenizer_from("GPT2BPETokenizer", str(files / "vocab.json"), str(files / "merges.txt"))


def test_split_points_are_safe_boundaries_after_piece_chars():
    text = tricky_text(5000, seed=3)
    ends = split_points(text, 100)
    assert ends[-1] == len(text) and ends == sorted(set(ends))
    starts = [0, *ends[:-1]]
    for start, end in zip(starts, ends[:-1]):
        assert end - start >= 100
        after_newline = text[end - 1] == "\n" and not text[end - 2].isspace()
        before_space = text[end] == " " and not text[end - 1].isspace() and not text[end + 1].isspace()
        assert not text[end].isspace() and after_newline or before_space, repr(text[end - 3:end + 3])
    assert split_points("x" * 50, 100) == [50]
    # No boundary: the rest is one piece while it fits the limit, else no plan at all.
    assert split_points("ab cd " + "x" * 300, 3, max_chars=400) == [5, 306]
    assert split_points("ab cd " + "x" * 300, 3, max_chars=200) is None


def test_python_whitespace_covers_unicode_white_space():
    """The proof needs boundary neighbours that are non-whitespace to the tokenizer's regex
    (Unicode White_Space); Python's \\s must therefore hold all of White_Space."""
    white_space = [*range(0x9, 0xE), 0x20, 0x85, 0xA0, 0x1680, *range(0x2000, 0x200B), 0x2028, 0x2029,
                   0x202F, 0x205F, 0x3000]
    assert all(chr(c).isspace() for c in white_space)


@pytest.mark.parametrize("make", [hf, gpt2, lambda files: build_tokenizer_from("CharLevelTokenizer")])
@pytest.mark.parametrize("seed", [0, 1])
def test_pieces_give_the_whole_texts_ids(files, make, seed):
    tok = make(files)
    assert probe_split(tok).exact
    enc = LongTextEncoder(tok, max_chars=0, piece_chars=40)
    texts = [tricky_text(20_000, seed), "short one", tricky_text(3000, seed + 7, glue=[" ", "\n"])]
    whole = tok.tokenize_batch(texts)
    assert len(split_points(texts[0], 40)) > 300  # really split, at many kinds of boundary
    assert enc.tokenize_batch(texts) == whole
    assert enc.tokenize_batch(texts, add_special_tokens=False) == tok.tokenize_batch(texts, add_special_tokens=False)
    flat, lengths = enc.encode_flat(texts, np.int32, eod=tok.eod)
    assert lengths.tolist() == [len(ids) + 1 for ids in whole]
    assert flat.tolist() == [i for ids in whole for i in [*ids, tok.eod]]


def test_post_processor_tokens_are_added_once_around_the_pieces(files, tmp_path):
    from tokenizers import Tokenizer, processors

    backend = Tokenizer.from_file(str(files / "bytelevel.json"))
    eod, pad = backend.token_to_id("<|endoftext|>"), backend.token_to_id("<|padding|>")
    backend.post_processor = processors.TemplateProcessing(
        single="<|padding|> $A <|endoftext|>", special_tokens=[("<|padding|>", pad), ("<|endoftext|>", eod)])
    backend.save(str(tmp_path / "bos.json"))
    tok = build_tokenizer_from("HFTokenizer", str(tmp_path / "bos.json"))
    probe = probe_split(tok)
    assert probe.exact and (probe.prefix, probe.suffix) == ([pad], [eod])
    text = tricky_text(5000, seed=4)
    whole = tok.tokenize_batch([text])
    assert whole[0][0] == pad and whole[0][-1] == eod
    assert LongTextEncoder(tok, 0, piece_chars=50).tokenize_batch([text]) == whole


class Recording:
    """A tokenizer that records the texts of every call (fault injection from outside)."""

    def __init__(self, tok) -> None:
        self.tok, self.name, self.eod, self.calls = tok, tok.name, tok.eod, []

    def tokenize_batch(self, texts, add_special_tokens=None):
        self.calls.append([len(t) for t in texts])
        kwargs = {} if add_special_tokens is None else {"add_special_tokens": add_special_tokens}
        return self.tok.tokenize_batch(texts, **kwargs)


def test_no_call_gets_more_than_pieces_of_bounded_size(files):
    rng = random.Random(5)
    words = ["alpha", "beta", "gamma", "δέλτα", "42", "x,", "(y)"]
    text = "".join(rng.choice(words) + rng.choice([" ", "\n"]) for _ in range(20_000))  # a boundary every <= 7
    tok = Recording(hf(files))
    enc = LongTextEncoder(tok, max_chars=0, piece_chars=500)
    assert enc.probe.exact
    tok.calls.clear()  # the probe's own calls are small texts; count the encoding only
    ids = enc.tokenize_batch([text, "short", text[:900]])
    assert ids == tok.tok.tokenize_batch([text, "short", text[:900]])
    assert max(max(call) for call in tok.calls) <= 500 + 7
    assert max(sum(call) for call in tok.calls) <= PIECES_PER_CALL * (500 + 7)
    assert sum(map(sum, tok.calls)) == len(text) + 5 + 900


def test_texts_over_the_limit(files):
    """A tokenizer that is not split-safe is found out; texts up to the limit are encoded whole;
    a split-safe one refuses only texts without a boundary for the limit."""
    meta = hf(files, "metaspace.json")
    probe = probe_split(meta)
    assert not probe.exact and "changes its tokens" in probe.reason
    enc = LongTextEncoder(meta, max_chars=2000, piece_chars=100)
    text = tricky_text(1500)
    assert enc.too_long(text) is None and enc.plan(text) is None
    assert enc.tokenize_batch([text]) == meta.tokenize_batch([text])
    detail = enc.too_long(tricky_text(2500))
    assert "over the limit of 2,000" in detail and "cannot tokenize it in pieces" in detail
    assert "--max-document-chars" in detail
    assert LongTextEncoder(meta, max_chars=0).too_long(tricky_text(2500)) is None  # no limit
    exact = LongTextEncoder(hf(files), max_chars=2000, piece_chars=100)
    assert exact.too_long(tricky_text(10_000, glue=[" ", "\n"])) is None
    assert "no point to split it at" in exact.too_long("y" * 2001)
    assert "record" in exact.too_long_record(2001) and exact.too_long_record(2000) is None


def test_config_that_breaks_pieces_is_refused(files, tmp_path):
    from tokenizers import AddedToken, Tokenizer

    backend = Tokenizer.from_file(str(files / "bytelevel.json"))
    backend.add_tokens([AddedToken("<mask>", lstrip=True)])  # eats the "\n" before it: "x\n|<mask>"
    backend.save(str(tmp_path / "lstrip.json"))
    assert not probe_split(build_tokenizer_from("HFTokenizer", str(tmp_path / "lstrip.json"))).exact
    backend = Tokenizer.from_file(str(files / "bytelevel.json"))
    backend.enable_truncation(64)
    backend.save(str(tmp_path / "truncate.json"))
    assert probe_split(build_tokenizer_from("HFTokenizer", str(tmp_path / "truncate.json"))).reason == \
        "its tokenizer file sets truncation"


def test_skip_too_long_reports_file_and_line(files):
    enc = LongTextEncoder(hf(files, "metaspace.json"), max_chars=100)
    docs = [Document({"text": "short"}, "a.jsonl", 1), Document({"text": tricky_text(300)}, "a.jsonl", 2),
            Document({"text": "also short"}, "a.jsonl", 3)]
    stats = ReadStats(documents=3)
    kept = list(skip_too_long(docs, lambda d: enc.too_long(d.texts["text"]), stats, strict=False))
    assert [d.line for d in kept] == [1, 3]
    assert stats.skipped[TOO_LONG] == 1 and stats.documents == 2
    with pytest.raises(InputError, match=r"a\.jsonl:2: document too long .*--strict"):
        list(skip_too_long(docs, lambda d: enc.too_long(d.texts["text"]), ReadStats(), strict=True))


def test_pre_tokens_across_a_boundary_are_found_whatever_the_vocabulary(files, tmp_path):
    """A pre-tokenizer that glues a "\\n" to the next word is refused even where the vocabulary
    has no token across the boundary (the ids alone would not show it)."""
    from tokenizers import Regex, Tokenizer, pre_tokenizers

    backend = Tokenizer.from_file(str(files / "bytelevel.json"))
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"\s?\S+|\s+"), "isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    backend.save(str(tmp_path / "glue.json"))
    assert "changes its tokens" in probe_split(build_tokenizer_from("HFTokenizer", str(tmp_path / "glue.json"))).reason


def test_supervised_segments_through_the_encoder_keep_their_ids(files):
    """preprocess_data.py hands the encoder to encode_segments in place of the tokenizer."""
    from megatron_lite.data.sft import encode_segments

    tok = hf(files)
    docs = [[("Q: " + tricky_text(900, 8), False), (tricky_text(2000, 9), True), (None, True)],
            [("short prompt", False), (" short answer", True)]]
    want = encode_segments(tok, docs, np.int32)
    got = encode_segments(LongTextEncoder(tok, max_chars=0, piece_chars=64), docs, np.int32)
    assert all((a == b).all() for a, b in zip(got, want))
