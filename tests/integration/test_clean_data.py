"""tools/clean_data.py as a user runs it: outputs, report, determinism across workers and
executors, bad input, and the hand-off to preprocess_data.py."""

from __future__ import annotations

import importlib.util
import json
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import zstandard

from megatron_lite.data.indexed_dataset import MMapIndexedDataset
from tests.unit.test_curation_filters import bench_module

REPO = Path(__file__).resolve().parents[2]
OUTPUTS = ("cleaned.jsonl.zst", "removed.jsonl.zst", "report.json", "report.html")


def clean(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "tools" / "clean_data.py"), *args],
                          capture_output=True, text=True, timeout=180)


def clean_in_process(capsys, *args: str) -> tuple[int, str]:
    """main() here (no interpreter start-up): for the runs that stop at an error."""
    spec = importlib.util.spec_from_file_location("clean_data", REPO / "tools" / "clean_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    code = module.main(list(args))
    return code, capsys.readouterr().err


def read_zst(path: Path) -> list[dict]:
    data = zstandard.ZstdDecompressor().stream_reader(path.open("rb")).read().decode()
    return [json.loads(line) for line in data.splitlines()]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict:
    """Two .jsonl.zst files and a .txt: prose, an exact and a near duplicate, noise, PII, a bad line."""
    bench = bench_module()
    rng = random.Random(11)
    root = tmp_path_factory.mktemp("corpus")
    prose = [bench.english(rng, 4) for _ in range(12)]
    near, _ = bench.near_copy(rng, prose[2], 0.88)
    pii = bench.english(rng, 4) + "\n\nWrite to jane.roe@example.org or call (212) 555-0187."
    first = [{"id": i, "text": t, "meta": {"source": "news" if i % 2 else "web"}} for i, t in enumerate(prose[:6])]
    second = [{"id": 6, "text": prose[6]}, {"id": "dup", "text": prose[1]}, {"id": "near", "text": near},
              {"id": "lorem", "text": prose[7] + "\n\nLorem ipsum dolor sit amet."}, {"id": "pii", "text": pii},
              *({"id": i, "text": prose[i]} for i in range(8, 11))]
    lines = [json.dumps(r) for r in second]
    lines.insert(3, "{not json")
    (root / "a.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(
        "".join(json.dumps(r) + "\n" for r in first).encode()))
    (root / "b.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(("\n".join(lines) + "\n").encode()))
    (root / "c.txt").write_text(prose[11])
    return {"root": root, "input": f"{root}/*.jsonl.zst,{root}/c.txt", "prose": prose}


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("clean") / "out"
    result = clean("--input", corpus["input"], "--output-dir", str(out))
    assert result.returncode == 0, result.stderr
    assert f"report: {out / 'report.html'}" in result.stdout
    assert "b.jsonl.zst:4: not valid JSON" in result.stderr
    return out


def test_outputs_and_report(reference, corpus):
    assert sorted(p.name for p in reference.iterdir()) == sorted(OUTPUTS)
    kept, removed = read_zst(reference / OUTPUTS[0]), read_zst(reference / OUTPUTS[1])
    report = json.loads((reference / "report.json").read_text())
    by_id = {r.get("id"): r for r in removed}
    assert set(by_id) == {"dup", "near", "lorem"}
    assert (by_id["dup"]["reason"], by_id["near"]["reason"], by_id["lorem"]["reason"]) == \
        ("exact_duplicate", "near_duplicate", "c4")
    assert by_id["dup"]["duplicate_of"].endswith("a.jsonl.zst:2")  # id 1, the second line of a
    assert by_id["near"]["duplicate_of"].endswith("a.jsonl.zst:3") and by_id["near"]["origin"].endswith("b.jsonl.zst:3")
    assert kept[0] == {"id": 0, "text": corpus["prose"][0], "meta": {"source": "web"}}  # every field kept
    pii = next(r for r in kept if r.get("id") == "pii")
    assert "jane.roe" not in pii["text"] and "555-0187" not in pii["text"] and "<EMAIL>" in pii["text"]
    assert kept[-1] == {"text": corpus["prose"][11]}  # the .txt document
    assert (report["input_docs"], report["output_docs"], report["removed"]) == \
        (15, 12, {"c4": 1, "exact_duplicate": 1, "near_duplicate": 1})
    assert report["pii"] == {"email": 1, "phone": 1} and report["skipped"] == {"not valid JSON": 1}
    assert report["stats"]["input"]["documents"] == 15 and report["stats"]["output"]["documents"] == 12
    assert set(report["stats"]["input"]["sources"]) == {"web", "news", "b.jsonl.zst", "c.txt"}
    page = (reference / "report.html").read_text()
    assert page.count("<svg") == 4 and "Examples of removed documents" in page and "exact_duplicate" in page


def test_rerun_workers_and_executor_give_identical_bytes(reference, corpus, tmp_path):
    """Same inputs and config: a re-run, --workers 2 and the datatrove executor (3 tasks on
    2 processes, buckets grouped across tasks) write byte-identical outputs."""
    again = tmp_path / "again"
    shutil.copytree(reference, again)
    for args in (["--force"], ["--workers", "2", "--force"], ["--executor", "local", "--workers", "2", "--force"]):
        result = clean("--input", corpus["input"], "--output-dir", str(again), *args)
        assert result.returncode == 0, result.stderr
        for name in OUTPUTS:
            assert (again / name).read_bytes() == (reference / name).read_bytes(), (args, name)
        assert sorted(p.name for p in again.iterdir()) == sorted(OUTPUTS)  # no temporary or work files left


def test_outputs_feed_preprocess(reference, tmp_path):
    prefix = tmp_path / "clean"
    result = subprocess.run([sys.executable, str(REPO / "tools" / "preprocess_data.py"), "--input",
                             str(reference / OUTPUTS[0]), "--output-prefix", str(prefix), "--tokenizer-type",
                             "CharLevelTokenizer", "--append-eod"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert len(MMapIndexedDataset(str(prefix) + "_text_document")) == 12


def test_bad_input(corpus, tmp_path, capsys):
    out = str(tmp_path / "out")
    code, err = clean_in_process(capsys, "--input", corpus["input"], "--output-dir", out, "--strict")
    assert code == 1 and "b.jsonl.zst:4: not valid JSON" in err and "--strict" in err
    assert not (tmp_path / "out" / OUTPUTS[0]).exists()
    data = (corpus["root"] / "a.jsonl.zst").read_bytes()
    (tmp_path / "cut.jsonl.zst").write_bytes(data[: len(data) // 2])
    code, err = clean_in_process(capsys, "--input", str(tmp_path / "cut.jsonl.zst"), "--output-dir", out, "--force")
    assert code == 1 and "truncated zstd file" in err
    (tmp_path / "empty.jsonl").write_text('{"text": "  "}\n\n')
    code, err = clean_in_process(capsys, "--input", str(tmp_path / "empty.jsonl"), "--output-dir", out, "--force")
    assert code == 1 and "no documents found" in err and "empty document: 1" in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == []  # nothing half-written
    (tmp_path / "out" / "keep.txt").write_text("x")
    code, err = clean_in_process(capsys, "--input", corpus["input"], "--output-dir", out)
    assert code == 1 and "is not empty" in err and "--force" in err
    (tmp_path / "c.yml").write_text("c4:\n  lorem_ipsun: false\n")
    code, err = clean_in_process(capsys, "--input", corpus["input"], "--output-dir", out, "--force",
                                 "--config", str(tmp_path / "c.yml"))
    assert code == 1 and "unknown key 'lorem_ipsun' (closest: lorem_ipsum" in err


def test_token_counts_with_a_tokenizer(reference, corpus, tmp_path, capsys):
    """--tokenizer-type adds tokens to report.json's statistics (per source too), counted in the
    workers on the text each side measures: with the byte-level CharLevelTokenizer, tokens equal
    bytes, before (the original text) and after (the edited text). Nothing else changes."""
    plain = json.loads((reference / "report.json").read_text())
    assert plain["tokenizer"] is None and "tokens" not in plain["stats"]["input"]
    for args in (["--workers", "2"], ["--executor", "local", "--workers", "2"]):
        out = tmp_path / args[1]
        result = clean("--input", corpus["input"], "--output-dir", str(out), "--tokenizer-type", "CharLevelTokenizer",
                       *args)
        assert result.returncode == 0, result.stderr
        report = json.loads((out / "report.json").read_text())
        assert report["tokenizer"] == "CharLevelTokenizer"
        for side in ("input", "output"):
            stats = report["stats"][side]
            assert stats["tokens"] == stats["bytes"] > 0 and stats["length_tokens"]["max"] > 0
            assert all(s["tokens"] == s["bytes"] for s in stats["sources"].values()), side
            assert stats["documents"] == plain["stats"][side]["documents"]
        for name in OUTPUTS[:2]:
            assert (out / name).read_bytes() == (reference / name).read_bytes(), (args, name)
    with pytest.raises(SystemExit):
        clean_in_process(capsys, "--input", corpus["input"], "--output-dir", str(tmp_path / "x"), "--vocab-file", "t.json")
    assert "--vocab-file and --merge-file need --tokenizer-type" in capsys.readouterr().err
