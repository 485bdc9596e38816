"""The record flags of ``tools/preprocess_data.py``: supervised fine-tuning, preference (pairwise)
and KTO data, and chat templates; which mode they select and the parser of that mode.

Modes (``args.mode``): ``text`` (a string per ``--jsonl-keys`` key), ``prompt`` (SFT
prompt/completion, :mod:`megatron_lite.data.sft`), and the record modes of
:mod:`megatron_lite.data.preference`: ``chat`` (``--chat-key``), ``pairwise``
(``--chosen-key``/``--rejected-key``) and ``kto`` (``--reward-key``).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from megatron_lite.data.chat_template import ChatTemplate, template_directory
from megatron_lite.data.preference import (
    ChatOptions,
    chat_record_parser,
    kto_parser,
    pairwise_parser,
)
from megatron_lite.data.readers import RecordParser

RECORD_MODES = ("chat", "pairwise", "kto")


def add_record_args(p: argparse.ArgumentParser) -> None:
    """The supervised, preference and KTO argument groups."""
    g = p.add_argument_group("supervised fine-tuning (writes _text_document and _label_document)")
    g.add_argument("--prompt-key", default=None, metavar="KEY",
                   help="prompt/completion, preference and KTO records: the prompt's key (masked; default prompt)")
    g.add_argument("--completion-key", default=None, metavar="KEY",
                   help="prompt/completion and KTO records: the completion's key (trained on; default completion)")
    g.add_argument("--chat-key", default=None, metavar="KEY",
                   help='chat records: the key of the list of {"role", "content"} messages (e.g. messages)')
    g.add_argument("--generation-role", default=None, metavar="ROLE",
                   help="chat: the role whose turns are trained on (default assistant)")
    g.add_argument("--only-last-turn", "--only-last", action="store_true",
                   help="chat: train on the last --generation-role turn only")
    g.add_argument("--chat-template-from", default=None, metavar="DIR",
                   help="chat: render messages with the chat template of this Hugging Face tokenizer directory "
                   "(tokenizer_config.json); default: the HFTokenizer file's directory when it has one, else "
                   "the built-in <|role|> format ('none': always the built-in format)")
    g = p.add_argument_group("preference and KTO data (GPT-NeoX's pos/neg_train_data_paths and "
                             "train_reward_data_paths)")
    g.add_argument("--chosen-key", default=None, metavar="KEY",
                   help="preference records: the chosen answer (default chosen); writes _chosen_document, "
                   "_chosen_label_document, _rejected_document, _rejected_label_document")
    g.add_argument("--rejected-key", default=None, metavar="KEY",
                   help="preference records: the rejected answer (default rejected)")
    g.add_argument("--for-rm", action="store_true",
                   help="preference records for a reward model: every label -100 but the last of two closing "
                   "eod tokens, where the score is read (GPT-NeoX's --for-rm)")
    g.add_argument("--reward-key", default=None, metavar="KEY",
                   help="KTO records: the key of true/false (+1/-1) or a whole-number reward, e.g. label; "
                   "writes _text_document, _label_document and _reward_document (int32, one per record)")
    g.add_argument("--binary-reward", action="store_true",
                   help="KTO: any true value is +1, any false one -1 (GPT-NeoX's flag)")


def check_record_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Sets ``args.mode`` and the defaults that depend on it; ``p.error`` for flags that clash."""
    pairs = args.prompt_key is not None or args.completion_key is not None
    pairwise = args.chosen_key is not None or args.rejected_key is not None
    kto = args.reward_key is not None
    if pairwise and (kto or args.completion_key is not None or args.chat_key is not None):
        p.error("--chosen-key/--rejected-key take the prompt from --prompt-key: --reward-key, "
                "--completion-key and --chat-key do not apply")
    if args.chat_key is not None and pairs:
        p.error("give --prompt-key/--completion-key or --chat-key, not both")
    args.mode = ("pairwise" if pairwise else "kto" if kto else "chat" if args.chat_key is not None
                 else "prompt" if pairs else "text")
    records = args.mode in RECORD_MODES
    if not records and (args.only_last_turn or args.generation_role is not None or args.chat_template_from):
        p.error("--only-last-turn, --generation-role and --chat-template-from need --chat-key, "
                "--chosen-key/--rejected-key or --reward-key")
    if args.for_rm and args.mode != "pairwise":
        p.error("--for-rm needs --chosen-key/--rejected-key")
    if args.binary_reward and args.mode != "kto":
        p.error("--binary-reward needs --reward-key")
    if args.mode != "text" and (args.jsonl_keys is not None or args.txt_blocks):
        p.error("--jsonl-keys and --txt-blocks do not apply to --prompt-key/--completion-key/--chat-key "
                "and preference or KTO records")
    args.jsonl_keys = args.jsonl_keys or ["text"]
    if args.mode in ("prompt", "pairwise") or (args.mode == "kto" and args.chat_key is None):
        args.prompt_key = args.prompt_key or "prompt"
    if args.mode == "prompt" or (args.mode == "kto" and args.chat_key is None):
        args.completion_key = args.completion_key or "completion"
    args.chosen_key, args.rejected_key = args.chosen_key or "chosen", args.rejected_key or "rejected"
    args.generation_role = args.generation_role or "assistant"


def record_parser(args: argparse.Namespace, tokenizer: Any, fix: Callable[[str], str] | None) -> RecordParser:
    """The parser of a record mode; loads the chat template (``ValueError`` when it cannot)."""
    directory = template_directory(args.chat_template_from, args.tokenizer_type, args.vocab_file)
    template = ChatTemplate(directory, tokenizer, args.generation_role, args.for_rm) if directory else None
    opts = ChatOptions(args.generation_role, args.only_last_turn, args.append_eod, template, fix, args.for_rm)
    if args.mode == "pairwise":
        return pairwise_parser(args.prompt_key, args.chosen_key, args.rejected_key, opts)
    if args.mode == "kto":
        return kto_parser(args.prompt_key, args.completion_key, args.reward_key, opts, args.chat_key,
                          args.binary_reward)
    return chat_record_parser(args.chat_key, opts)
