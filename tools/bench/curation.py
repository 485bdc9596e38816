#!/usr/bin/env python
"""clean_data.py on a corpus with planted duplicates, near-duplicates, noise and PII: how much of
each it finds, what it wrongly removes, and its speed against preprocess_data.py.

    python tools/bench/curation.py [--docs 4000] [--workers 2] [--output-dir /tmp/bench_curation]

The corpus (built here, seeded, nothing downloaded) is English-like text from a fixed word list:
``docs`` unique documents (several sources), then exact copies (spacing changed),
near-copies edited to a Jaccard similarity of 0.80-0.95 on word 5-gram shingles (the value is
measured and kept with the truth), noise (lorem ipsum, repeated lines, gibberish, symbol spam,
bullet lists, too short) and unique documents holding one planted value of every PII kind in a
valid format, plus an evaluation set a few documents quote. It prints and writes (``--json``):

- recall of exact and near duplicates (near: over the pairs measured at Jaccard >= 0.8);
- unique documents wrongly removed (any reason), noise removed, PII values left in the output;
- MB/s (wall) and CPU seconds of clean_data.py (all stages on: web preset, decontamination,
  PII; and once more without decontamination) and of preprocess_data.py (a 16384-token BPE trained here) on the same corpus and worker count, and
  the MB/s per worker of each stage (bytes a stage judged over the seconds it took in the
  workers: with more processes than idle cores these are wall-clock and read low).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time

import zstandard

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_WORDS = """the of and to a in that have with be is are for on it as by this from at or an was which
their can was not all were when we there been one would more if so about out what some them these
other into time only new first people years way may very after could made over most also work
world state life city water house family system school river music report market power group
history story company science country service question problem number government research health
market policy course light energy garden village library winter summer morning evening travel
building program students teacher doctor animals forest mountain island valley harbor bridge road
train station museum theater kitchen window letter paper table chair street corner field lake
open close build carry bring share write read learn teach grow change follow create explain show
describe improve measure develop protect visit return remember discover support produce allow
small large early late strong quiet bright careful simple modern ancient local public private
green golden narrow wide famous common recent useful happy ready certain clear""".split()
_SOURCES = ("web", "news", "forum", "wiki")
_SYLLABLES = ("ar", "ben", "cor", "dal", "en", "fer", "gan", "hol", "is", "jor", "kel", "lin", "mor", "nav",
              "or", "per", "quin", "ros", "sel", "tan", "ul", "ver", "wil", "yor", "ston", "ing", "tion", "ment")


def _rare_words(count: int = 20000) -> list[str]:
    """English-looking names and rare words: real text has a long tail of words (and the
    tokenizer's word cache should not hold them all)."""
    rng = random.Random(7)
    return ["".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 4))) for _ in range(count)]


_RARE = _rare_words()


def _sentence(rng: random.Random) -> str:
    # ~1 word in 6 from the long tail, Zipf-like (low indices far more often)
    words = [_RARE[int(len(_RARE) * rng.random() ** 3)] if rng.random() < 0.17
             else _WORDS[int(len(_WORDS) * rng.random() ** 2.5)] for _ in range(rng.randint(8, 18))]
    return " ".join(words).capitalize() + rng.choice((".", ".", ".", "!", "?"))


def english(rng: random.Random, paragraphs: int = 4) -> str:
    """Paragraphs of random sentences over the word list: passes the web preset's filters."""
    return "\n\n".join(" ".join(_sentence(rng) for _ in range(rng.randint(3, 6))) for _ in range(paragraphs))


def shingle_set(text: str, n: int = 5) -> set[str]:
    words = re.sub(r"[^\w\s]|_", " ", text.lower()).split()
    return {" ".join(words[i:i + n]) for i in range(max(1, len(words) - n + 1))}


def jaccard(a: str, b: str) -> float:
    x, y = shingle_set(a), shingle_set(b)
    return len(x & y) / max(len(x | y), 1)


def near_copy(rng: random.Random, text: str, target: float) -> tuple[str, float]:
    """``text`` with words replaced until its Jaccard similarity falls to about ``target``."""
    words = text.split(" ")
    edited = list(words)
    step = max(1, len(words) // 200)
    while True:
        for _ in range(step):
            i = rng.randrange(len(edited))
            edited[i] = rng.choice(_WORDS)
        j = jaccard(text, " ".join(edited))
        if j <= target:
            return " ".join(edited), j


def pii_values(rng: random.Random) -> dict[str, str]:
    """One valid value of every PII kind pii.py replaces."""
    def luhn(prefix: str, length: int) -> str:
        digits = prefix + "".join(str(rng.randrange(10)) for _ in range(length - len(prefix) - 1))
        total = sum((2 * int(d) - 9 if 2 * int(d) > 9 else 2 * int(d)) if i % 2 == 0 else int(d)
                    for i, d in enumerate(reversed(digits)))
        return digits + str((10 - total % 10) % 10)

    def iban() -> str:
        bban = "".join(str(rng.randrange(10)) for _ in range(18))
        check = 98 - int("".join(str(int(c, 36)) for c in bban + "DE00")) % 97
        return f"DE{check:02d}{bban}"

    alnum = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    return {"email": f"{rng.choice(_WORDS)}.{rng.choice(_WORDS)}{rng.randrange(100)}@example-{rng.randrange(1000)}.com",
            "phone": f"({rng.randint(2, 9)}{rng.randint(0, 9)}{rng.randint(0, 9)}) {rng.randint(2, 9)}"
                     f"{rng.randint(10, 99)}-{rng.randint(1000, 9999)}",
            "ip": ".".join(str(rng.randint(1, 254)) for _ in range(4)),
            "card": luhn("4", 16),
            "iban": iban(),
            "ssn": f"{rng.randint(100, 665):03d}-{rng.randint(1, 99):02d}-{rng.randint(1, 9999):04d}",
            "secret": "AKIA" + "".join(rng.choice(alnum) for _ in range(16))}


def _noise(rng: random.Random, kind: str) -> str:
    line = _sentence(rng)
    if kind == "lorem":
        return english(rng, 2) + "\n\nLorem ipsum dolor sit amet, consectetur adipiscing elit."
    if kind == "repeated_lines":
        return "\n".join([line] * 30 + [_sentence(rng) for _ in range(5)])
    if kind == "gibberish":
        return " ".join("".join(rng.choice("bcdfghjklmnpqrstvwxz") for _ in range(rng.randint(2, 14)))
                        for _ in range(300))
    if kind == "spam":
        return " ".join(f"#{rng.choice(_WORDS)} #deal #win ... BUY NOW" for _ in range(60))
    if kind == "bullets":
        return "\n".join(f"- {rng.choice(_WORDS)} {rng.choice(_WORDS)}" for _ in range(80))
    return line  # "short"


NOISE_KINDS = ("lorem", "repeated_lines", "gibberish", "spam", "bullets", "short")


def build_corpus(n: int, seed: int = 0) -> tuple[list[dict], dict]:
    """``(records, truth)``: ``truth`` maps each record's ``id`` to what was planted."""
    rng = random.Random(seed)
    unique = [english(rng, rng.randint(3, 6)) for _ in range(n)]
    records = [{"id": f"u{i}", "text": t, "meta": {"source": _SOURCES[i % len(_SOURCES)]}} for i, t in enumerate(unique)]
    truth: dict[str, dict] = {r["id"]: {"kind": "unique"} for r in records}
    for i in rng.sample(range(n), n // 20):
        text = unique[i].replace("\n\n", "\n \n") + "  " if i % 2 else re.sub(" ", "  ", unique[i])
        records.append({"id": f"x{i}", "text": text, "meta": {"source": "mirror"}})
        truth[f"x{i}"] = {"kind": "exact", "of": f"u{i}"}
    for i in rng.sample(range(n), n // 10):
        text, j = near_copy(rng, unique[i], rng.uniform(0.8, 0.95))
        records.append({"id": f"n{i}", "text": text, "meta": {"source": "mirror"}})
        truth[f"n{i}"] = {"kind": "near", "of": f"u{i}", "jaccard": round(j, 4)}
    for k in range(n // 20):
        kind = NOISE_KINDS[k % len(NOISE_KINDS)]
        records.append({"id": f"z{k}", "text": _noise(rng, kind), "meta": {"source": "spam"}})
        truth[f"z{k}"] = {"kind": "noise", "noise": kind}
    for k in range(n // 20):
        values = pii_values(rng)
        text = english(rng, 3) + "\n\nContact: " + "; ".join(f"{kind} {v}" for kind, v in values.items()) + "."
        records.append({"id": f"p{k}", "text": text, "meta": {"source": "forum"}})
        truth[f"p{k}"] = {"kind": "pii", "values": values}
    rng.shuffle(records)
    return records, truth


def plant_contamination(rng: random.Random, records: list[dict], truth: dict, count: int) -> list[dict]:
    """An evaluation set of ``count`` items; ``count // 2`` unique documents quote one (30 words)."""
    items = [{"question": english(rng, 1), "answer": rng.choice(_WORDS)} for _ in range(count)]
    copied = {t["of"] for t in truth.values() if "of" in t}  # their copies must stay copies
    uniques = [r for r in records if truth[r["id"]]["kind"] == "unique" and r["id"] not in copied]
    for k, record in enumerate(rng.sample(uniques, count // 2)):
        quote = " ".join(items[k]["question"].split()[:30])
        record["text"] += "\n\n" + quote
        truth[record["id"]] = {"kind": "contaminated", "item": k}
    return items


def write_jsonl_zst(path: str, records: list[dict]) -> None:
    data = "".join(json.dumps(r) + "\n" for r in records).encode("utf-8")
    with open(path, "wb") as handle:
        handle.write(zstandard.ZstdCompressor(level=3).compress(data))


def read_jsonl_zst(path: str) -> list[dict]:
    with open(path, "rb") as handle:
        data = zstandard.ZstdDecompressor().stream_reader(handle).read()
    return [json.loads(line) for line in data.decode("utf-8").splitlines() if line]


def score(records: list[dict], truth: dict, out_dir: str) -> dict:
    """Recall and false removals from the outputs against the planted truth."""
    position = {r["id"]: i for i, r in enumerate(records)}
    removed = {r["id"]: r for r in read_jsonl_zst(os.path.join(out_dir, "removed.jsonl.zst"))}
    kept = {r["id"]: r for r in read_jsonl_zst(os.path.join(out_dir, "cleaned.jsonl.zst"))}

    def pair_found(a: str, b: str) -> bool:
        """The later of the two removed as a duplicate: of the earlier, or of a copy of it
        that came first (an exact copy of the same original, planted too)."""
        later = a if position[a] > position[b] else b
        rec = removed.get(later)
        return bool(rec) and rec["reason"].endswith("duplicate")
    pairs = {k: [(i, t["of"]) for i, t in truth.items() if t["kind"] == k] for k in ("exact", "near")}
    near80 = [(i, o) for i, o in pairs["near"] if truth[i]["jaccard"] >= 0.8]
    earlier_copy = {o for k in pairs for i, o in pairs[k] if position[i] < position[o]}
    unique = [i for i, t in truth.items() if t["kind"] in ("unique", "pii") and i not in earlier_copy]
    wrong = [i for i in unique if i in removed]
    noise = [i for i, t in truth.items() if t["kind"] == "noise"]
    contaminated = [i for i, t in truth.items() if t["kind"] == "contaminated"]
    pii_total, pii_left = {}, {}
    for i, t in truth.items():
        if t["kind"] == "pii" and i in kept:
            for kind, value in t["values"].items():
                pii_total[kind] = pii_total.get(kind, 0) + 1
                pii_left[kind] = pii_left.get(kind, 0) + (value in kept[i]["text"])
    return {
        "exact_recall": sum(pair_found(a, b) for a, b in pairs["exact"]) / max(len(pairs["exact"]), 1),
        "near_recall_j80": sum(pair_found(a, b) for a, b in near80) / max(len(near80), 1),
        "near_pairs_j80": len(near80),
        "unique_wrongly_removed": len(wrong) / max(len(unique), 1),
        "unique_wrongly_removed_reasons": _count(removed[i]["reason"] for i in wrong),
        "noise_removed": sum(i in removed for i in noise) / max(len(noise), 1),
        "noise_kept": sorted(truth[i]["noise"] for i in noise if i not in removed),
        "contaminated_removed": sum(removed.get(i, {}).get("reason") == "decontamination" for i in contaminated)
        / max(len(contaminated), 1),
        "pii_recall": {k: 1 - pii_left[k] / pii_total[k] for k in sorted(pii_total)},
    }


def _count(items) -> dict:
    out: dict = {}
    for item in items:
        out[item] = out.get(item, 0) + 1
    return out


def _cpu_seconds() -> float:
    import resource

    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _timed_run(cmd: list[str]) -> dict:
    cpu, start = _cpu_seconds(), time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return {"seconds": time.perf_counter() - start, "cpu_seconds": _cpu_seconds() - cpu, "stdout": proc.stdout}


def index_bytes_per_doc(count: int = 200000) -> float:
    """Resident memory the in-process dedup index (exact keys + rensa LSH) grows by per document,
    with the default config; the signatures are made first so only the index is counted."""
    import rensa

    from megatron_lite.curation.config import DedupConfig
    from megatron_lite.curation.dedup import DedupIndex, doc_key

    cfg = DedupConfig()
    sigs = rensa.RMinHash.from_token_sets([[str(i), "x"] for i in range(count)], cfg.num_perm, cfg.seed)

    def rss() -> int:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    index, before = DedupIndex(cfg), rss()
    for i, sig in enumerate(sigs):
        index.check(doc_key(0, i + 1), i * 7919, sig)
    return (rss() - before) / count


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--docs", type=int, default=4000, help="unique documents (the corpus has ~1.3x as many)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--output-dir", default=None, help="default: a temporary directory")
    p.add_argument("--vocab-size", type=int, default=16384, help="preprocess_data.py's BPE, trained here")
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args()
    root = args.output_dir or tempfile.mkdtemp(prefix="bench_curation_")
    os.makedirs(root, exist_ok=True)
    rng = random.Random(1)
    records, truth = build_corpus(args.docs)
    items = plant_contamination(rng, records, truth, max(2, args.docs // 100))
    corpus, evalset = os.path.join(root, "corpus.jsonl.zst"), os.path.join(root, "eval.jsonl")
    write_jsonl_zst(corpus, records)
    with open(evalset, "w") as handle:
        handle.writelines(json.dumps(item) + "\n" for item in items)
    config = os.path.join(root, "curation.yml")
    with open(config, "w") as handle:
        handle.write(f"decontamination:\n  eval_files: [{evalset}]\n")
    megabytes = sum(len(r["text"].encode()) for r in records) / 1e6  # the text, as both tools see it
    py, tools = sys.executable, os.path.join(REPO, "tools")
    def clean_run(out: str, *extra: str) -> dict:
        run = _timed_run([py, os.path.join(tools, "clean_data.py"), "--input", corpus, "--output-dir",
                          os.path.join(root, out), "--workers", str(args.workers), "--force", *extra])
        stages = json.loads(re.search(r"MB/s per worker by stage: (\{.*\})", run["stdout"]).group(1))
        return {"mb_per_s": round(megabytes / run["seconds"], 3), "cpu_seconds": round(run["cpu_seconds"], 2),
                "stage_mb_per_s_per_worker": stages}
    clean = clean_run("clean", "--config", config)
    no_decontamination = clean_run("clean_no_decontamination")
    tokenizer = os.path.join(root, "tokenizer.json")
    subprocess.run([py, os.path.join(tools, "train_tokenizer.py"), "--input", corpus, "--vocab-size", str(args.vocab_size),
                    "--output", tokenizer], check=True, capture_output=True)
    pre = _timed_run([py, os.path.join(tools, "preprocess_data.py"), "--input", corpus, "--output-prefix",
                      os.path.join(root, "pre"), "--tokenizer-type", "HFTokenizer", "--vocab-file", tokenizer,
                      "--append-eod", "--workers", str(args.workers)])
    result = {"corpus": {"documents": len(records), "megabytes": round(megabytes, 2), "workers": args.workers,
                         "machine": f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}"},
              "dedup_index_bytes_per_doc": round(index_bytes_per_doc()),
              "quality": score(records, truth, os.path.join(root, "clean")),
              "clean_data": clean, "clean_data_without_decontamination": no_decontamination,
              "preprocess_data": {"mb_per_s": round(megabytes / pre["seconds"], 3),
                                  "cpu_seconds": round(pre["cpu_seconds"], 2)}}
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
