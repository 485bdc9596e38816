"""Corpus statistics: exact merges, shares, token counts, percentiles from fixed bins, and the
tools/corpus_stats.py command line (in-process)."""

from __future__ import annotations

import importlib.util
import json
import pickle
import random
import sys

import numpy as np
import pytest

from megatron_lite.curation.stats import EDGES, OTHER, CorpusStats, LengthHistogram, field_value
from megatron_lite.tokenizer import CharLevelTokenizer, build_tokenizer_from
from tests.conftest import REPO


def corpus(n: int = 300) -> list[tuple[dict, str]]:
    rng = random.Random(0)
    docs = []
    for i in range(n):
        text = " ".join(rng.choice(["data", "ünï", "token", "x", "🙂"]) for _ in range(rng.randint(1, 400)))
        record = {"text": text, "meta": {"source": rng.choice(["web", "books", "code"])}} if i % 5 else {"text": text}
        if i % 3:
            record["lang"] = rng.choice(["en", "de"])
        docs.append((record, text))
    return docs


def stats_of(docs, tokenizer=None, **kwargs) -> CorpusStats:
    stats = CorpusStats(tokenizer, **kwargs)
    for record, text in docs:
        stats.add(record, text, "fallback.jsonl")
    return stats


def test_merge_of_partials_equals_the_whole():
    docs = corpus()
    whole = stats_of(docs, CharLevelTokenizer())
    # Workers send their partial stats back pickled (without the tokenizer), the parent merges.
    parts = [pickle.loads(pickle.dumps(stats_of(docs[i::3], CharLevelTokenizer()))) for i in range(3)]
    assert all(p.tokenizer is None for p in parts)
    merged = parts[0]
    for part in parts[1:]:
        merged.merge(part)
    assert merged.to_dict() == whole.to_dict()
    assert merged.to_dict()["documents"] == 300
    with pytest.raises(ValueError, match="with and without token counts"):
        merged.merge(CorpusStats())


def test_shares_sum_to_one_and_sources_fall_back():
    out = stats_of(corpus(), CharLevelTokenizer()).to_dict()
    assert set(out["sources"]) == {"web", "books", "code", "fallback.jsonl"}
    assert out["sources"]["fallback.jsonl"]["documents"] == 60  # every fifth record has no source
    for section in ("sources", "languages"):
        for field in ("documents", "bytes", "characters", "tokens"):
            assert sum(e["share"][field] for e in out[section].values()) == pytest.approx(1.0)
            assert sum(e[field] for e in out[section].values()) == out[field]
    assert set(out["languages"]) == {"en", "de", "(none)"}
    assert "languages" not in stats_of([({}, "no language")]).to_dict()
    assert stats_of([({"meta": {"source": "s"}}, "t")], source_field=None).to_dict()["sources"] == \
        stats_of([({}, "t")]).to_dict()["sources"]


def test_tokens_with_a_tokenizer(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"<|endoftext|>": 0, "[UNK]": 1, "hello": 2, "world": 3}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(tmp_path / "words.json"))
    words = build_tokenizer_from("HFTokenizer", str(tmp_path / "words.json"))
    out = stats_of([({}, "hello world"), ({}, "hello brave new world !")], words).to_dict()
    assert out["tokens"] == 7 and out["length_tokens"]["max"] == 5
    text = "ünï 🙂"
    assert stats_of([({}, text)], CharLevelTokenizer()).to_dict()["tokens"] == len(text.encode())
    assert "tokens" not in stats_of([({}, text)]).to_dict()


def test_percentiles_from_fixed_bins():
    hist = LengthHistogram()
    lengths = [int(x) for x in np.random.default_rng(0).lognormal(7, 2, 5000)]
    for length in lengths:
        hist.add(length)
    for p in (5, 25, 50, 75, 95, 99):
        true = int(np.percentile(lengths, p, method="inverted_cdf"))  # nearest rank
        assert abs(hist.percentile(p) - true) <= 0.091 * true + 1, p
    small = LengthHistogram()
    for length in (0, 1, 2, 3, 5, 8, 11):  # one bin per integer: exact
        small.add(length)
    assert [small.percentile(p) for p in (5, 50, 99)] == [0, 3, 11]
    assert sum(b["documents"] for b in hist.histogram()) == 5000
    assert all(b["to"] == 2 * b["from"] for b in hist.histogram() if b["from"])
    assert EDGES[:12] == tuple(range(12)) and len(EDGES) < 400


def test_names_are_bounded_and_fields_dotted():
    stats = CorpusStats(max_names=2)
    for source in ("a", "b", "c", "d", "a"):
        stats.add({}, "text", source)
    assert {k: e["documents"] for k, e in stats.to_dict()["sources"].items()} == {OTHER: 2, "a": 2, "b": 1}
    merged = CorpusStats(max_names=2)
    for source in ("c", "c", "d"):
        merged.add({}, "text", source)
    merged.merge(stats)  # the two largest names stay, the rest are folded
    assert {k: e["documents"] for k, e in merged.to_dict()["sources"].items()} == {OTHER: 4, "a": 2, "c": 2}
    assert field_value({"meta": {"source": "s"}}, "meta.source") == "s"
    assert field_value({"meta.source": "flat"}, "meta.source") == "flat"
    assert field_value({"meta": "str"}, "meta.source") is None


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location("corpus_stats", REPO / "tools" / "corpus_stats.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["corpus_stats"] = module  # --workers pickles its functions by module name
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("corpus_stats", None)


@pytest.fixture
def inputs(tmp_path):
    import zstandard

    lines = [json.dumps({"text": "a" * n, "meta": {"source": src}, "lang": "en"})
             for n, src in ((10, "web"), (20, "web"), (30, "books"))]
    (tmp_path / "a.jsonl").write_text("\n".join([*lines, "not json", json.dumps({"text": " "})]) + "\n")
    (tmp_path / "b.txt").write_text("a plain text file\n")
    data = zstandard.ZstdCompressor().compress((json.dumps({"text": "zst doc"}) + "\n").encode())
    (tmp_path / "c.jsonl.zst").write_bytes(data)
    (tmp_path / "cut.jsonl.zst").write_bytes(data[:-4])
    return tmp_path


def test_cli_writes_json_and_summary(tool, inputs, capsys):
    out = inputs / "stats.json"
    files = f"{inputs}/a.jsonl,{inputs}/b.txt,{inputs}/c.jsonl.zst"
    assert tool.main(["--input", files, "--tokenizer-type", "CharLevelTokenizer", "--output", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert "documents: 5" in stdout and "web: 2 (40.0%)" in stdout and f"wrote {out}" in stdout
    assert "skipped: empty document: 1, not valid JSON: 1" in stdout
    stats = json.loads(out.read_text())
    assert stats["tokens"] == stats["bytes"] == 10 + 20 + 30 + len("a plain text file\n") + 7
    assert set(stats["sources"]) == {"web", "books", f"{inputs}/b.txt", f"{inputs}/c.jsonl.zst"}
    assert stats["languages"]["en"]["documents"] == 3
    assert tool.main(["--input", files, "--workers", "2", "--batch-size", "1", "--tokenizer-type",
                      "CharLevelTokenizer", "--output", str(inputs / "w2.json")]) == 0
    assert json.loads((inputs / "w2.json").read_text()) == stats


@pytest.mark.parametrize("name, message", [
    ("missing.jsonl", "input file not found"),
    ("cut.jsonl.zst", "truncated zstd file"),
    ("empty.jsonl", "no documents found"),
])
def test_cli_bad_input_is_one_error_line(tool, inputs, capsys, name, message):
    (inputs / "empty.jsonl").write_text('{"text": ""}\n')
    assert tool.main(["--input", str(inputs / name), "--output", str(inputs / "s.json")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("corpus_stats.py: error: ") and message in err[-1]
    assert not (inputs / "s.json").exists()
