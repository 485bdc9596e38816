"""Decontamination: drop (or cut) training documents that share an n-gram with an evaluation set.

GPT-3's method (Brown et al. 2020, appendix C), as lm-evaluation-harness's ``decontamination``
package implements it: the texts of every evaluation item are normalized and split into word
n-grams (13 by default); a training document holding any of them is contaminated.

Normalization (:func:`normalize`): lowercase, delete punctuation, split on whitespace. On ASCII
text this is exactly lm-eval's ``Janitor.normalize_string`` + ``str.split`` (its table lowercases
A-Z and deletes ``string.punctuation``; a test checks that both give the same n-grams). Beyond
ASCII it also lowercases every letter and deletes every Unicode punctuation or symbol character
(categories P* and S*, which on ASCII are exactly ``string.punctuation``), so that a copy with
curly quotes or dashes still matches. lm-eval's code is not imported: importing
``lm_eval.decontamination.janitor`` prints a warning on stdout (pip never installs its C++
helper), ``Janitor.clean`` prints on every call, keeps n-grams as Python strings, does not say
which n-gram matched, and normalizes a punctuation-only word to an empty word when cleaning but
drops it when registering (so ``a - b`` never matches ``a b``); here both sides share one function.

Memory: only the evaluation side is held, as the 64-bit hash of each distinct n-gram (a
polynomial of its words' 64-bit hashes: ``curation/hashing.py``) in a sorted numpy array, with its first item (file index,
item index) beside it: 16 bytes per n-gram, the same in every process (Python's ``hash`` of a
``str`` is salted per process, so workers would disagree). The corpus side streams: one
document's words at a time. A 64-bit collision is a false hit about once per 1.8e19 / (eval
n-grams) corpus n-grams: none expected for eval sets of millions of n-grams.

Items with fewer words than ``ngram`` add no n-gram (as in lm-eval) and are counted
(``summary()["short_items"]``). Each text field of an item is split on its own: n-grams do not
span fields.

Cut mode (GPT-3 / lm-eval ``Janitor``): each contaminated n-gram is removed with
``window_chars`` (200) characters on each side, widened to whole words; overlapping removals
merge. The document is dropped when more than ``max_pieces`` (10) separate ranges would be
removed (lm-eval drops past 10 matching n-grams, which a single 23-word overlap reaches: that is
dropping, not cutting), or when no piece of at least ``min_piece_chars`` (200) characters
remains; shorter pieces are dropped (as lm-eval's ``minimum_slice_length``). The kept pieces are
joined with a blank line, so that text from both sides of a cut does not read as one sentence.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import os
import re
import unicodedata
from array import array
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from megatron_lite.curation.hashing import ngram_combine, word_hashes
from megatron_lite.data.readers import InputError, binary_lines, input_kind
from megatron_lite.utils.logging import get_logger

logger = get_logger(__name__)

DEFAULT_NGRAM = 13
MODES = ("drop", "cut")
LM_EVAL_PREFIX = "lm_eval:"  # from_files: "lm_eval:TASK" names an lm-eval task, not a file
# Where evaluation sets keep their text (lm-eval / Hugging Face dataset fields); other fields
# (ids, labels) are left out. A record with none of them gives all its strings.
DEFAULT_TEXT_KEYS = ("text", "question", "answer", "answers", "context", "goal", "sol1", "sol2",
                     "passage", "query", "ctx", "endings", "choices", "options", "sentence",
                     "sentence1", "sentence2", "premise", "hypothesis", "article", "document",
                     "story", "input", "prompt", "target", "page", "paragraph", "claim")
# lm-eval Janitor's defaults (window_to_remove, too_dirty_cutoff, minimum_slice_length).
WINDOW_CHARS, MAX_PIECES, MIN_PIECE_CHARS = 200, 10, 200
_ITEM_BITS = 32  # an owner is (file index << 32) | item index
_WORD = re.compile(r"\S+")  # the words of str.split(), with their offsets


class _Deleter(dict):
    """``str.translate`` table: punctuation and symbol characters are deleted, others kept. Each
    character's Unicode category is looked up once per process, on first sight."""

    def __missing__(self, code: int) -> int | None:
        value = None if unicodedata.category(chr(code))[0] in "PS" else code
        self[code] = value
        return value


_DELETE = _Deleter()


def normalize(text: str) -> list[str]:
    """The words of ``text`` as GPT-3 / lm-eval compare them: lowercased, punctuation and symbols
    deleted, split on whitespace (a word of punctuation only disappears)."""
    return text.lower().translate(_DELETE).split()


def _word_spans(text: str) -> tuple[list[str], list[int], list[int]]:
    """:func:`normalize`'s words with where each starts and ends in ``text``. The same words:
    deleting characters inside a word never creates or removes whitespace."""
    words: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    for match in _WORD.finditer(text):
        word = match.group().lower().translate(_DELETE)
        if word:
            words.append(word)
            starts.append(match.start())
            ends.append(match.end())
    return words, starts, ends


def ngram_hashes(words: list[str], n: int) -> np.ndarray:
    """[len(words) - n + 1] uint64: a 64-bit hash of each n-gram (``curation/hashing.py``)."""
    if len(words) < n:
        return np.zeros(0, dtype=np.uint64)
    return ngram_combine(word_hashes(words), n)


def _strings(value: Any) -> Iterator[str]:
    """Every string in ``value``: itself, or inside lists and dicts (answers, choices)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for inner in value.values():
            yield from _strings(inner)
    elif isinstance(value, (list, tuple)):
        for inner in value:
            yield from _strings(inner)


def record_texts(record: dict, text_keys: Iterable[str] | None = DEFAULT_TEXT_KEYS) -> list[str]:
    """The texts of an evaluation record: the strings under ``text_keys`` (in lists and dicts
    too), or every string of the record when ``text_keys`` is None or none of them holds one."""
    texts = list(_strings([record[k] for k in text_keys if k in record])) if text_keys is not None else []
    return texts or list(_strings(record))


def _word_start(text: str, i: int) -> int:
    while 0 < i < len(text) and not text[i - 1].isspace() and not text[i].isspace():
        i -= 1
    return i


def _word_end(text: str, i: int) -> int:
    while 0 < i < len(text) and not text[i - 1].isspace() and not text[i].isspace():
        i += 1
    return i


class Decontaminator:
    """The n-grams of evaluation sets, and :meth:`check` to judge a training document.

    Build it with :meth:`from_files` / :meth:`from_lm_eval_task` (or ``add_*`` then use it).
    Picklable (numpy arrays and lists: sent once to each worker) and deterministic: an n-gram
    found in several items is reported against the first one registered.
    """

    def __init__(self, ngram: int = DEFAULT_NGRAM, mode: str = "drop", window_chars: int = WINDOW_CHARS,
                 max_pieces: int = MAX_PIECES, min_piece_chars: int = MIN_PIECE_CHARS) -> None:
        if mode not in MODES:
            raise ValueError(f"decontamination mode {mode!r} is not one of {', '.join(MODES)}")
        if ngram < 1 or window_chars < 0 or max_pieces < 1 or min_piece_chars < 0:
            raise ValueError("decontamination: ngram and max_pieces must be at least 1, "
                             "window_chars and min_piece_chars at least 0")
        self.ngram, self.mode = ngram, mode
        self.window_chars, self.max_pieces, self.min_piece_chars = window_chars, max_pieces, min_piece_chars
        self.eval_files: list[str] = []
        self.items = self.short_items = 0
        self._keys = np.zeros(0, dtype=np.uint64)  # [ngrams] sorted, distinct
        self._owners = np.zeros(0, dtype=np.uint64)  # [ngrams] (file << 32) | item
        self._new_keys, self._new_owners = array("Q"), array("Q")  # registered, not yet sorted in

    @classmethod
    def from_files(cls, paths: list[str], ngram: int = DEFAULT_NGRAM, mode: str = "drop",
                   text_keys: tuple | None = DEFAULT_TEXT_KEYS, *, include_path: str | list[str] | None = None,
                   **options: int) -> Decontaminator:
        """From evaluation sets: .jsonl files (.zst / .gz too; every record is an item) and
        ``lm_eval:TASK`` entries (:meth:`add_lm_eval_task`, with ``include_path``). ``options``:
        ``window_chars``, ``max_pieces``, ``min_piece_chars`` (cut mode)."""
        if not paths:
            raise InputError("decontamination: no evaluation sets given")
        self = cls(ngram, mode, **options)
        for path in paths:
            if path.startswith(LM_EVAL_PREFIX):
                self.add_lm_eval_task(path[len(LM_EVAL_PREFIX):], include_path=include_path)
            else:
                self.add_jsonl(path, text_keys)
        return self._ready()

    @classmethod
    def from_lm_eval_task(cls, name: str, ngram: int = DEFAULT_NGRAM, mode: str = "drop", *,
                          include_path: str | list[str] | None = None, include_defaults: bool = True,
                          text_keys: tuple | None = None, **options: int) -> Decontaminator:
        """From the validation and test documents of an lm-eval task or group whose data is on
        disk (see :meth:`add_lm_eval_task`)."""
        self = cls(ngram, mode, **options)
        self.add_lm_eval_task(name, include_path, include_defaults, text_keys)
        return self._ready()

    def _ready(self) -> Decontaminator:
        self._freeze()
        s = self.summary()
        logger.info("decontamination: %d distinct %d-grams from %d items of %s (%d items shorter "
                    "than %d words add none)", s["ngrams"], self.ngram, s["items"],
                    ", ".join(self.eval_files), s["short_items"], self.ngram)
        return self

    def add_item(self, texts: Iterable[str], eval_file: str, item: int) -> int:
        """Register one evaluation item's texts; returns how many n-grams they hold."""
        if eval_file not in self.eval_files:
            self.eval_files.append(eval_file)
        file_index = self.eval_files.index(eval_file)
        hashes = [ngram_hashes(normalize(text), self.ngram) for text in texts]
        count = sum(len(h) for h in hashes)
        self.items += 1
        if count == 0:
            self.short_items += 1
            return 0
        for h in hashes:
            self._new_keys.frombytes(h.tobytes())
        self._new_owners.extend([file_index << _ITEM_BITS | item] * count)
        return count

    def add_jsonl(self, path: str, text_keys: tuple | None = DEFAULT_TEXT_KEYS) -> int:
        """Every record of an evaluation .jsonl (item = its 0-based index among the records);
        returns the number of items. A bad line is an error: a skipped item would go unchecked."""
        if input_kind(path) != "jsonl":
            raise InputError(f"{path}: an evaluation set is a .jsonl file (.jsonl, .jsonl.zst, .jsonl.gz) "
                             f"or {LM_EVAL_PREFIX}TASK")
        if not os.path.isfile(path):
            raise InputError(f"evaluation set not found: {path}")
        item = 0
        for lineno, raw in enumerate(binary_lines(path), start=1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError both
                raise InputError(f"{path}:{lineno}: not a JSON record ({exc})") from None
            if not isinstance(record, dict):
                raise InputError(f"{path}:{lineno}: not a JSON object (a JSON {type(record).__name__})")
            self.add_item(record_texts(record, text_keys), path, item)
            item += 1
        if item == 0:
            raise InputError(f"{path}: no evaluation items")
        return item

    def add_lm_eval_task(self, name: str, include_path: str | list[str] | None = None,
                         include_defaults: bool = True, text_keys: tuple | None = None) -> int:
        """The validation and test documents of an lm-eval task (every leaf task of a group), read
        offline: a task whose data is not on disk is one :class:`InputError` naming it. Items are
        reported as ``lm_eval:TASK:SPLIT`` and the document's index; ``text_keys`` None: every
        string field of the document. Returns the number of items."""
        tasks = _lm_eval_tasks(name, include_path, include_defaults)
        try:
            with _offline():
                splits = [(task, split, docs) for task in sorted(tasks) for split, docs in _eval_splits(tasks[task])]
        except Exception as exc:  # noqa: BLE001 - datasets raises many kinds; all mean "no data here"
            raise InputError(_not_local(name, exc)) from exc
        items = 0
        for task, split, docs in splits:
            label = f"{LM_EVAL_PREFIX}{task}:{split}"
            for index, doc in enumerate(docs):
                texts = record_texts(doc, text_keys) if isinstance(doc, dict) else list(_strings(doc))
                self.add_item(texts, label, index)
                items += 1
        if items == 0:
            raise InputError(f"lm-eval task {name}: no validation or test documents")
        return items

    def summary(self) -> dict[str, Any]:
        """What was loaded: evaluation sets, items, short items, distinct n-grams, settings."""
        return {"eval_files": list(self.eval_files), "items": self.items, "short_items": self.short_items,
                "ngrams": len(self._keys) + len(self._new_keys), "ngram": self.ngram, "mode": self.mode}

    def _freeze(self) -> None:
        """Sort newly registered n-grams into the lookup arrays (the first owner of a key wins)."""
        if not self._new_keys:
            return
        keys = np.concatenate([self._keys, np.frombuffer(self._new_keys, dtype=np.uint64)])
        owners = np.concatenate([self._owners, np.frombuffer(self._new_owners, dtype=np.uint64)])
        order = np.argsort(keys, kind="stable")  # equal keys stay in registration order
        keys, owners = keys[order], owners[order]
        first = np.ones(len(keys), dtype=bool)
        first[1:] = keys[1:] != keys[:-1]
        self._keys, self._owners = keys[first], owners[first]
        self._new_keys, self._new_owners = array("Q"), array("Q")

    def __getstate__(self) -> dict[str, Any]:
        self._freeze()
        return dict(self.__dict__)

    def check(self, text: str) -> tuple[str | None, dict | None]:
        """``(text, None)``: clean. ``(None, hit)``: drop it. Cut mode: ``(cut text, hit)`` with the
        contaminated spans removed. ``hit``: ``eval_file``, ``item`` (0-based), ``ngram`` (the
        first matching n-gram, normalized) and ``matches`` (contaminated n-grams in the text)."""
        self._freeze()
        if self.mode == "cut":
            words, starts, ends = _word_spans(text)
        else:
            words, starts, ends = normalize(text), [], []
        hashes = ngram_hashes(words, self.ngram)  # [windows]
        if len(hashes) == 0 or len(self._keys) == 0:
            return text, None
        pos = np.minimum(np.searchsorted(self._keys, hashes), len(self._keys) - 1)  # [windows]
        where = np.flatnonzero(self._keys[pos] == hashes)
        if len(where) == 0:
            return text, None
        first = int(where[0])
        owner = int(self._owners[pos[first]])
        hit = {"eval_file": self.eval_files[owner >> _ITEM_BITS], "item": owner & ((1 << _ITEM_BITS) - 1),
               "ngram": " ".join(words[first:first + self.ngram]), "matches": len(where)}
        if self.mode == "drop":
            return None, hit
        return self._cut(text, [(starts[i], ends[i + self.ngram - 1]) for i in where.tolist()]), hit

    def _cut(self, text: str, spans: list[tuple[int, int]]) -> str | None:
        """``text`` without each span and ``window_chars`` around it (whole words), or None when
        that removes more than ``max_pieces`` ranges or leaves no piece of ``min_piece_chars``."""
        ranges: list[list[int]] = []
        for start, end in spans:  # in text order: starts and ends both increase
            lo = _word_start(text, max(0, start - self.window_chars))
            hi = _word_end(text, min(len(text), end + self.window_chars))
            if ranges and lo <= ranges[-1][1]:
                ranges[-1][1] = max(ranges[-1][1], hi)
            else:
                ranges.append([lo, hi])
        if len(ranges) > self.max_pieces:
            return None
        pieces: list[str] = []
        kept_from = 0
        for lo, hi in [*ranges, [len(text), len(text)]]:
            piece = text[kept_from:lo].strip()
            if len(piece) >= self.min_piece_chars:
                pieces.append(piece)
            kept_from = hi
        return "\n\n".join(pieces) if pieces else None


@contextlib.contextmanager
def _offline() -> Iterator[None]:
    """Hugging Face datasets and hub in offline mode for the block: a dataset not in the local
    cache fails at once instead of being downloaded. Their flags are read when they are
    imported, so the module attributes are set too (and restored after)."""
    import datasets.config
    import huggingface_hub.constants

    flags = [(datasets.config, "HF_HUB_OFFLINE"), (datasets.config, "HF_DATASETS_OFFLINE"),
             (huggingface_hub.constants, "HF_HUB_OFFLINE")]
    saved_flags = [getattr(module, attr, None) for module, attr in flags]
    saved_env = {key: os.environ.get(key) for key in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
    os.environ.update({key: "1" for key in saved_env})
    for module, attr in flags:
        setattr(module, attr, True)
    try:
        yield
    finally:
        for (module, attr), value in zip(flags, saved_flags):
            setattr(module, attr, value)
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _not_local(name: str, exc: BaseException) -> str:
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
    return (f"lm-eval task {name}: its data is not on disk ({type(exc).__name__}: {first}). "
            "Decontamination reads lm-eval tasks offline only: run the task once where the network "
            "is reachable and copy the Hugging Face datasets cache (HF_DATASETS_CACHE) here, or give "
            "the evaluation set as a .jsonl file")


def _lm_eval_tasks(name: str, include_path: str | list[str] | None, include_defaults: bool) -> dict[str, Any]:
    """{task name: lm-eval Task} of a task, or of every leaf task of a group or tag, loaded offline."""
    with _offline():
        from lm_eval.tasks import TaskManager

        manager = TaskManager(include_path=include_path, include_defaults=include_defaults)
        if name not in manager.all_tasks:
            close = difflib.get_close_matches(name, sorted(manager.all_tasks), n=5, cutoff=0.6)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise InputError(f"unknown lm-eval task {name!r}{hint}")
        try:
            return dict(manager.load([name])["tasks"])
        except Exception as exc:  # noqa: BLE001 - datasets raises many kinds; all mean "no data here"
            raise InputError(_not_local(name, exc)) from exc


def _eval_splits(task: Any) -> Iterator[tuple[str, Iterable[Any]]]:
    """(split name, documents) of the splits a task is evaluated on: validation and test."""
    config = getattr(task, "config", None)
    if task.has_validation_docs():
        yield getattr(config, "validation_split", None) or "validation", task.validation_docs()
    if task.has_test_docs():
        yield getattr(config, "test_split", None) or "test", task.test_docs()
