"""Supervised fine-tuning records -> tokens plus GPT-NeoX label sequences (prompt tokens masked).

Two record shapes (one JSON object per .jsonl line):

- prompt/completion: ``{"prompt": "Q: 2+2?\\nA:", "completion": " 4"}`` (the keys are options).
  The document is the prompt followed directly by the completion (no separator is added: put
  it in the data); the prompt is masked, the completion (and the eod token after it, with
  ``append_eod``) is trained on.
- chat: ``{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", ...}]}``.
  Each turn is rendered with :data:`CHAT_TURN_HEADER` (``<|user|>\\n``), then its content,
  then the eod token, which ends every turn (generation stops at eod). The content and eod of
  the ``generation_role`` turns (``assistant``) are trained on, or, with ``only_last_turn``,
  those of the last such turn only; headers and every other turn are masked. So a two-turn chat
  is ``<|user|>\\nhi<eod><|assistant|>\\nhello<eod>`` with loss on ``hello<eod>`` alone, and a
  model is prompted at inference with ``...<|assistant|>\\n``.

A document is a list of :data:`Segment` pieces, tokenized one by one and concatenated: the
prompt's tokens are exactly ``tokenize(prompt)``, what the model sees at inference, and the
prompt/completion boundary is always a token boundary. A tokenizer post-processor (a BOS a
``tokenizers`` JSON file adds, say) applies to the first piece only.

The label sequence has one entry per token (same document sizes): the token id where the loss
counts, :data:`IGNORE_INDEX` (-100) where it does not; hence int32 (-100 does not fit the uint16
of the token file). Training shifts it like the tokens (``labels = label[:, 1:]``), GPT-NeoX's
``train_label_data_paths`` convention, so the label of position ``i`` says whether token ``i``
is a target.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from megatron_lite.data.readers import (
    EMPTY,
    MISSING_KEY,
    NOTHING_TO_TRAIN,
    WRONG_TYPE,
    BadRecord,
    RecordParser,
    string_fields,
)

IGNORE_INDEX = -100
LABEL_DTYPE = np.int32
CHAT_TURN_HEADER = "<|{role}|>\n"

# (text, trained on?); text None stands for the tokenizer's eod token.
Segment = tuple[str | None, bool]


def prompt_completion_parser(prompt_key: str = "prompt", completion_key: str = "completion",
                             append_eod: bool = False) -> RecordParser:
    """Records with a string prompt and a non-empty string completion -> ``{"segments": ...}``."""
    strings = string_fields([prompt_key, completion_key])

    def parse(record: dict) -> dict[str, Any]:
        fields = strings(record)  # BadRecord(MISSING_KEY) for a missing or non-string value
        if not fields[completion_key].strip():
            raise BadRecord(NOTHING_TO_TRAIN, f" (empty {completion_key!r})")
        segments: list[Segment] = [(fields[prompt_key], False), (fields[completion_key], True)]
        if append_eod:
            segments.append((None, True))  # learning to stop is part of the completion
        return {"segments": segments}

    return parse


def chat_parser(chat_key: str = "messages", generation_role: str = "assistant",
                only_last_turn: bool = False) -> RecordParser:
    """Records with a list of ``{"role", "content"}`` messages -> ``{"segments": ...}``."""
    def parse(record: dict) -> dict[str, Any]:
        return {"segments": render_chat(chat_messages(record, chat_key), generation_role, only_last_turn)}

    return parse


def chat_messages(record: dict, key: str) -> list[dict]:
    """The validated message list under ``key`` (BadRecord naming the first problem)."""
    if key not in record:
        raise BadRecord(MISSING_KEY, f" {key!r}")
    messages = record[key]
    if not isinstance(messages, list):
        raise BadRecord(WRONG_TYPE, f" {key!r} (a {type(messages).__name__}, not a list of messages)")
    if not messages:
        raise BadRecord(EMPTY, f" ({key!r} is an empty list)")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise BadRecord(WRONG_TYPE, f" '{key}[{i}]' (a {type(message).__name__}, not an object)")
        for field in ("role", "content"):
            if field not in message:
                raise BadRecord(MISSING_KEY, f" '{key}[{i}].{field}'")
            if not isinstance(message[field], str):
                raise BadRecord(WRONG_TYPE, f" '{key}[{i}].{field}' (a {type(message[field]).__name__}, not a string)")
    return messages


def trained_turns(messages: list[dict], generation_role: str = "assistant", only_last_turn: bool = False,
                  first: int = 0) -> list[int]:
    """Indices of the turns trained on: the ``generation_role`` turns from ``first`` on (the turns
    before it are an explicit prompt), or the last of them; BadRecord when there is none."""
    trained = [i for i, m in enumerate(messages) if i >= first and m["role"] == generation_role]
    if not trained:
        raise BadRecord(NOTHING_TO_TRAIN, f" (no {generation_role!r} turn)")
    return trained[-1:] if only_last_turn else trained


def render_chat(messages: list[dict], generation_role: str = "assistant",
                only_last_turn: bool = False, first: int = 0) -> list[Segment]:
    """The chat template (module docstring) as segments; BadRecord without a turn to train on."""
    trained = trained_turns(messages, generation_role, only_last_turn, first)
    segments: list[Segment] = []
    for i, message in enumerate(messages):
        train = i in trained
        # The header stays masked even on trained turns: the prompt at inference ends with it.
        segments += [(CHAT_TURN_HEADER.format(role=message["role"]), False),
                     (message["content"], train), (None, train)]
    return segments


def encode_segments(tokenizer: Any, docs: list[list[Segment]], dtype: Any,
                    fix: Callable[[str], str] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Documents of segments -> (tokens [T] ``dtype``, labels [T] int32, tokens per document [D]).

    Two tokenizer calls per batch, not one per segment: first pieces with the tokenizer's special
    tokens, the rest without (module docstring).
    """
    firsts: list[str] = []
    rests: list[str] = []
    for doc in docs:
        texts = [text for text, _ in doc if text is not None]
        if fix is not None:
            texts = [fix(t) for t in texts]
        firsts += texts[:1]
        rests += texts[1:]
    first_ids = iter(tokenizer.tokenize_batch(firsts) if firsts else [])
    rest_ids = iter(tokenizer.tokenize_batch(rests, add_special_tokens=False) if rests else [])
    tokens: list[int] = []
    labels: list[int] = []
    lengths = np.zeros(len(docs), dtype=np.int64)  # [D]
    for d, doc in enumerate(docs):
        start, seen_text = len(tokens), False
        for text, train in doc:
            if text is None:
                ids = [tokenizer.eod]
            else:
                ids = next(rest_ids if seen_text else first_ids)
                seen_text = True
            tokens += ids
            labels += ids if train else [IGNORE_INDEX] * len(ids)
        lengths[d] = len(tokens) - start
    return np.asarray(tokens, dtype=dtype), np.asarray(labels, dtype=LABEL_DTYPE), lengths
