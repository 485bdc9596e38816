"""PII anonymization: every kind replaced in its valid formats (recall 1.0 on a planted set with
surrounding text and punctuation), look-alikes kept, pseudonyms consistent and keyed, drop mode,
the blocklist, config errors, pickling, and the benchmark corpus's recall (not its speed)."""

from __future__ import annotations

import importlib.util
import pickle
import re

import pytest

from megatron_lite.curation.pii import (
    KINDS,
    PLACEHOLDERS,
    PIIAnonymizer,
    PIIConfig,
    card_valid,
    find_pii,
    iban_valid,
    luhn_valid,
    ssn_valid,
)
from tests.conftest import REPO

VALID = {
    "email": ["john.doe@example.com", "Mary.Smith+news@mail.example.co.uk", "a_b-c%d@x.io",
              "dev-ops42@Uni-Bonn.DE", "x@a.b.c.museum"],
    "phone": ["(212) 555-1234", "212-555-1234", "212.555.1234", "+1 212 555 1234",
              "+1-212-555-1234", "1-800-555-0199", "(212)555-1234x123",
              "001-212-555-1234", "+44 20 7946 0958", "+49 30 1234567", "+33 1 23 45 67 89",
              "+91 98765 43210", "+81-3-1234-5678", "+442079460958", "0044 20 7946 0958",
              "+49 (0)30 1234567"],
    "ip": ["192.168.1.10", "8.8.8.8", "10.0.0.255", "255.255.255.255", "2001:db8::8a2e:370:7334",
           "2001:0db8:85a3:0000:0000:8a2e:0370:7334", "2001:db8::1", "fe80::1", "::ffff:192.0.2.1"],
    "card": ["4111 1111 1111 1111", "4111-1111-1111-1111", "4111111111111111",
             "5500 0000 0000 0004", "3782 822463 10005", "371449635398431", "6011111111111117",
             "3530111333300000", "4222222222222", "2223000048400011", "30569309025904"],
    "iban": ["DE89 3704 0044 0532 0130 00", "DE89370400440532013000", "GB82 WEST 1234 5698 7654 32",
             "GB82WEST12345698765432", "FR14 2004 1010 0505 0001 3M02 606", "NL91ABNA0417164300",
             "CH9300762011623852957", "NO9386011117947", "BE68539007547034"],
    "ssn": ["123-45-6789", "078-05-1120", "234 56 7890", "899-99-9999"],
    "secret": ["AKIAIOSFODNN7EXAMPLE", "ASIAY34FZKBOKMUTVV7A",
               "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
               "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123",
               "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
               "AIzaSyA1234567890abcdefghijklmnopqrstuv"],
}
# Each value is planted with different text and punctuation around it.
TEMPLATES = ["{}", "Contact: {}.", "({})", "<{}>", "'{}',", "[{}]\n", "see {}; then", "\t{}\n\n"]

# key=value secrets: (text, the value that must disappear, what must stay).
KEY_VALUES = [
    ('api_key = "sk-abc123def456ghi"', "sk-abc123def456ghi", 'api_key = "'),
    ("password=hunter2hunter2", "hunter2hunter2", "password="),
    ("export AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
     "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "AWS_SECRET_ACCESS_KEY="),
    ('{"auth_token": "9f8e7d6c5b4a39281706"}', "9f8e7d6c5b4a39281706", '"auth_token": "'),
    ("db_passwd: s3cr3tPassw0rd", "s3cr3tPassw0rd", "db_passwd: "),
    ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig", "eyJhbGciOiJIUzI1NiJ9", "Bearer "),
    ("client_secret: correcthorsebatterystaple", "correcthorsebatterystaple", "client_secret: "),
]
PEM = ("-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA3Tz2mr7SZiAMfQyuvBjM2Mp4lOA1\n"
       "aQ9ldjFxZXB4bHFnaGpsZ3Jt+/=\n-----END RSA PRIVATE KEY-----")

LOOKALIKES = [
    "4111 1111 1111 1112", "5500-0000-0000-0005", "1234567890123", "1700000000000",
    "DE89 3704 0044 0532 0130 01", "GB82WEST12345698765431", "XX89370400440532013000",
    "000-12-3456", "666-45-6789", "912-45-6789", "123-00-4567", "123-45-0000",
    "999.1.1.1", "256.10.10.10", "1.2.3.4.5", "v1.2.3.4", "10.01.1.1", "192.168.1",
    "2023-10-12", "12/10/2023", "14.05.2024", "12:30:45", "10:00-12:00", "2024-01-01T12:30:45Z",
    "3.14159265358979", "1,234,567", "order 12345678", "ISBN 978-3-16-148410-0",
    "550e8400-e29b-41d4-a716-446655440000", "d41d8cd98f00b204e9800998ecf8427e",
    "std::vector<int>", "face::add", "a::b", "Foo :: Bar", "x[::2]", "a[1::3, ::2]", "b[4-1::-1]",
    "f(4294967295)", "int(13577625587)", "id 4829301756", "4829301756,2125551234",
    "callback(2125551234)", "1999 2004 2014 2020 2021", "1939 2014 1939 1909 1945", "Decimal('+35236450.6')", "token_type = 'encoded-word'",
    "token = get_token()", "password = self.password", "secret_key = settings.SECRET_KEY.",
    "api_key: str", "token: Optional[str] = None", 'password = "${DB_PASSWORD}"',
    "secret: '********'", "tokens = tokenize(text)", "user@localhost", "foo@bar",
    "@decorator", "1024x768", "call 555-1234", "+1", "ghp_short", "AKIAshort",
]


@pytest.fixture(scope="module")
def anon() -> PIIAnonymizer:
    return PIIAnonymizer(PIIConfig())


@pytest.mark.parametrize("kind", [k for k in KINDS if k in VALID])
def test_valid_values_replaced_in_every_context(anon, kind):
    for value in VALID[kind]:
        for template in TEMPLATES:
            text = template.format(value)
            out, counts = anon.anonymize(text)
            assert out == template.format(PLACEHOLDERS[kind]), (value, template, out)
            assert counts[kind] == 1 and sum(counts.values()) == 1, (value, counts)


def test_planted_document_recall(anon):
    planted = [(k, v) for k in VALID for v in VALID[k]]
    text = "\n".join(f"Record {i}: the value is {v}, noted." for i, (_, v) in enumerate(planted))
    out, counts = anon.anonymize(text)
    for kind, value in planted:
        assert value not in out, (kind, value)
    assert counts == {k: len(VALID[k]) for k in KINDS}


@pytest.mark.parametrize("text,value,kept", KEY_VALUES)
def test_key_value_secrets_replace_only_the_value(anon, text, value, kept):
    out, counts = anon.anonymize(text)
    assert value not in out and kept in out and "<SECRET>" in out, out
    assert counts["secret"] == 1


def test_private_key_block(anon):
    out, counts = anon.anonymize(f"key:\n{PEM}\nafter")
    assert out == "key:\n<SECRET>\nafter" and counts["secret"] == 1
    truncated = PEM.rsplit("\n", 1)[0]  # a block cut off before its END line
    assert "MIIEpAIB" not in anon.anonymize(truncated + "\n")[0]


@pytest.mark.parametrize("text", LOOKALIKES)
def test_lookalikes_kept(anon, text):
    for template in ("{}", "Value: {}.", "({})"):
        doc = template.format(text)
        out, counts = anon.anonymize(doc)
        assert out == doc and not any(counts.values()), (doc, out)


def test_mixed_document_priorities(anon):
    text = ("Mail john@example.com or call (212) 555-1234; card 4111 1111 1111 1111 exp 12/25, "
            "IBAN DE89 3704 0044 0532 0130 00 from 10.0.0.1 (SSN 123-45-6789), v1.2.3.4.5 ok.")
    out, counts = anon.anonymize(text)
    assert out == ("Mail <EMAIL> or call <PHONE>; card <CREDIT_CARD> exp 12/25, IBAN <IBAN> from "
                   "<IP_ADDRESS> (SSN <US_SSN>), v1.2.3.4.5 ok.")
    assert counts == {"secret": 0, "email": 1, "iban": 1, "card": 1, "ssn": 1, "ip": 1, "phone": 1}
    spans = find_pii(text)
    assert [k for _, _, k, _ in spans] == ["email", "phone", "card", "iban", "ip", "ssn"]


@pytest.mark.parametrize("text", ["Call me at 2125551234.", "Phone: 2125551234",
                                  "My cell phone number is 2125551234", "fax (2125551234)"])
def test_bare_ten_digits_are_a_phone_after_a_phone_word(anon, text):
    out, counts = anon.anonymize(text)
    assert "2125551234" not in out and counts["phone"] == 1


@pytest.mark.parametrize("text,expected", [
    ("10.0.0.1:8080", "<IP_ADDRESS>:8080"), ("192.168.0.0/16", "<IP_ADDRESS>/16"),
    ("10.0.0.1-10.0.0.5", "<IP_ADDRESS>-<IP_ADDRESS>"), ("10.0.0.1,10.0.0.2", "<IP_ADDRESS>,<IP_ADDRESS>"),
    ("[2001:db8::1]:443", "[<IP_ADDRESS>]:443"), ("2001:db8::/32", "<IP_ADDRESS>/32"),
])
def test_ip_with_port_prefix_or_range(anon, text, expected):
    assert anon.anonymize(text)[0] == expected


def test_short_ipv6_in_prose_is_an_address(anon):
    assert anon.anonymize("listen on ::1 and fe80::1.")[0] == "listen on <IP_ADDRESS> and <IP_ADDRESS>."


def test_kinds_subset(anon):
    only_email = PIIAnonymizer(PIIConfig(kinds=("email",)))
    out, counts = only_email.anonymize("a@b.com 212-555-1234")
    assert out == "<EMAIL> 212-555-1234" and counts == {"email": 1}


def test_validators():
    assert luhn_valid("4111111111111111") and not luhn_valid("4111111111111112")
    assert card_valid("4111111111111111") and not card_valid("1111111111111117")  # bad IIN
    assert card_valid("675900000000") and not card_valid("411111111116")  # 12: Maestro only
    assert iban_valid("DE89370400440532013000") and not iban_valid("DE89370400440532013001")
    assert not iban_valid("DE8937040044053201300")  # wrong length for DE
    assert ssn_valid("123456789") and not ssn_valid("000456789") and not ssn_valid("900456789")


def test_pseudonyms_consistent_and_keyed():
    a1 = PIIAnonymizer(PIIConfig(mode="pseudonym", secret="k1"))
    a2 = PIIAnonymizer(PIIConfig(mode="pseudonym", secret="k1"))
    b = PIIAnonymizer(PIIConfig(mode="pseudonym", secret="k2"))
    text = "Write to John.Doe@Example.com, call 212-555-1234; again john.doe@example.com."
    out1, counts = a1.anonymize(text)
    assert counts["email"] == 2 and counts["phone"] == 1
    emails = re.findall(r"user-[0-9a-f]{8}@example\.invalid", out1)
    assert len(emails) == 2 and emails[0] == emails[1]  # case-insensitive e-mail: one person
    assert re.search(r"<PHONE_[0-9a-f]{8}>", out1)
    assert a2.anonymize(text)[0] == out1  # same secret, another instance (another run)
    assert b.anonymize(text)[0] != out1  # the secret keys the pseudonyms
    # The same number in another format is the same number.
    assert a1.anonymize("(212) 555-1234")[0] == a1.anonymize("+1 212 555 1234")[0]
    assert a1.anonymize("212-555-1234")[0] != a1.anonymize("212-555-1235")[0]
    assert a1.pseudonym("card", "4111111111111111") != a1.pseudonym("ssn", "4111111111111111")


def test_drop_mode():
    drop = PIIAnonymizer(PIIConfig(mode="drop"))
    out, counts = drop.anonymize("ssn 123-45-6789 and a@b.org")
    assert out is None and counts["ssn"] == 1 and counts["email"] == 1
    clean = "Nothing personal here, version 1.2.3.4.5."
    assert drop.anonymize(clean) == (clean, dict.fromkeys(counts, 0))


def test_config_errors():
    with pytest.raises(ValueError, match="secret"):
        PIIAnonymizer(PIIConfig(mode="pseudonym"))
    with pytest.raises(ValueError, match="mode"):
        PIIAnonymizer(PIIConfig(mode="mask"))
    with pytest.raises(ValueError, match="kinds"):
        PIIAnonymizer(PIIConfig(kinds=("email", "address")))
    with pytest.raises(ValueError, match="blocklist_max"):
        PIIAnonymizer(PIIConfig(blocklist_max=-1))


@pytest.fixture
def blocklist(tmp_path):
    path = tmp_path / "block.txt"
    path.write_text("# toxic words and sites\nbadword\nVile\nvery bad phrase\n\nbad-site.example\n"
                    "evil.example/path\n", encoding="utf-8")
    return str(path)


def test_blocklist_counts(blocklist):
    a = PIIAnonymizer(PIIConfig(blocklist_file=blocklist, blocklist_max=2))
    text = ("BadWord here, badwords and badword_x are not whole words; VILE! a Very Bad Phrase; "
            "see http://www.BAD-SITE.example/x and https://evil.example/path/y")
    assert a.blocked(text) == 5
    assert a.anonymize(text) == (None, {"blocklist": 5})
    assert a.anonymize("one badword, vile.")[0] == "one badword, vile."  # 2 hits: not above max
    assert PIIAnonymizer(PIIConfig()).blocked(text) == 0
    # A long list (another code path: one tokenization, set lookups) counts the same.
    with open(blocklist, "a", encoding="utf-8") as f:
        f.write("\n".join(f"filler{i}" for i in range(50)))
    assert PIIAnonymizer(PIIConfig(blocklist_file=blocklist)).blocked(text) == 5


def test_pickle_round_trip_and_determinism(blocklist):
    a = PIIAnonymizer(PIIConfig(mode="pseudonym", secret="s", blocklist_file=blocklist,
                                blocklist_max=3))
    b = pickle.loads(pickle.dumps(a))
    text = "mail a@b.com, 4111 1111 1111 1111, badword"
    assert b.anonymize(text) == a.anonymize(text) == a.anonymize(text)
    assert b.blocked(text) == 1


def test_long_tokens_are_linear(anon):
    # A long base64-like blob with '@' and keywords: the gates keep this from going quadratic.
    blob = "A" * 200_000 + "@" + "b" * 100_000 + " token " + "7" * 100_000
    out, _ = anon.anonymize(blob)
    assert out == blob


def test_bench_corpus_recall():
    spec = importlib.util.spec_from_file_location("pii_bench", REPO / "tools" / "bench" / "pii.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    docs, planted = bench.make_corpus(60, seed=3)
    anon = PIIAnonymizer(PIIConfig())
    stats = bench.evaluate(lambda t: anon.anonymize(t)[0], docs, planted)
    for kind in KINDS:
        assert stats[kind][0] > 0 and stats[kind][1] == stats[kind][0], (kind, stats[kind])
    assert stats["lookalike"][1] == 0, stats["lookalike"]
