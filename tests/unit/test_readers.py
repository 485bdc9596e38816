"""Streaming readers: formats, file:line of documents and bad lines, strict mode, truncation."""

from __future__ import annotations

import gzip
import json
import logging

import pytest
import zstandard

from megatron_lite.data.readers import (
    EMPTY,
    MISSING_KEY,
    NOT_JSON,
    NOT_UTF8,
    InputError,
    ReadStats,
    binary_lines,
    expand_inputs,
    iter_documents,
    iter_texts,
)

LINES = [b'{"text": "one", "title": "t1"}', b"", b"{broken", b'{"title": "no text"}',
         b'{"text": "\xff\xfe"}', b'{"text": "   "}', b'{"text": 5}', b"[1, 2]", b'{"text": "two\\nlines"}']


def write(path, data: bytes, compress: str = ""):
    if compress == "zst":
        data = zstandard.ZstdCompressor().compress(data)
    elif compress == "gz":
        data = gzip.compress(data)
    path.write_bytes(data)
    return str(path)


@pytest.mark.parametrize("compress", ["", "zst", "gz"])
def test_jsonl_documents_lines_and_skip_reasons(tmp_path, compress, caplog):
    path = write(tmp_path / ("in.jsonl" + (f".{compress}" if compress else "")), b"\n".join(LINES), compress)
    stats = ReadStats()
    logger = logging.getLogger("megatron_lite.data.readers")
    logger.addHandler(caplog.handler)  # the megatron_lite tree may not propagate to the root
    try:
        docs = list(iter_documents([path], ["text"], stats))
    finally:
        logger.removeHandler(caplog.handler)
    assert [(d.texts["text"], d.line) for d in docs] == [("one", 1), ("two\nlines", 9)]
    assert all(d.path == path for d in docs) and stats.documents == 2
    assert stats.skipped == {NOT_JSON: 2, MISSING_KEY: 2, NOT_UTF8: 1, EMPTY: 1}
    messages = [r.getMessage() for r in caplog.records]
    for lineno, reason in [(3, NOT_JSON), (4, "missing key 'text'"), (5, NOT_UTF8), (6, EMPTY),
                           (7, "missing key 'text' (a int, not a string)"), (8, NOT_JSON)]:
        assert any(m.startswith(f"{path}:{lineno}: {reason}") for m in messages), (lineno, messages)
    assert stats.bytes == sum(len(line) + 1 for line in LINES)


def test_several_keys_and_strict(tmp_path):
    path = write(tmp_path / "in.jsonl", b"\n".join(LINES))
    docs = list(iter_documents([path], ["text", "title"], ReadStats()))
    assert [d.texts for d in docs] == [{"text": "one", "title": "t1"}]
    with pytest.raises(InputError, match=rf"in.jsonl:3: {NOT_JSON}.*--strict"):
        list(iter_documents([path], ["text"], ReadStats(), strict=True))
    # Empty documents are skipped even under --strict: they are not malformed.
    ok = write(tmp_path / "ok.jsonl", b'{"text": ""}\n{"text": "x"}\n')
    assert [d.texts["text"] for d in iter_documents([ok], ["text"], ReadStats(), strict=True)] == ["x"]


def test_txt_whole_file_and_blocks(tmp_path):
    text = "para one\nstill one\n\n \n\npara two\n\xe9t\xe9\n"
    path = write(tmp_path / "a.txt", text.encode())
    whole = list(iter_documents([path], ["text"], ReadStats()))
    assert len(whole) == 1 and whole[0].texts["text"] == text  # exactly the file's text
    blocks = list(iter_documents([path], ["text"], ReadStats(), txt_blocks=True))
    assert [(d.texts["text"], d.line) for d in blocks] == [("para one\nstill one", 1), ("para two\nété", 6)]
    zst = write(tmp_path / "a.txt.zst", text.encode(), "zst")
    assert [d.texts["text"] for d in iter_documents([zst], ["text"], ReadStats())] == [text]


def test_txt_bad_utf8_names_the_line(tmp_path):
    path = write(tmp_path / "b.txt", b"good\n\nfine\nbad \xff here\n\nlast")
    stats = ReadStats()
    docs = list(iter_documents([path], ["text"], stats, txt_blocks=True))
    assert [d.texts["text"] for d in docs] == ["good", "last"] and stats.skipped == {NOT_UTF8: 1}
    with pytest.raises(InputError, match=r"b.txt:4: not valid UTF-8"):
        list(iter_documents([path], ["text"], ReadStats(), strict=True))


def test_zst_truncated_corrupt_and_multi_frame(tmp_path):
    payload = b"".join(json.dumps({"text": f"doc {i} " * 40}).encode() + b"\n" for i in range(50))
    full = zstandard.ZstdCompressor().compress(payload)
    (tmp_path / "cut.jsonl.zst").write_bytes(full[:-10])
    with pytest.raises(InputError, match="cut.jsonl.zst: truncated zstd file"):
        list(iter_documents([str(tmp_path / "cut.jsonl.zst")], ["text"], ReadStats()))
    (tmp_path / "bad.jsonl.zst").write_bytes(full[:20] + b"\x00" * 50 + full[70:])
    with pytest.raises(InputError, match="bad.jsonl.zst: (corrupt|truncated)"):
        list(iter_documents([str(tmp_path / "bad.jsonl.zst")], ["text"], ReadStats()))
    # Two concatenated frames (as `cat a.zst b.zst` makes) are one valid stream.
    (tmp_path / "two.jsonl.zst").write_bytes(full + full)
    assert len(list(iter_documents([str(tmp_path / "two.jsonl.zst")], ["text"], ReadStats()))) == 100


def test_long_lines_across_chunks(tmp_path):
    line = json.dumps({"text": "x" * 3_000_000}).encode()
    path = write(tmp_path / "long.jsonl.zst", line + b"\n" + line, "zst")
    assert [len(raw) for raw in binary_lines(path)] == [len(line)] * 2


def test_truncated_gz(tmp_path):
    data = gzip.compress(b'{"text": "abc"}\n' * 1000)
    (tmp_path / "cut.jsonl.gz").write_bytes(data[:-30])
    with pytest.raises(InputError, match="cut.jsonl.gz: truncated or corrupt file"):
        list(iter_documents([str(tmp_path / "cut.jsonl.gz")], ["text"], ReadStats()))


def test_expand_inputs(tmp_path):
    for name in ("b.jsonl", "a.jsonl", "c.txt"):
        (tmp_path / name).write_text('{"text": "x"}\n')
    (tmp_path / "sub.jsonl").mkdir()  # a directory matching the glob is not an input
    got = expand_inputs(f"{tmp_path}/*.jsonl, {tmp_path}/c.txt")
    assert [p.rsplit("/", 1)[1] for p in got] == ["a.jsonl", "b.jsonl", "c.txt"]
    with pytest.raises(InputError, match="input file not found: .*absent.jsonl"):
        expand_inputs(f"{tmp_path}/a.jsonl,{tmp_path}/absent.jsonl")
    with pytest.raises(InputError, match="input file not found: .*nothing"):
        expand_inputs(f"{tmp_path}/nothing*.jsonl")
    (tmp_path / "d.csv").write_text("x")
    with pytest.raises(InputError, match="d.csv: unknown input type"):
        expand_inputs(str(tmp_path / "d.csv"))


def test_iter_texts_yields_every_key(tmp_path):
    path = write(tmp_path / "in.jsonl", b'{"a": "1", "b": "2"}\n{"a": "3", "b": "4"}\n')
    stats = ReadStats()
    assert list(iter_texts([path], ["a", "b"], stats)) == ["1", "2", "3", "4"] and stats.documents == 2


def test_a_lone_surrogate_escape_is_a_bad_line_not_a_crash(tmp_path, caplog):
    path = tmp_path / "s.jsonl"
    path.write_text('{"text": "fine"}\n{"text": "a\\ud800b"}\n{"text": "pair \\ud83d\\ude00 ok"}\n')
    stats = ReadStats()
    docs = list(iter_documents([str(path)], ["text"], stats))
    assert [d.texts["text"] for d in docs] == ["fine", "pair \U0001F600 ok"]
    assert sum(stats.skipped.values()) == 1
    assert f"{path}:2: not valid UTF-8 (a \\u escape of a lone surrogate" in caplog.text
    with pytest.raises(InputError, match="s.jsonl:2: not valid UTF-8"):
        list(iter_documents([str(path)], ["text"], ReadStats(), strict=True))
