"""Decontamination: n-gram hits name the eval file and item, normalization as GPT-3 / lm-eval,
cut mode, lm-eval task documents read offline, clear errors."""

from __future__ import annotations

import json
import pickle

import pytest

from megatron_lite.curation.decontaminate import Decontaminator, ngram_hashes, normalize
from megatron_lite.data.readers import InputError
from tests.conftest import REPO

TASKS = REPO / "tests" / "fixtures" / "lm_eval_tasks"
# 20 words each; no word repeats across items, so overlaps are exactly what a test plants.
ITEMS = [
    {"question": "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike "
                 "november oscar papa quebec romeo sierra tango", "label": 0},
    {"question": "which river flows through the ancient capital city of the northern kingdom before "
                 "reaching the cold grey sea at last", "answer": ["the long river"]},
    {"goal": "To polish an old silver spoon until it shines brightly you should first rub it gently "
             "with baking soda paste", "sol1": "a", "sol2": "b"},
]
FILLER = ("lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut "
          "labore et dolore magna aliqua ")


def filler(chars: int) -> str:
    return (FILLER * (chars // len(FILLER) + 1))[:chars].rsplit(" ", 1)[0]


@pytest.fixture
def eval_file(tmp_path):
    path = tmp_path / "eval.jsonl"
    lines = [json.dumps(ITEMS[0]), "", json.dumps(ITEMS[1]), json.dumps(ITEMS[2])]  # a blank line
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def words_of(item: int, start: int, count: int) -> str:
    text = next(iter(v for k, v in ITEMS[item].items() if k in ("question", "goal")))
    return " ".join(text.split()[start:start + count])


def test_planted_13_gram_names_file_and_item(eval_file):
    deco = Decontaminator.from_files([eval_file])
    planted = words_of(2, 3, 13)
    text, hit = deco.check(f"{filler(300)} {planted} {filler(100)}")
    assert text is None
    assert hit["eval_file"] == eval_file and hit["item"] == 2  # records counted, the blank line not
    assert hit["ngram"] == " ".join(normalize(planted))
    assert hit["matches"] == 1
    assert deco.summary() == {"eval_files": [eval_file], "items": 3, "short_items": 0,
                              "ngrams": 3 * (20 - 13 + 1), "ngram": 13, "mode": "drop"}
    clean = f"{filler(500)}"
    assert deco.check(clean) == (clean, None)


def test_case_and_punctuation_do_not_hide_a_hit(eval_file):
    deco = Decontaminator.from_files([eval_file])
    words = words_of(1, 0, 14).split()
    noisy = " ".join(w.upper() if i % 2 else f"“{w.capitalize()}”," for i, w in enumerate(words))
    noisy = noisy.replace(" ", " — ", 1)  # a word of punctuation only disappears
    _, hit = deco.check(f"Intro: {noisy}!")
    assert hit is not None and hit["item"] == 1 and hit["matches"] == 2


def test_a_12_gram_overlap_is_not_a_hit(eval_file):
    deco = Decontaminator.from_files([eval_file])
    text = f"zulu {words_of(0, 4, 12)} yankee {words_of(1, 0, 12)} xray"
    assert deco.check(text) == (text, None)
    assert Decontaminator.from_files([eval_file], ngram=12).check(text)[1] is not None


def test_cut_mode_removes_the_span_with_its_margin(eval_file):
    deco = Decontaminator.from_files([eval_file], mode="cut")
    head, tail, planted = filler(700), filler(650).upper(), words_of(0, 2, 15)
    text, hit = deco.check(f"{head} {planted} {tail}")
    assert hit["item"] == 0 and hit["matches"] == 3
    before, after = text.split("\n\n")  # 200 characters each side go, and the word cut into
    assert head.startswith(before) and len(head) - 200 - 12 <= len(before) <= len(head) + 1 - 200
    assert tail.endswith(after) and len(tail) - 200 - 12 <= len(after) <= len(tail) + 1 - 200
    assert not set(normalize(planted)) & set(normalize(text))
    # Too short once cut (no piece of 200 characters), or cut in too many places: dropped.
    assert deco.check(f"{filler(350)} {planted} {filler(350)}") == (None, hit)
    far = f"{head} {planted} {filler(800)} {words_of(2, 0, 13)} {tail}"
    assert len(deco.check(far)[0].split("\n\n")) == 3
    strict = Decontaminator.from_files([eval_file], mode="cut", max_pieces=1)
    assert strict.check(far)[0] is None


def test_same_ngrams_as_lm_eval_janitor_on_ascii(capsys):
    janitor_module = pytest.importorskip("lm_eval.decontamination.janitor")  # prints a warning
    text = ("The QUICK brown fox -- it's 'jumping' over the lazy dog; (twice!) and then: "
            "again, & again... until #42 is reached_by noon? Yes\ttabs\nand newlines too.")
    janitor = janitor_module.Janitor(ngram_n=5)
    janitor.register_contaminant_python(text)
    words = normalize(text)
    ours = {" ".join(words[i:i + 5]) for i in range(len(words) - 4)}
    assert ours == janitor.dirt_ngrams and len(ours) > 10
    capsys.readouterr()


def test_pickle_determinism_and_first_item_wins(tmp_path, eval_file):
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"text": ITEMS[1]["question"]}) + "\n")
    deco = Decontaminator.from_files([eval_file, str(other)])
    copy = pickle.loads(pickle.dumps(deco))
    text = words_of(1, 0, 13)
    assert copy.check(text) == deco.check(text) == (None, {"eval_file": eval_file, "item": 1,
                                                           "ngram": text, "matches": 1})
    again = Decontaminator.from_files([eval_file, str(other)])
    assert (again._keys == deco._keys).all() and (again._owners == deco._owners).all()
    assert ngram_hashes(["a"] * 13, 13).tolist() == ngram_hashes(["a"] * 13, 13).tolist()  # no salt


def test_compressed_eval_set_and_all_fields(tmp_path):
    import zstandard

    path = tmp_path / "eval.jsonl.zst"
    record = {"id": "x", "nested": {"passage_text": ITEMS[0]["question"]}}
    path.write_bytes(zstandard.ZstdCompressor().compress((json.dumps(record) + "\n").encode()))
    deco = Decontaminator.from_files([str(path)])  # none of the keys: every string field
    assert deco.check(words_of(0, 0, 13))[1]["eval_file"] == str(path)
    short = Decontaminator.from_files([str(path)], text_keys=("id",))
    assert short.summary()["short_items"] == 1 and short.summary()["ngrams"] == 0


def test_bad_eval_sets_are_clear_errors(tmp_path):
    with pytest.raises(InputError, match="evaluation set not found"):
        Decontaminator.from_files([str(tmp_path / "missing.jsonl")])
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"text": \n')
    with pytest.raises(InputError, match=r"bad.jsonl:2: not a JSON record"):
        Decontaminator.from_files([str(bad)])
    with pytest.raises(InputError, match="is a .jsonl file"):
        Decontaminator.from_files([str(tmp_path / "eval.txt")])
    with pytest.raises(ValueError, match="mode 'trim'"):
        Decontaminator(mode="trim")


def test_lm_eval_task_documents_offline(tmp_path):
    pytest.importorskip("lm_eval")
    deco = Decontaminator.from_lm_eval_task("piqa_style", ngram=5, include_path=str(TASKS),
                                            include_defaults=False)
    assert deco.summary()["eval_files"] == ["lm_eval:piqa_style:validation"]
    _, hit = deco.check("Tip: to cool a drink quickly, put it in ice water with salt.")
    assert hit["eval_file"] == "lm_eval:piqa_style:validation" and hit["item"] == 1
    # A task whose data would have to be downloaded: one error naming it, nothing fetched.
    (tmp_path / "remote.yaml").write_text(
        "task: remote_style\ndataset_path: megatron-lite-tests/no-such-dataset\n"
        "output_type: multiple_choice\nvalidation_split: validation\ndoc_to_text: '{{q}}'\n"
        "doc_to_target: 0\ndoc_to_choice: ['a', 'b']\n")
    with pytest.raises(InputError, match="lm-eval task remote_style: its data is not on disk"):
        Decontaminator.from_lm_eval_task("remote_style", include_path=str(tmp_path), include_defaults=False)
    with pytest.raises(InputError, match="unknown lm-eval task 'piqa_styl'; did you mean piqa_style"):
        Decontaminator.from_lm_eval_task("piqa_styl", include_path=str(TASKS), include_defaults=False)
