#!/usr/bin/env python
"""PII anonymizer benchmark: recall on planted PII, look-alikes kept, and throughput (MB/s).

    python tools/bench/pii.py [--docs 400] [--seed 0] [--repeats 3] [--compare]

Builds a synthetic corpus (filler prose, code lines and look-alikes: Luhn-invalid numbers, IBANs
with a bad checksum, SSN 000-xx, 999.1.1.1, version strings, dates, times, UUIDs, ordinary
numbers, ``token = get_token()``) with several formats of every PII kind planted at random
places with surrounding punctuation, then prints per kind: planted, replaced (recall), and the
look-alikes changed (false positives). Throughput: the median MB/s (per CPU second) of
``PIIAnonymizer.anonymize`` over that dense corpus (a worst case: PII every ~500 bytes), over
sparse prose (PII in 1% of the sentences) and over this Python's standard library source (real
code; its replacement counts are printed as a false-positive smell).

``--compare`` also measures, where installed, phonenumbers' PhoneNumberMatcher, Presidio's
pattern recognizers (no spaCy model) and scrubadub on the same planted corpus: the measurement
behind the library decision in megatron_lite/curation/pii.py (they are not project requirements;
run this with an interpreter that has them).
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import random
import statistics
import string
import sysconfig
import time

from megatron_lite.curation.pii import KINDS, PIIAnonymizer, PIIConfig, iban_valid, luhn_valid

WORDS = ("the model data train loss value result report system network user table file page "
         "code number order account customer service update release version server figure "
         "note see also with from into over under about after before during").split()
LOOKALIKES = (
    "4111 1111 1111 1112", "5500-0000-0000-0005", "DE89 3704 0044 0532 0130 01",
    "GB82WEST12345698765431", "000-12-3456", "666-45-6789", "912-45-6789", "123-00-4567",
    "999.1.1.1", "256.10.10.10", "1.2.3.4.5", "v1.2.3.4", "2023-10-12", "12/10/2023",
    "12:30:45", "14.05.2024", "3.14159265358979", "1,234,567", "1700000000000", "order 12345678",
    "ISBN 978-3-16-148410-0", "550e8400-e29b-41d4-a716-446655440000", "std::vector<int>",
    "face::add", "token = get_token()", "password = self.password", "secret_key = settings.SECRET",
    "api_key: str", "d41d8cd98f00b204e9800998ecf8427e", "1024x768", "10:00-12:00",
    "id 4829301756", "x[::2]", "token_type = 'encoded-word'", "1999 2004 2014 2020",
)


def _luhn_complete(prefix: str, length: int, rng: random.Random) -> str:
    body = prefix + "".join(rng.choice(string.digits) for _ in range(length - len(prefix) - 1))
    return next(body + d for d in string.digits if luhn_valid(body + d))


def gen_card(rng: random.Random) -> str:
    prefix, length = rng.choice([("4", 16), ("4", 13), ("51", 16), ("55", 16), ("2221", 16),
                                 ("2720", 16), ("34", 15), ("37", 15), ("6011", 16), ("65", 16),
                                 ("35", 16), ("36", 14), ("4", 19), ("6759", 12)])
    d = _luhn_complete(prefix, length, rng)
    sep = rng.choice(["", " ", "-"])
    if length == 15:
        return sep.join((d[:4], d[4:10], d[10:])) if sep else d
    return sep.join(d[i:i + 4] for i in range(0, length, 4))


def gen_iban(rng: random.Random) -> str:
    country, length = rng.choice([("DE", 22), ("FR", 27), ("GB", 22), ("NL", 18), ("ES", 24),
                                  ("IT", 27), ("CH", 21), ("BE", 16), ("NO", 15), ("PL", 28)])
    letters = 4 if country in ("GB", "NL") else 0
    bban = "".join(rng.choice(string.ascii_uppercase) for _ in range(letters))
    bban += "".join(rng.choice(string.digits) for _ in range(length - 4 - letters))
    num = int("".join(str(int(c, 36)) for c in bban + country + "00"))
    iban = f"{country}{98 - num % 97:02d}{bban}"
    assert iban_valid(iban)
    return " ".join(iban[i:i + 4] for i in range(0, len(iban), 4)) if rng.random() < 0.5 else iban


def gen_phone(rng: random.Random) -> str:
    """NANP and international formats; a bare ten-digit number only after a word such as "call"
    (without one, the anonymizer takes it for an ordinary number)."""
    a, e, n = rng.randint(200, 989), rng.randint(200, 999), rng.randint(0, 9999)
    fmt = rng.choice(["({a}) {e}-{n:04d}", "{a}-{e}-{n:04d}", "{a}.{e}.{n:04d}",
                      "+1 {a} {e} {n:04d}", "+1-{a}-{e}-{n:04d}", "1-{a}-{e}-{n:04d}",
                      "call {a}{e}{n:04d}", "({a}){e}-{n:04d}x123", "001-{a}-{e}-{n:04d}",
                      "+44 20 7946 {n:04d}", "+49 30 123{n:04d}", "+33 1 23 45 {n:04d}",
                      "+91 98765 4{n:04d}", "+81-3-1234-{n:04d}", "+4420794{n:04d}",
                      "0044 20 7946 {n:04d}", "+49 (0)30 123{n:04d}"])
    return fmt.format(a=a, e=e, n=n)


def gen_ip(rng: random.Random) -> str:
    if rng.random() < 0.6:
        return str(ipaddress.IPv4Address(rng.getrandbits(32)))
    addr = ipaddress.IPv6Address((0x20010DB8 << 96) | rng.getrandbits(rng.choice([16, 64, 96])))
    return addr.exploded if rng.random() < 0.3 else addr.compressed


def gen_ssn(rng: random.Random) -> str:
    area = rng.choice([x for x in range(1, 900) if x != 666])
    sep = rng.choice(["-", " "])
    return f"{area:03d}{sep}{rng.randint(1, 99):02d}{sep}{rng.randint(1, 9999):04d}"


def gen_email(rng: random.Random) -> str:
    user = rng.choice(["john.doe", "a_b", "Mary.Smith+news", "x", "dev-ops", "j.r.r.tolkien"])
    host = rng.choice(["example.com", "mail.example.co.uk", "Uni-Bonn.DE", "x.io", "a.b.c.museum"])
    return f"{user}{rng.randint(0, 99)}@{host}"


def _rand(rng: random.Random, alphabet: str, n: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


def gen_secret(rng: random.Random) -> tuple[str, str]:
    """(text to plant, the secret value that must disappear)."""
    an = string.ascii_letters + string.digits
    kind = rng.randrange(8)
    if kind == 0:
        body = "\n".join(_rand(rng, an + "+/", 64) for _ in range(4))
        block = f"-----BEGIN RSA PRIVATE KEY-----\n{body}\n-----END RSA PRIVATE KEY-----"
        return block, body
    value = [
        "", "AKIA" + _rand(rng, string.ascii_uppercase + string.digits, 16),
        "ghp_" + _rand(rng, an, 36), "xoxb-" + _rand(rng, string.digits, 12) + "-" + _rand(rng, an, 24),
        _rand(rng, an, 32), _rand(rng, an, 12) + "9", _rand(rng, an + "/+", 40), _rand(rng, an, 40),
    ][kind]
    text = [None, value, value, value, f'api_key = "{value}"', f"password={value}",
            f"aws_secret_access_key = {value}", f'{{"auth_token": "{value}"}}'][kind]
    return text, value


def make_corpus(n_docs: int, seed: int, pii_rate: float = 0.15, lookalike_rate: float = 0.10,
                ) -> tuple[list[str], list[list[tuple[str, str]]]]:
    """``n_docs`` documents and, per document, the planted (kind, value) pairs; each sentence is
    followed by a PII value with probability ``pii_rate``, else by a look-alike with
    ``lookalike_rate``."""
    rng = random.Random(seed)
    gens = {"email": gen_email, "phone": gen_phone, "ip": gen_ip, "card": gen_card,
            "iban": gen_iban, "ssn": gen_ssn}
    docs, planted = [], []
    for _ in range(n_docs):
        parts, plants = [], []
        for _ in range(rng.randint(20, 60)):
            parts.append(" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 15))).capitalize())
            roll = rng.random()
            if roll < pii_rate:
                kind = rng.choice(KINDS)
                if kind == "secret":
                    text, value = gen_secret(rng)
                else:
                    text = value = gens[kind](rng)
                left, right = rng.choice(["  ", "()", "<>", "''", "[]", ": ", "=,", " ."])
                parts.append(f"{left.strip()}{text}{right.strip()}")
                plants.append((kind, value))
            elif roll < pii_rate + lookalike_rate:
                parts.append(rng.choice(LOOKALIKES))
            parts[-1] += rng.choice([".", ",", ";", "\n", ". "])
        docs.append(" ".join(parts))
        planted.append(plants)
    return docs, planted


def evaluate(anon, docs: list[str], planted: list[list[tuple[str, str]]]) -> dict[str, list[int]]:
    """kind -> [planted, replaced]; 'lookalike' -> [present, changed]."""
    stats = {k: [0, 0] for k in (*KINDS, "lookalike")}
    for doc, plants in zip(docs, planted):
        out = anon(doc)
        for kind, value in plants:
            stats[kind][0] += 1
            stats[kind][1] += value not in out
        for la in LOOKALIKES:
            if la in doc:
                stats["lookalike"][0] += 1
                stats["lookalike"][1] += la not in out
    return stats


def throughput(fn, docs: list[str], repeats: int) -> float:
    """MB (UTF-8) per CPU second of this process, median of ``repeats``: CPU time, not wall
    time, so that other jobs on a shared machine do not count (the wall figure is the same
    on an idle core)."""
    mb = sum(len(d.encode()) for d in docs) / 1e6
    times = []
    for _ in range(repeats):
        t0 = time.process_time()
        for d in docs:
            fn(d)
        times.append(time.process_time() - t0)
    return mb / statistics.median(times)


def stdlib_docs(limit_mb: float = 8.0) -> list[str]:
    docs, size, root = [], 0, sysconfig.get_paths()["stdlib"]
    for dirpath, dirnames, filenames in sorted(os.walk(root)):
        dirnames[:] = [d for d in sorted(dirnames) if d not in ("test", "site-packages", "__pycache__")]
        for name in sorted(f for f in filenames if f.endswith(".py")):
            with open(os.path.join(dirpath, name), encoding="utf-8", errors="replace") as f:
                docs.append(f.read())
            size += len(docs[-1])
            if size > limit_mb * 1e6:
                return docs
    return docs


def _report(name: str, stats: dict[str, list[int]], mbps: float) -> None:
    cells = [f"{k} {v[1]}/{v[0]}" for k, v in stats.items() if v[0]]
    print(f"{name:28s} {mbps:8.2f} MB/s | " + "  ".join(cells))


def compare(docs: list[str], planted: list[list[tuple[str, str]]], repeats: int) -> None:
    """The libraries considered, where installed, on the same corpus (see module docstring)."""
    try:
        import phonenumbers

        for name, lenient in (("VALID", phonenumbers.Leniency.VALID),
                              ("POSSIBLE", phonenumbers.Leniency.POSSIBLE)):
            def pn(text: str, leniency=lenient) -> str:
                matches = phonenumbers.PhoneNumberMatcher(text, "US", leniency=leniency)
                for m in reversed(list(matches)):
                    text = text[:m.start] + "<PHONE>" + text[m.end:]
                return text
            _report(f"phonenumbers Matcher {name}", evaluate(pn, docs, planted),
                    throughput(pn, docs, repeats))
    except ImportError:
        print("phonenumbers: not installed")
    try:
        from presidio_analyzer.predefined_recognizers import (
            CreditCardRecognizer,
            EmailRecognizer,
            IbanRecognizer,
            IpRecognizer,
            PhoneRecognizer,
            UsSsnRecognizer,
        )
        recs = [CreditCardRecognizer(), EmailRecognizer(), IbanRecognizer(), IpRecognizer(),
                PhoneRecognizer(), UsSsnRecognizer()]

        def presidio(text: str) -> str:
            results = [r for rec in recs for r in rec.analyze(text, rec.supported_entities, None)]
            for r in sorted(results, key=lambda r: r.start, reverse=True):
                text = text[:r.start] + "<PII>" + text[r.end:]
            return text
        _report("presidio pattern recognizers", evaluate(presidio, docs, planted),
                throughput(presidio, docs, repeats))
    except ImportError:
        print("presidio_analyzer: not installed")
    try:
        import scrubadub
        scrubber = scrubadub.Scrubber()
        _report("scrubadub default", evaluate(scrubber.clean, docs, planted),
                throughput(scrubber.clean, docs, repeats))
    except ImportError:
        print("scrubadub: not installed")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--docs", type=int, default=400)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--compare", action="store_true", help="also time phonenumbers/Presidio/scrubadub")
    args = p.parse_args(argv)
    docs, planted = make_corpus(args.docs, args.seed)
    print(f"synthetic corpus: {len(docs)} docs, {sum(map(len, docs)) / 1e6:.2f} MB, "
          f"{sum(map(len, planted))} planted")
    anonymizer = PIIAnonymizer(PIIConfig())

    def ours(text: str) -> str:
        return anonymizer.anonymize(text)[0]
    _report("megatron_lite PIIAnonymizer", evaluate(ours, docs, planted),
            throughput(ours, docs, args.repeats))
    # Throughput on text as it usually is: PII and look-alikes in 1% and 2% of the sentences.
    sparse, _ = make_corpus(args.docs, args.seed + 1, pii_rate=0.01, lookalike_rate=0.02)
    print(f"sparse prose ({sum(map(len, sparse)) / 1e6:.1f} MB): "
          f"{throughput(ours, sparse, args.repeats):.2f} MB/s")
    code = stdlib_docs()
    counts: dict[str, int] = dict.fromkeys(KINDS, 0)
    for d in code:
        for k, v in anonymizer.anonymize(d)[1].items():
            counts[k] += v
    print(f"stdlib source ({sum(map(len, code)) / 1e6:.1f} MB): "
          f"{throughput(ours, code, args.repeats):.2f} MB/s, replacements {counts}")
    if args.compare:
        compare(docs, planted, args.repeats)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
