"""tools/preprocess_data.py and friends as a user runs them: round trips, bad inputs, outputs."""

from __future__ import annotations

import gzip
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zstandard

from megatron_lite.data.indexed_dataset import MMapIndexedDataset
from megatron_lite.tokenizer import build_tokenizer_from

REPO = Path(__file__).resolve().parents[2]
TEXTS = [
    "The quick brown fox jumps over the lazy dog.\nSecond line.",
    "ünïcödé ✓ text, with «quotes» and emoji 🙂",
    "def f(x):\n    return x * 2\n",
    "A fourth document, plain ASCII and somewhat longer than the others " * 3,
]


def tools_on_path() -> dict[str, str]:
    """The environment for a child that imports tools/preprocess_data.py (a script) by name."""
    return {**os.environ, "PYTHONPATH": str(REPO / "tools")}


def tool(name: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "tools" / name), *args],
                          capture_output=True, text=True, timeout=120, cwd=cwd)


def write_jsonl(path: Path, records: list, compress: str = "") -> Path:
    data = "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records).encode()
    if compress == "zst":
        path.write_bytes(zstandard.ZstdCompressor().compress(data))
    elif compress == "gz":
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


@pytest.fixture(scope="module")
def tokenizer_files(tmp_path_factory) -> dict:
    """A tokenizers JSON and GPT-2 style vocab.json/merges.txt trained here on tiny text."""
    from tokenizers import ByteLevelBPETokenizer

    root = tmp_path_factory.mktemp("tok")
    tok = ByteLevelBPETokenizer()
    tok.train_from_iterator(TEXTS * 20, vocab_size=400, special_tokens=["<|endoftext|>", "<|padding|>"])
    tok.save(str(root / "tokenizer.json"))
    tok.save_model(str(root))
    return {"json": str(root / "tokenizer.json"), "vocab": str(root / "vocab.json"), "merges": str(root / "merges.txt")}


def tok_args(kind: str, files: dict) -> list[str]:
    if kind == "HFTokenizer":
        return ["--tokenizer-type", kind, "--vocab-file", files["json"]]
    if kind in ("GPT2BPETokenizer", "HFGPT2Tokenizer"):
        return ["--tokenizer-type", kind, "--vocab-file", files["vocab"], "--merge-file", files["merges"]]
    return ["--tokenizer-type", kind]


@pytest.mark.parametrize("kind", ["HFTokenizer", "GPT2BPETokenizer", "HFGPT2Tokenizer", "CharLevelTokenizer"])
@pytest.mark.parametrize("compress", ["", "zst", "gz"])
def test_round_trip_every_tokenizer(tmp_path, tokenizer_files, kind, compress):
    suffix = {"": ".jsonl", "zst": ".jsonl.zst", "gz": ".jsonl.gz"}[compress]
    src = write_jsonl(tmp_path / f"in{suffix}", [{"text": t} for t in TEXTS], compress)
    out = tmp_path / "out"
    result = tool("preprocess_data.py", "--input", str(src), "--output-prefix", str(out),
                  "--append-eod", *tok_args(kind, tokenizer_files))
    assert result.returncode == 0, result.stderr
    assert "documents: 4" in result.stdout
    ds = MMapIndexedDataset(f"{out}_text_document")
    tok = build_tokenizer_from(kind, tokenizer_files.get("json" if kind == "HFTokenizer" else "vocab"),
                               tokenizer_files["merges"])
    assert ds.num_documents == len(TEXTS)
    for i, text in enumerate(TEXTS):
        ids = ds[i].tolist()
        assert ids[-1] == tok.eod
        assert tok.detokenize(ids[:-1]) == text


def test_sentencepiece_and_tiktoken_files(tmp_path):
    """SPMTokenizer (a SentencePiece model trained here) and TiktokenTokenizer (a rank file
    written here) write .bin/.idx of the library's ids; with 2 workers too. A model file that does
    not parse is one line and exit 1."""
    import base64

    import sentencepiece

    (tmp_path / "corpus.txt").write_text("\n".join(TEXTS * 50))
    sentencepiece.SentencePieceTrainer.train(
        input=str(tmp_path / "corpus.txt"), model_prefix=str(tmp_path / "spm"), vocab_size=80,
        hard_vocab_limit=False, user_defined_symbols=["<|endoftext|>"], minloglevel=2)
    ranks = [bytes([i]) for i in range(256)] + [b"th", b"he", b"the", b" the", b"in", b"ing"]
    (tmp_path / "tiny.tiktoken").write_bytes(b"".join(base64.b64encode(t) + b" %d\n" % i
                                                      for i, t in enumerate(ranks)))
    src = write_jsonl(tmp_path / "in.jsonl", [{"text": t} for t in TEXTS * 3])
    for kind, vocab in (("SPMTokenizer", "spm.model"), ("TiktokenTokenizer", "tiny.tiktoken")):
        tok = build_tokenizer_from(kind, str(tmp_path / vocab))
        for workers in ("1", "2"):
            out = tmp_path / f"out_{kind}_{workers}"
            result = tool("preprocess_data.py", "--input", str(src), "--output-prefix", str(out), "--append-eod",
                          "--tokenizer-type", kind, "--vocab-file", str(tmp_path / vocab), "--workers", workers,
                          "--batch-size", "5")
            assert result.returncode == 0, result.stderr
            ds = MMapIndexedDataset(f"{out}_text_document")
            assert [ds[i].tolist() for i in range(ds.num_documents)] == [
                tok.tokenize(t) + [tok.eod] for t in TEXTS * 3]
    (tmp_path / "junk.model").write_bytes(b"junk")
    bad = tool("preprocess_data.py", "--input", str(src), "--output-prefix", str(tmp_path / "out_bad"),
               "--tokenizer-type", "SPMTokenizer", "--vocab-file", str(tmp_path / "junk.model"))
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines()[-1].startswith("preprocess_data.py: error: vocab_file: ")
    assert "junk.model is not a SentencePiece model" in bad.stderr
    assert not list(tmp_path.glob("out_bad*"))


def test_two_keys_two_outputs_and_workers_give_identical_bytes(tmp_path, tokenizer_files):
    src = write_jsonl(tmp_path / "in.jsonl", [{"text": t, "title": t[:10]} for t in TEXTS * 30])
    outs = []
    for workers in ("1", "2"):
        out = tmp_path / f"w{workers}"
        result = tool("preprocess_data.py", "--input", str(src), "--output-prefix", str(out),
                      "--jsonl-keys", "text", "title", "--workers", workers, "--batch-size", "7",
                      *tok_args("HFTokenizer", tokenizer_files))
        assert result.returncode == 0, result.stderr
        outs.append(out)
    for key in ("text", "title"):
        for ext in (".bin", ".idx"):
            a = Path(f"{outs[0]}_{key}_document{ext}").read_bytes()
            assert a == Path(f"{outs[1]}_{key}_document{ext}").read_bytes()
    assert MMapIndexedDataset(f"{outs[0]}_title_document").num_documents == 120


def test_idx_bytes_field_by_field(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", [{"text": "ab"}, {"text": "cde"}])
    out = tmp_path / "o"
    assert tool("preprocess_data.py", "--input", str(src), "--output-prefix", str(out),
                "--tokenizer-type", "CharLevelTokenizer", "--append-eod").returncode == 0
    idx = Path(f"{out}_text_document.idx").read_bytes()
    assert idx[:9] == b"MMIDIDX\x00\x00"
    version, code, count, doc_count = struct.unpack("<QBQQ", idx[9:34])
    assert (version, code, count, doc_count) == (1, 8, 2, 3)  # uint16 (vocab 512 < 65500)
    sizes = struct.unpack("<2i", idx[34:42])
    pointers = struct.unpack("<2q", idx[42:58])
    doc_idx = struct.unpack("<3q", idx[58:82])
    assert sizes == (3, 4) and pointers == (0, 6) and doc_idx == (0, 1, 2)
    assert len(idx) == 82
    tokens = np.frombuffer(Path(f"{out}_text_document.bin").read_bytes(), dtype="<u2")
    assert tokens.tolist() == [97, 98, 0, 99, 100, 101, 0]


def leftovers(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("out"))


@pytest.mark.parametrize("bad, reason", [
    ("{not json", "not valid JSON"),
    (json.dumps({"body": "x"}), "missing key 'text'"),
])
def test_bad_lines_are_counted_with_file_and_line_or_fatal_with_strict(tmp_path, bad, reason):
    src = write_jsonl(tmp_path / "in.jsonl", [{"text": "good one"}, bad, {"text": ""}, {"text": "good two"}])
    result = tool("preprocess_data.py", "--input", str(src), "--output-prefix", str(tmp_path / "out"),
                  "--tokenizer-type", "CharLevelTokenizer")
    assert result.returncode == 0, result.stderr
    assert f"in.jsonl:2: {reason}" in result.stderr
    assert "documents: 2" in result.stdout and "empty document: 1" in result.stdout
    strict = tool("preprocess_data.py", "--input", str(src), "--output-prefix", str(tmp_path / "out2"),
                  "--tokenizer-type", "CharLevelTokenizer", "--strict")
    assert strict.returncode == 1
    assert f"in.jsonl:2: {reason}" in strict.stderr and "Traceback" not in strict.stderr
    assert not list(tmp_path.glob("out2*"))


def test_invalid_utf8_line(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_bytes(b'{"text": "ok"}\n{"text": "\xff\xfe bad"}\n')
    result = tool("preprocess_data.py", "--input", str(src), "--output-prefix", str(tmp_path / "out"),
                  "--tokenizer-type", "CharLevelTokenizer")
    assert result.returncode == 0 and "in.jsonl:2: not valid UTF-8" in result.stderr


@pytest.mark.parametrize("case", ["missing", "truncated_zst", "truncated_gz", "no_documents"])
def test_fatal_inputs_exit_nonzero_and_leave_nothing(tmp_path, case):
    if case == "missing":
        src, expected = tmp_path / "absent.jsonl", "input file not found"
    elif case == "truncated_zst":
        full = write_jsonl(tmp_path / "full.jsonl.zst", [{"text": t * 50} for t in TEXTS], "zst")
        src = tmp_path / "cut.jsonl.zst"
        src.write_bytes(full.read_bytes()[:-20])
        expected = "truncated zstd file"
    elif case == "truncated_gz":
        full = write_jsonl(tmp_path / "full.jsonl.gz", [{"text": t * 50} for t in TEXTS], "gz")
        src = tmp_path / "cut.jsonl.gz"
        src.write_bytes(full.read_bytes()[:-20])
        expected = "truncated or corrupt"
    else:
        src, expected = write_jsonl(tmp_path / "empty.jsonl", [{"text": ""}, {"other": 1}]), "no documents"
    result = tool("preprocess_data.py", "--input", str(src), "--output-prefix", str(tmp_path / "out"),
                  "--tokenizer-type", "CharLevelTokenizer")
    assert result.returncode == 1
    assert expected in result.stderr and "Traceback" not in result.stderr
    assert leftovers(tmp_path) == []


def test_txt_inputs_globs_and_num_docs(tmp_path):
    (tmp_path / "a.txt").write_text("first file\n\nsecond block")
    (tmp_path / "b.txt").write_text("another file")
    result = tool("preprocess_data.py", "--input", str(tmp_path / "*.txt"), "--output-prefix",
                  str(tmp_path / "out"), "--tokenizer-type", "CharLevelTokenizer", "--txt-blocks")
    assert result.returncode == 0, result.stderr
    ds = MMapIndexedDataset(str(tmp_path / "out_text_document"))
    tok = build_tokenizer_from("CharLevelTokenizer")
    assert [tok.detokenize(ds[i].tolist()) for i in range(3)] == ["first file", "second block", "another file"]
    limited = tool("preprocess_data.py", "--input", f"{tmp_path}/a.txt,{tmp_path}/b.txt", "--output-prefix",
                   str(tmp_path / "lim"), "--tokenizer-type", "CharLevelTokenizer", "--num-docs", "1")
    assert limited.returncode == 0 and "documents: 1" in limited.stdout


def test_train_tokenizer_merge_inspect_and_sample_corpus(tmp_path):
    corpus = tmp_path / "corpus.jsonl.zst"
    made = tool("make_sample_corpus.py", "--output", str(corpus), "--max-docs", "12")
    assert made.returncode == 0, made.stderr
    lines = zstandard.ZstdDecompressor().decompress(corpus.read_bytes(), max_output_size=1 << 30).splitlines()
    assert len(lines) == 12 and all("module" in json.loads(x)["meta"] for x in lines)
    trained = tool("train_tokenizer.py", "--input", str(corpus), "--vocab-size", "600",
                   "--output", str(tmp_path / "tok.json"))
    assert trained.returncode == 0, trained.stderr
    tok = build_tokenizer_from("HFTokenizer", str(tmp_path / "tok.json"))
    assert tok.vocab_size == 600 and tok.eod == 0 and tok.pad == 1
    text = json.loads(lines[0])["text"]
    assert tok.detokenize(tok.tokenize(text)) == text
    for name in ("a", "b"):
        src = write_jsonl(tmp_path / f"{name}.jsonl", [{"text": f"{name} {t}"} for t in TEXTS])
        assert tool("preprocess_data.py", "--input", str(src), "--output-prefix", str(tmp_path / name),
                    "--tokenizer-type", "HFTokenizer", "--vocab-file", str(tmp_path / "tok.json")).returncode == 0
    merged = tool("merge_datasets.py", "--input", str(tmp_path / "a_text_document"),
                  str(tmp_path / "b_text_document"), "--output-prefix", str(tmp_path / "ab"))
    assert merged.returncode == 0, merged.stderr
    ab = MMapIndexedDataset(str(tmp_path / "ab"))
    a, b = MMapIndexedDataset(str(tmp_path / "a_text_document")), MMapIndexedDataset(str(tmp_path / "b_text_document"))
    assert ab.num_documents == 8 and ab[4].tolist() == b[0].tolist() and ab[3].tolist() == a[3].tolist()
    shown = tool("inspect_dataset.py", str(tmp_path / "ab"), "--tokenizer-type", "HFTokenizer",
                 "--vocab-file", str(tmp_path / "tok.json"))
    assert shown.returncode == 0 and "documents: 8" in shown.stdout and "decoded: 'a The quick" in shown.stdout
    assert tool("inspect_dataset.py", str(tmp_path / "nope")).returncode == 1


def run_pp(tmp_path: Path, src, *extra: str, prefix: str = "out") -> subprocess.CompletedProcess:
    return tool("preprocess_data.py", "--input", str(src), "--output-prefix", str(tmp_path / prefix),
                "--tokenizer-type", "CharLevelTokenizer", *extra)


def test_corrupt_zst_and_strict_utf8_and_bad_settings(tmp_path, tokenizer_files):
    full = zstandard.ZstdCompressor().compress(b'{"text": "abc"}\n' * 2000)
    bad = tmp_path / "bad.jsonl.zst"
    bad.write_bytes(full[:12] + b"\xff" * 40 + full[52:])
    result = run_pp(tmp_path, bad)
    assert result.returncode == 1 and "bad.jsonl.zst: " in result.stderr and "Traceback" not in result.stderr
    utf8 = tmp_path / "u.jsonl"
    utf8.write_bytes(b'{"text": "ok"}\n{"text": "\xff"}\n')
    strict = run_pp(tmp_path, utf8, "--strict")
    assert strict.returncode == 1 and "u.jsonl:2: not valid UTF-8" in strict.stderr
    missing_vocab = tool("preprocess_data.py", "--input", str(utf8), "--output-prefix", str(tmp_path / "out"),
                         "--tokenizer-type", "HFTokenizer", "--vocab-file", str(tmp_path / "absent.json"))
    assert missing_vocab.returncode == 1 and "absent.json not found" in missing_vocab.stderr
    assert "Traceback" not in missing_vocab.stderr
    unknown = run_pp(tmp_path, utf8, "--dataset-impl", "cached")
    assert unknown.returncode == 2 and "invalid choice: 'cached'" in unknown.stderr
    wrong_type = tool("preprocess_data.py", "--input", str(utf8), "--output-prefix", str(tmp_path / "out"),
                      "--tokenizer-type", "Tiktoken")
    assert wrong_type.returncode == 2 and "'Tiktoken' is not one of HFTokenizer" in wrong_type.stderr
    assert leftovers(tmp_path) == []


def test_error_with_workers_leaves_nothing_and_does_not_hang(tmp_path):
    records = [{"text": f"document {i}"} for i in range(3000)]
    records[2500] = "{oops"
    src = write_jsonl(tmp_path / "in.jsonl", records)
    result = run_pp(tmp_path, src, "--workers", "2", "--batch-size", "16", "--strict")
    assert result.returncode == 1 and "in.jsonl:2501: not valid JSON" in result.stderr
    assert leftovers(tmp_path) == []


def test_progress_lines_summary_and_help(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", [{"text": f"doc {i}"} for i in range(50)])
    result = run_pp(tmp_path, src, "--log-interval", "20", "--batch-size", "10", "--append-eod")
    assert result.returncode == 0, result.stderr
    assert "20 documents (" in result.stderr and "40 documents (" in result.stderr  # not a terminal
    assert "MB/s" in result.stderr and "tokens/s" in result.stderr
    assert "documents: 50  tokens: 340" in result.stdout and "skipped: nothing" in result.stdout
    helped = tool("preprocess_data.py", "--help")
    words = " ".join(helped.stdout.split())  # argparse wraps lines
    assert "one document per blank-line-separated block (default: per file)" in words and "--strict" in words


def test_ftfy_and_case_insensitive_type(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", [{"text": "sch\u00c3\u00b6n"}])  # "schön" as mojibake
    result = tool("preprocess_data.py", "--input", str(src), "--output-prefix", str(tmp_path / "out"),
                  "--tokenizer-type", "charleveltokenizer", "--ftfy")
    assert result.returncode == 0, result.stderr
    ds = MMapIndexedDataset(str(tmp_path / "out_text_document"))
    assert build_tokenizer_from("CharLevelTokenizer").detokenize(ds[0].tolist()) == "schön"


def test_train_tokenizer_errors_and_merge_mismatch(tmp_path):
    empty = write_jsonl(tmp_path / "e.jsonl", [{"text": " "}, "{bad"])
    result = tool("train_tokenizer.py", "--input", str(empty), "--vocab-size", "300",
                  "--output", str(tmp_path / "t.json"))
    assert result.returncode == 1 and "no documents found" in result.stderr
    assert not list(tmp_path.glob("t.json*"))
    for name, kind in (("a", "CharLevelTokenizer"), ("b", "CharLevelTokenizer")):
        src = write_jsonl(tmp_path / f"{name}.jsonl", [{"text": name}])
        assert tool("preprocess_data.py", "--input", str(src), "--output-prefix", str(tmp_path / name),
                    "--tokenizer-type", kind).returncode == 0
    from megatron_lite.data.indexed_dataset import MMapIndexedDatasetBuilder

    builder = MMapIndexedDatasetBuilder(str(tmp_path / "wide.bin"), np.int32)
    builder.add_item([1, 2])
    builder.end_document()
    builder.finalize(str(tmp_path / "wide.idx"))
    merged = tool("merge_datasets.py", "--input", str(tmp_path / "a_text_document"), str(tmp_path / "wide"),
                  "--output-prefix", str(tmp_path / "m"))
    assert merged.returncode == 1 and "dtype int32 differs from uint16" in merged.stderr
    assert not list(tmp_path.glob("m.*"))


def test_sample_corpus_leaves_out_tests_and_site_packages():
    import importlib.util
    import sysconfig

    spec = importlib.util.spec_from_file_location("make_sample_corpus", REPO / "tools" / "make_sample_corpus.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    found = module.stdlib_modules(sysconfig.get_paths()["stdlib"])
    names = [name for name, _ in found]
    assert "json.decoder" in names and "collections" in names and len(names) > 300
    assert not [n for n in names if "test" in n.split(".") or "tests" in n.split(".") or "site-packages" in n]
    assert not [p for _, p in found if "site-packages" in p]


def test_killed_mid_run_leaves_no_valid_looking_output(tmp_path):
    """SIGKILL after some documents were written: only *.tmp files remain, no .bin/.idx."""
    src = write_jsonl(tmp_path / "in.jsonl", [{"text": f"document number {i}"} for i in range(400)])
    script = f"""
import os, signal
import preprocess_data

real = preprocess_data.iter_documents
def dying(*args, **kwargs):
    for n, doc in enumerate(real(*args, **kwargs)):
        if n == 300:
            os.kill(os.getpid(), signal.SIGKILL)
        yield doc
preprocess_data.iter_documents = dying
preprocess_data.main(["--input", {str(src)!r}, "--output-prefix", {str(tmp_path / 'out')!r},
                      "--tokenizer-type", "CharLevelTokenizer", "--batch-size", "8"])
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                            env=tools_on_path())
    assert result.returncode == -9
    left = leftovers(tmp_path)
    assert left and all(name.endswith(".tmp") for name in left), left
    written = [p for p in tmp_path.glob("out_text_document.bin.*.tmp") if ".sizes." not in p.name
               and ".docs." not in p.name]  # the data file under its unique temporary name
    assert len(written) == 1 and written[0].stat().st_size > 0  # it had written tokens


def test_ctrl_c_with_workers_is_one_line_and_leaves_nothing(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", [{"text": f"document number {i}"} for i in range(400)])
    script = f"""
import os, signal, sys, time
import preprocess_data

real = preprocess_data.iter_documents
def interrupted(*args, **kwargs):
    for n, doc in enumerate(real(*args, **kwargs)):
        if n == 300:
            os.killpg(os.getpgid(0), signal.SIGINT)  # like Ctrl-C: parent and workers
            time.sleep(0.5)
        yield doc
preprocess_data.iter_documents = interrupted
sys.exit(preprocess_data.main(["--input", {str(src)!r}, "--output-prefix", {str(tmp_path / 'out')!r},
                               "--tokenizer-type", "CharLevelTokenizer", "--batch-size", "8", "--workers", "2"]))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                            env=tools_on_path(), start_new_session=True)
    assert result.returncode == 130, result.stderr
    assert "interrupted; no output written" in result.stderr and "Traceback" not in result.stderr
    assert leftovers(tmp_path) == []


def test_long_documents_split_exactly_or_skipped_over_the_limit(tmp_path, tokenizer_files):
    """--max-document-chars 100: longer documents are tokenized in pieces with the ids of one call
    (a byte-level BPE splits exactly); one without a line break or space to split at is skipped
    and reported by file:line, and --strict makes it fatal."""
    texts = [*TEXTS, "word, then 42 more words\nand lines " * 12, "y" * 300, "last one"]
    src = write_jsonl(tmp_path / "in.jsonl", [{"text": t} for t in texts])
    result = tool("preprocess_data.py", "--input", str(src), "--output-prefix", str(tmp_path / "out"),
                  "--max-document-chars", "100", "--workers", "2", *tok_args("HFTokenizer", tokenizer_files))
    assert result.returncode == 0, result.stderr
    assert "in.jsonl:6: document too long (300 characters, over the limit of 100" in result.stderr
    assert "skipped: document too long: 1" in result.stdout
    tok = build_tokenizer_from("HFTokenizer", tokenizer_files["json"])
    ds = MMapIndexedDataset(f"{tmp_path / 'out'}_text_document")
    kept = texts[:5] + texts[6:]
    assert [ds[i].tolist() for i in range(ds.num_documents)] == [tok.tokenize(t) for t in kept]
    strict = tool("preprocess_data.py", "--input", str(src), "--output-prefix", str(tmp_path / "strict"),
                  "--max-document-chars", "100", "--strict", *tok_args("HFTokenizer", tokenizer_files))
    assert strict.returncode == 1 and "--max-document-chars raises the limit" in strict.stderr
    assert not list(tmp_path.glob("strict*"))
