"""Quality and noise filters: each rule with a document it removes and one it keeps."""

from __future__ import annotations

import dataclasses
import importlib.util
import random
from pathlib import Path

import pytest

from megatron_lite.curation.config import (
    C4Config,
    GopherQualityConfig,
    GopherRepetitionConfig,
    LanguageConfig,
    load_config,
)
from megatron_lite.curation.filters import c4_filter, gopher_quality, gopher_repetition
from megatron_lite.curation.langid import LanguageFilter

REPO = Path(__file__).resolve().parents[2]


def bench_module():
    """tools/bench/curation.py: its seeded English-like text generator."""
    spec = importlib.util.spec_from_file_location("bench_curation", REPO / "tools" / "bench" / "curation.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def good() -> str:
    return bench_module().english(random.Random(0), 4)


def quality(text: str, **overrides) -> str | None:
    cfg = dataclasses.replace(GopherQualityConfig(), **overrides)
    rejection = gopher_quality(text, text.split(), cfg)
    return rejection.rule if rejection else None


def test_gopher_quality_keeps_prose(good):
    assert quality(good) is None


@pytest.mark.parametrize("text, rule", [
    ("The cat sat on the mat with the dog.", "min_words"),
    ("a b c d e f g h i j " * 10 + "the and with", "min_mean_word_length"),
    ("internationalization " * 60 + "the and", "max_mean_word_length"),
    ("#tag #word the and with were here " * 20, "max_symbol_word_ratio"),
    ("\n".join(f"- the item number {i} and more words here" for i in range(30)), "max_bullet_lines_ratio"),
    ("\n".join(f"the story goes on and on with line {i} ..." for i in range(30)), "max_ellipsis_lines_ratio"),
    ("the and with 1234 3456 5678 7890 1122 3344 5566 7788 9911 " * 8, "min_alpha_words_ratio"),
    ("cats dogs birds fish run jump swim fly quickly slowly " * 10, "min_stop_words"),
])
def test_gopher_quality_rules(text, rule):
    assert quality(text) == rule
    assert quality(text, **{rule: None}) != rule  # a rule set to None is not checked


def test_gopher_repetition(good):
    cfg = GopherRepetitionConfig()
    assert gopher_repetition(good, good.split(), cfg) is None
    lines = "\n".join(["Buy the best shoes in town today and save money."] * 10 + [good])
    assert gopher_repetition(lines, lines.split(), cfg).rule == "max_dup_line_ratio"
    top = good + " " + "the cat " * 200
    assert gopher_repetition(top, top.split(), cfg).rule == "max_top_2gram_char_ratio"
    # a repeated 12-word passage inside one line: no duplicate line or paragraph, no dominant 2-gram
    passage = "seven quiet rivers carry golden light across ancient stone bridges every evening"
    dup = good.replace("\n\n", " ") + (" " + passage) * 8
    assert gopher_repetition(dup, dup.split(), cfg).rule.startswith("max_dup_")


def test_c4_lines_and_documents(good):
    cfg = C4Config()
    text, removed, rejection = c4_filter(good + "\nPlease enable JavaScript to view this page.\n"
                                         "This site uses cookies to improve your experience.", cfg)
    assert (text, removed, rejection) == (good, 2, None)
    assert c4_filter(good + "\n\nLorem ipsum dolor sit amet.", cfg)[2].rule == "lorem_ipsum"
    assert c4_filter("One sentence only. And a second one here.", cfg)[2].rule == "min_sentences"
    assert c4_filter(good + " {", dataclasses.replace(cfg, curly_bracket=True))[2].rule == "curly_bracket"
    assert c4_filter(good + " {", cfg)[2] is None


def test_language_identification(good):
    lang = LanguageFilter(LanguageConfig())
    assert lang.rejects(*lang.label(good)) is None
    german = ("Der Ausschuss trifft sich nächste Woche, um das Budget für die neue Bibliothek und die "
              "Reparatur der alten Brücke zu besprechen. Die Stadt hat dafür viel Geld bereitgestellt.")
    label, _ = lang.label(german)
    assert label == "de" and lang.rejects(*lang.label(german))
    assert lang.label("\x07 control \x00 characters only")[0]  # CLD2's refusal is handled


def test_code_preset_keeps_code():
    code = (REPO / "megatron_lite" / "curation" / "dedup.py").read_text()
    web, preset = load_config(None, "web"), load_config(None, "code")
    assert gopher_quality(code, code.split(), web.gopher_quality) is not None or \
        c4_filter(code, dataclasses.replace(web.c4, curly_bracket=True))[2] is not None
    assert gopher_quality(code, code.split(), preset.gopher_quality) is None
    assert not preset.gopher_repetition.enabled and not preset.c4.enabled and not preset.language.enabled
