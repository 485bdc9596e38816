"""Chat records rendered with the model's own chat template (a Hugging Face ``tokenizer_config.json``).

GPT-NeoX's ``tools/datasets/preprocess_data_with_chat_template.py`` (``build_chat``) is the
reference, and this module writes what it writes:

- the template is the tokenizer directory's (``chat_template`` in ``tokenizer_config.json``, or
  ``chat_template.jinja``), rendered by ``transformers`` itself (``AutoTokenizer`` +
  ``apply_chat_template``, with the directory's special tokens), so the text is exactly
  ``transformers``' and nothing is downloaded;
- the ids are those of the whole rendered text, tokenized without added special tokens, i.e.
  ``apply_chat_template(messages, tokenize=True)``'s ids (any ``{{ bos_token }}`` comes from the
  template's text, as in ``transformers``);
- turn ``i`` is the text that rendering ``messages[:i + 1]`` adds to ``messages[:i]``, with
  ``add_generation_prompt`` when the next turn is the generation role's: a user turn carries the
  assistant header that follows it, so the header is masked like the prompt it ends, and the
  prompt's ids are those the model gets at inference from ``add_generation_prompt=True``;
- the labels are the ids of the trained turns and ``-100`` elsewhere (not shifted: training
  shifts them like the tokens), and the tokenizer's ``eos_token`` is appended after the chat,
  trained when the token before it is (GPT-NeoX's ``build_chat``); with ``for_rm`` every label is
  ``-100`` and two eos tokens follow the chat, the second trained: the reward model's score is
  read at the first (GPT-NeoX's ``--for-rm``).

Where a turn starts is found on token ids, as GPT-NeoX does: the ids of the rendered prefix are
compared with the ids of the whole chat and the turn starts where they first differ. Templates
that end every turn with a special token (Llama 3, ChatML, Mistral, Zephyr, ...) give exactly the
turn's first token; where a template joins a turn to plain text so that one token straddles the
boundary, that token goes with the turn that follows. Each prefix is tokenized once, so a chat
of ``n`` turns costs about ``n / 2`` times its own tokenization.
"""

from __future__ import annotations

import json
import os
from typing import Any, NamedTuple

from megatron_lite.data.readers import BadRecord
from megatron_lite.data.sft import IGNORE_INDEX
from megatron_lite.utils.logging import get_logger

logger = get_logger(__name__)

TEMPLATE_ERROR = "chat template error"  # a skip reason (ReadStats.skipped): the template raised
NO_TEMPLATE = "none"  # --chat-template-from none: the built-in <|role|> format


class RenderedChat(NamedTuple):
    """A chat rendered by its template: the text, then per turn (end character, trained?)."""

    text: str
    bounds: tuple[tuple[int, bool], ...]
    eos: int | None  # appended after the chat (GPT-NeoX), None when the tokenizer has none
    for_rm: bool = False


def _config(directory: str) -> dict:
    path = os.path.join(directory, "tokenizer_config.json")
    if not os.path.isfile(path):
        return {}
    try:
        with open(path, encoding="utf-8") as handle:
            config = json.load(handle)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable JSON file ({exc})") from None
    return config if isinstance(config, dict) else {}


def has_chat_template(directory: str) -> bool:
    """Whether a Hugging Face tokenizer directory carries a chat template."""
    return bool(_config(directory).get("chat_template")) or os.path.isfile(
        os.path.join(directory, "chat_template.jinja"))


def template_directory(spec: str | None, tokenizer_type: str, vocab_file: str | None) -> str | None:
    """The directory whose chat template renders chat records, or None for the built-in format.

    ``spec`` is ``--chat-template-from``: a directory (which must have a template), ``none``, or
    unset: then the ``HFTokenizer`` file's own directory when it has one (a tokenizer saved by
    ``transformers`` keeps its template next to ``tokenizer.json``).
    """
    if spec is not None:
        if spec.lower() == NO_TEMPLATE:
            return None
        if not os.path.isdir(spec):
            raise ValueError(f"--chat-template-from: {spec} is not a directory")
        if not has_chat_template(spec):
            raise ValueError(f"--chat-template-from: {spec} has no chat template ('chat_template' in "
                             "tokenizer_config.json, or chat_template.jinja)")
        return spec
    if tokenizer_type == "HFTokenizer" and vocab_file:
        directory = os.path.dirname(os.path.abspath(vocab_file))
        if has_chat_template(directory):
            return directory
    return None


class ChatTemplate:
    """A tokenizer directory's chat template, rendered by ``transformers`` (module docstring).

    ``tokenizer`` is the one that writes the ids (``--tokenizer-type``/``--vocab-file``); the
    template's ``eos_token`` must be one token of it. Lives in the process that parses records.
    """

    def __init__(self, directory: str, tokenizer: Any, generation_role: str = "assistant",
                 for_rm: bool = False) -> None:
        from transformers import AutoTokenizer

        try:
            self.hf = AutoTokenizer.from_pretrained(directory, local_files_only=True)
        except (OSError, ValueError, TypeError) as exc:
            raise ValueError(f"{directory}: transformers cannot load this tokenizer directory for its chat "
                             f"template ({exc}); --chat-template-from none uses the built-in format") from None
        self.directory, self.generation_role, self.for_rm = directory, generation_role, for_rm
        self.eos = None
        if self.hf.eos_token is not None:
            ids = tokenizer.tokenize_batch([str(self.hf.eos_token)], add_special_tokens=False)[0]
            if len(ids) != 1:
                raise ValueError(f"{directory}: its eos_token {self.hf.eos_token!r} is {len(ids)} tokens of the "
                                 "tokenizer (--vocab-file), not one: use the same tokenizer for both")
            self.eos = ids[0]
        elif for_rm:
            raise ValueError(f"{directory}: --for-rm ends each chat with the eos token, and this tokenizer has none")
        logger.info("chat records are rendered with the chat template of %s", directory)

    def render(self, messages: list[dict], add_generation_prompt: bool = False) -> str:
        """``apply_chat_template(tokenize=False)``; BadRecord when the template raises."""
        import jinja2

        try:
            return self.hf.apply_chat_template(messages, tokenize=False,
                                               add_generation_prompt=add_generation_prompt)
        except (jinja2.TemplateError, TypeError, ValueError, LookupError, AttributeError) as exc:
            raise BadRecord(TEMPLATE_ERROR, f" ({type(exc).__name__}: {exc})") from None

    def chat(self, messages: list[dict], trained: list[int]) -> RenderedChat:
        """The chat's text and where each turn ends in it (module docstring)."""
        text = self.render(messages)
        bounds: list[tuple[int, bool]] = []
        for i in range(len(messages) - 1):
            prefix = self.render(messages[: i + 1], messages[i + 1]["role"] == self.generation_role)
            end = len(prefix) if text.startswith(prefix) else len(os.path.commonprefix([prefix, text]))
            bounds.append((max(end, bounds[-1][0] if bounds else 0), i in trained))
        bounds.append((len(text), len(messages) - 1 in trained))
        return RenderedChat(text, tuple(bounds), self.eos, self.for_rm)


def _common_length(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    return next(i for i in range(n) if a[i] != b[i])


def encode_rendered(tokenizer: Any, docs: list[RenderedChat]) -> list[tuple[list[int], list[int]]]:
    """(ids, labels) of each rendered chat: one tokenizer call for the chats and their prefixes."""
    texts: list[str] = []
    for doc in docs:
        texts.append(doc.text)
        texts += [doc.text[:end] for end, _ in doc.bounds[:-1]]
    ids_of = iter(tokenizer.tokenize_batch(texts, add_special_tokens=False) if texts else [])
    out = []
    for doc in docs:
        ids = next(ids_of)
        labels: list[int] = []
        start = 0
        for k, (_, train) in enumerate(doc.bounds):
            # The turn ends where the prefix's ids leave the chat's (module docstring).
            end = len(ids) if k == len(doc.bounds) - 1 else max(start, _common_length(next(ids_of), ids))
            labels += ids[start:end] if train and not doc.for_rm else [IGNORE_INDEX] * (end - start)
            start = end
        if doc.for_rm:  # GPT-NeoX's --for-rm: the score is read at the first of two eos tokens
            ids, labels = ids + [doc.eos, doc.eos], labels + [IGNORE_INDEX, doc.eos]
        elif doc.eos is not None:
            ids, labels = ids + [doc.eos], labels + [doc.eos if labels and labels[-1] != IGNORE_INDEX else IGNORE_INDEX]
        out.append((ids, labels))
    return out
