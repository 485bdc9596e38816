"""Post-training records -> GPT-NeoX's pairwise (DPO / reward model) and KTO datasets.

One JSON object per .jsonl line, in the layouts of TRL and of GPT-NeoX's ``post-training/``:

- **pairwise** (``--chosen-key``/``--rejected-key``): ``{"prompt": "...", "chosen": "...",
  "rejected": "..."}``, or chat message lists: ``chosen``/``rejected`` whole conversations
  (UltraFeedback's layout, GPT-NeoX's examples; a ``prompt`` string beside them is ignored) or the
  answers to a ``prompt`` message list (TRL's explicit prompt; a ``prompt`` string before answers
  that start with the generation role becomes a user turn). Two documents per record, written
  to ``{prefix}_chosen_document`` / ``{prefix}_rejected_document`` with their
  ``..._label_document``: the labels train on the last generation-role turn (the answer being
  compared; GPT-NeoX's ``--only-last``) and are -100 on the prompt, which both share (checked).
  With ``for_rm`` (GPT-NeoX's ``--for-rm``, its reward-model data) every label is -100 and two
  eod tokens follow, the second trained: the score is read at the first.
- **KTO** (``--reward-key``): ``{"prompt", "completion", "label": true/false}`` (strings, or
  message lists), or GPT-NeoX's ``{"messages": [...], "reward": ...}`` with ``--chat-key``. Text
  and label documents like SFT's (``{prefix}_text_document``, ``{prefix}_label_document``) and
  ``{prefix}_reward_document``: one int32 value per document (GPT-NeoX's format; its dataset
  spreads it over the document's tokens), +1 for a desirable completion, -1 for an undesirable
  one (true/false; GPT-NeoX's ``--binary-reward``), or the whole number given.
- **chat** SFT records (``--chat-key``) go through here too, so that a chat template applies.

Strings are joined like SFT's prompt/completion (:mod:`megatron_lite.data.sft`, eod with
``append_eod``); message lists are rendered with the model's chat template when it has one
(:mod:`megatron_lite.data.chat_template`), else with SFT's ``<|role|>`` format.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from megatron_lite.data.chat_template import ChatTemplate, RenderedChat, encode_rendered
from megatron_lite.data.readers import (
    MISSING_KEY,
    NOTHING_TO_TRAIN,
    WRONG_TYPE,
    BadRecord,
    Document,
    RecordParser,
)
from megatron_lite.data.sft import (
    LABEL_DTYPE,
    Segment,
    chat_messages,
    encode_segments,
    render_chat,
    trained_turns,
)

SAME = "chosen equals rejected"  # skip reasons: fatal with --strict, like a missing key
PROMPTS_DIFFER = "prompts differ"
REWARD_DTYPE = np.int32  # GPT-NeoX's preprocess_data_with_chat_template.py writes rewards as int32


@dataclass(frozen=True)
class ChatOptions:
    """How records become documents (the flags of ``preprocess_data.py``)."""

    generation_role: str = "assistant"
    only_last_turn: bool = False
    append_eod: bool = False
    template: ChatTemplate | None = None
    fix: Callable[[str], str] | None = None  # --ftfy, applied before a template renders
    for_rm: bool = False


def label_key(name: str) -> str:
    """The output of a document's labels: ``text`` -> ``label``, ``chosen`` -> ``chosen_label``."""
    return "label" if name == "text" else f"{name}_label"


def record_outputs(mode: str, prefix: str, dtype: Any) -> dict[str, tuple[str, Any]]:
    """{builder name: (output prefix, dtype)} of a mode (GPT-NeoX's names, module docstring)."""
    names = ["chosen", "rejected"] if mode == "pairwise" else ["text"]
    outputs: dict[str, tuple[str, Any]] = {}
    for name in names:
        outputs[name] = (f"{prefix}_{name}_document", dtype)
        outputs[label_key(name)] = (f"{prefix}_{label_key(name)}_document", LABEL_DTYPE)
    if mode == "kto":
        outputs["reward"] = (f"{prefix}_reward_document", REWARD_DTYPE)
    return outputs


def _kind(value: Any) -> str:
    return "a string" if isinstance(value, str) else "a list of messages"


def _completion(record: dict, key: str) -> str | list[dict]:
    """A string, or a validated message list, under ``key``."""
    if key not in record:
        raise BadRecord(MISSING_KEY, f" {key!r}")
    if isinstance(record[key], str):
        return record[key]
    if isinstance(record[key], list):
        return chat_messages(record, key)
    raise BadRecord(WRONG_TYPE, f" {key!r} (a {type(record[key]).__name__}, not a string or a list of messages)")


def _prompt_string(record: dict, key: str, completion: str, completion_key: str) -> str:
    prompt = record.get(key)
    if not isinstance(prompt, str):
        detail = "" if key not in record else f" (a {type(prompt).__name__}, not a string)"
        raise BadRecord(MISSING_KEY, f" {key!r}{detail}")
    if not completion.strip():
        raise BadRecord(NOTHING_TO_TRAIN, f" (empty {completion_key!r})")
    return prompt


def _conversation(record: dict, prompt_key: str, messages: list[dict], role: str) -> tuple[list[dict], int]:
    """(the whole conversation, index of its first answer turn): module docstring's rules."""
    prompt = record.get(prompt_key)
    if prompt is None or prompt == []:
        return messages, 0
    if isinstance(prompt, list):
        prompt = chat_messages(record, prompt_key)
        return prompt + messages, len(prompt)
    if not isinstance(prompt, str):
        raise BadRecord(WRONG_TYPE, f" {prompt_key!r} (a {type(prompt).__name__}, not a string or a list of messages)")
    if messages[0]["role"] == role:  # answers only: the prompt string is the user's turn
        return [{"role": "user", "content": prompt}] + messages, 1
    return messages, 0  # the conversation holds its prompt (UltraFeedback repeats it beside)


def _text_doc(prompt: str, completion: str, opts: ChatOptions) -> list[Segment]:
    if opts.for_rm:  # GPT-NeoX's --for-rm: nothing trained but the second of two closing eods
        return [(prompt, False), (completion, False), (None, False), (None, True)]
    return [(prompt, False), (completion, True)] + ([(None, True)] if opts.append_eod else [])


def _chat_doc(messages: list[dict], opts: ChatOptions, first: int, only_last: bool) -> Any:
    """A conversation as segments (built-in format) or rendered by the model's template."""
    trained = trained_turns(messages, opts.generation_role, only_last, first)
    if opts.template is not None:
        if opts.fix is not None:  # before rendering: the turn boundaries are character offsets
            messages = [{**m, "content": opts.fix(m["content"])} for m in messages]
        return opts.template.chat(messages, trained)
    segments = render_chat(messages, opts.generation_role, only_last, first)
    if opts.for_rm:
        segments = [(text, False) for text, _ in segments] + [(None, False), (None, True)]
    return segments


def pairwise_parser(prompt_key: str, chosen_key: str, rejected_key: str, opts: ChatOptions) -> RecordParser:
    """Preference records -> ``{"docs": {"chosen": doc, "rejected": doc}, "reward": None}``."""
    def parse(record: dict) -> dict[str, Any]:
        chosen, rejected = _completion(record, chosen_key), _completion(record, rejected_key)
        if isinstance(chosen, str) != isinstance(rejected, str):
            raise BadRecord(WRONG_TYPE, f" ({chosen_key!r} is {_kind(chosen)}, {rejected_key!r} {_kind(rejected)})")
        if chosen == rejected:
            raise BadRecord(SAME, f" ({chosen_key!r} and {rejected_key!r} are the same)")
        if isinstance(chosen, str):
            prompt = _prompt_string(record, prompt_key, chosen, chosen_key)
            _prompt_string(record, prompt_key, rejected, rejected_key)
            return {"docs": {"chosen": _text_doc(prompt, chosen, opts),
                             "rejected": _text_doc(prompt, rejected, opts)}, "reward": None}
        docs, prompts = {}, []
        for name, messages in (("chosen", chosen), ("rejected", rejected)):
            conversation, first = _conversation(record, prompt_key, messages, opts.generation_role)
            answer = trained_turns(conversation, opts.generation_role, True, first)[0]
            prompts.append(conversation[:answer])
            docs[name] = _chat_doc(conversation, opts, first, True)
        if prompts[0] != prompts[1]:
            raise BadRecord(PROMPTS_DIFFER, f" ({chosen_key!r} and {rejected_key!r} differ before their last answer)")
        return {"docs": docs, "reward": None}

    return parse


def reward_value(record: dict, key: str, binary: bool = False) -> int:
    """The KTO reward of a record: true/false -> +1/-1, a whole number as it is; ``binary``:
    any truthy value -> +1, else -1 (GPT-NeoX's ``--binary-reward``)."""
    if key not in record:
        raise BadRecord(MISSING_KEY, f" {key!r}")
    value = record[key]
    if binary or isinstance(value, bool):
        return 1 if value else -1
    if isinstance(value, (int, float)) and float(value).is_integer() and abs(value) < 2**31:
        return int(value)
    raise BadRecord(WRONG_TYPE, f" {key!r} ({value!r}: not true/false or a whole number; reward documents "
                                "are int32, GPT-NeoX's format)")


def kto_parser(prompt_key: str, completion_key: str, reward_key: str, opts: ChatOptions,
               chat_key: str | None = None, binary: bool = False) -> RecordParser:
    """KTO records -> ``{"docs": {"text": doc}, "reward": +1/-1/...}`` (module docstring)."""
    def parse(record: dict) -> dict[str, Any]:
        reward = reward_value(record, reward_key, binary)
        if chat_key is not None:  # GPT-NeoX's layout: a conversation and its reward
            return {"docs": {"text": _chat_doc(chat_messages(record, chat_key), opts, 0, opts.only_last_turn)},
                    "reward": reward}
        completion = _completion(record, completion_key)
        if isinstance(completion, str):
            doc = _text_doc(_prompt_string(record, prompt_key, completion, completion_key), completion, opts)
        else:
            conversation, first = _conversation(record, prompt_key, completion, opts.generation_role)
            doc = _chat_doc(conversation, opts, first, opts.only_last_turn)
        return {"docs": {"text": doc}, "reward": reward}

    return parse


def chat_record_parser(chat_key: str, opts: ChatOptions) -> RecordParser:
    """SFT chat records -> ``{"docs": {"text": doc}, "reward": None}`` (template or built-in)."""
    def parse(record: dict) -> dict[str, Any]:
        return {"docs": {"text": _chat_doc(chat_messages(record, chat_key), opts, 0, opts.only_last_turn)},
                "reward": None}

    return parse


def record_chars(doc: Document) -> int:
    """Characters of a parsed record's documents (task sizing, --max-document-chars)."""
    total = 0
    for item in doc.texts["docs"].values():
        total += len(item.text) if isinstance(item, RenderedChat) else sum(len(t) for t, _ in item if t is not None)
    return total


def pack_records(batch: list[Document]) -> list[tuple[dict, int | None]]:
    """A task: each record's documents and reward (what crosses to a worker)."""
    return [(doc.texts["docs"], doc.texts["reward"]) for doc in batch]


def encode_docs(tokenizer: Any, docs: list[Any], dtype: Any,
                fix: Callable[[str], str] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Documents (segments or rendered chats) -> (tokens [T], labels [T] int32, lengths [D]), in order."""
    parts: list[Any] = [None] * len(docs)
    pieces = [i for i, d in enumerate(docs) if not isinstance(d, RenderedChat)]
    if pieces:  # ftfy here: rendered chats had it before their template ran
        tokens, labels, lengths = encode_segments(tokenizer, [docs[i] for i in pieces], dtype, fix)
        ends = np.cumsum(lengths)
        for i, end, n in zip(pieces, ends, lengths):
            parts[i] = (tokens[end - n : end], labels[end - n : end])
    rendered = [i for i, d in enumerate(docs) if isinstance(d, RenderedChat)]
    for i, (ids, labels_) in zip(rendered, encode_rendered(tokenizer, [docs[i] for i in rendered])):
        parts[i] = (np.asarray(ids, dtype=dtype), np.asarray(labels_, dtype=LABEL_DTYPE))
    lengths = np.array([len(p[0]) for p in parts], dtype=np.int64)  # [D]
    if not parts:
        return np.zeros(0, dtype), np.zeros(0, LABEL_DTYPE), lengths
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), lengths


def encode_records(tokenizer: Any, task: list[tuple[dict, int | None]], dtype: Any,
                   fix: Callable[[str], str] | None = None) -> tuple:
    """One worker task -> (names, tokens, labels, lengths, rewards or None); documents name-major."""
    names = list(task[0][0])  # every record of a mode has the same documents
    tokens, labels, lengths = encode_docs(tokenizer, [docs[name] for name in names for docs, _ in task], dtype, fix)
    rewards = None if task[0][1] is None else np.array([r for _, r in task], dtype=REWARD_DTYPE)
    return names, tokens, labels, lengths, rewards


def write_records(builders: dict, result: tuple) -> tuple[int, int]:
    """One task's documents into their outputs; returns (records, tokens)."""
    names, tokens, labels, lengths, rewards = result
    n = len(lengths) // len(names)
    bounds = np.concatenate([[0], np.cumsum(lengths)])  # [names * n + 1] token offsets
    for j, name in enumerate(names):
        a, b = bounds[j * n], bounds[(j + 1) * n]
        builders[name].add_documents(tokens[a:b], lengths[j * n : (j + 1) * n])
        builders[label_key(name)].add_documents(labels[a:b], lengths[j * n : (j + 1) * n])
    if rewards is not None:
        builders["reward"].add_documents(rewards, np.ones(n, dtype=np.int64))
    return n, int(lengths.sum())
