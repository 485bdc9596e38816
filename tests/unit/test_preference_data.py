"""Preference (pairwise), KTO and chat-template records -> documents, ids and labels (GPT-NeoX's)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from megatron_lite.data.chat_template import ChatTemplate, RenderedChat, template_directory
from megatron_lite.data.preference import (
    PROMPTS_DIFFER,
    SAME,
    ChatOptions,
    encode_docs,
    encode_records,
    kto_parser,
    pairwise_parser,
    record_outputs,
    reward_value,
)
from megatron_lite.data.readers import EMPTY, MISSING_KEY, NOTHING_TO_TRAIN, WRONG_TYPE, BadRecord
from megatron_lite.data.sft import IGNORE_INDEX, encode_segments, render_chat
from megatron_lite.tokenizer import build_tokenizer_from

SPECIALS = ["<|endoftext|>", "<|padding|>", "<|im_start|>", "<|im_end|>", "<|begin_of_text|>",
            "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
CHATML = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
          "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
LLAMA3 = ("{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
          "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + "
          "'<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
          "{{ content }}{% endfor %}{% if add_generation_prompt %}"
          "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}")
CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"},
        {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "What is two and two?"},
        {"role": "assistant", "content": "It is four."}]
BUILTIN = ChatOptions()


def _bad(parse, record) -> tuple[str, str]:
    with pytest.raises(BadRecord) as info:
        parse(record)
    return info.value.reason, info.value.detail


def test_pairwise_strings_share_the_masked_prompt():
    parse = pairwise_parser("prompt", "chosen", "rejected", ChatOptions(append_eod=True))
    docs = parse({"prompt": "Q: 2+2?\nA:", "chosen": " 4", "rejected": " 5"})["docs"]
    assert docs == {"chosen": [("Q: 2+2?\nA:", False), (" 4", True), (None, True)],
                    "rejected": [("Q: 2+2?\nA:", False), (" 5", True), (None, True)]}
    rm = pairwise_parser("prompt", "chosen", "rejected", ChatOptions(for_rm=True))
    assert rm({"prompt": "p", "chosen": "a", "rejected": "b"})["docs"]["chosen"] == \
        [("p", False), ("a", False), (None, False), (None, True)]  # GPT-NeoX's --for-rm
    tok = build_tokenizer_from("CharLevelTokenizer", None)
    tokens, labels, lengths = encode_segments(tok, [docs["chosen"], docs["rejected"]], np.uint16)
    assert lengths.tolist() == [13, 13] and tokens[:10].tolist() == tokens[13:23].tolist()  # the same prompt
    assert labels.tolist()[:10] == [IGNORE_INDEX] * 10 and labels.tolist()[10:13] == [32, 52, 0]  # " 4" eod


def test_pairwise_message_lists_implicit_explicit_and_string_prompts():
    parse = pairwise_parser("prompt", "chosen", "rejected", BUILTIN)
    user = [{"role": "user", "content": "hi"}]
    a, b = [{"role": "assistant", "content": "yes"}], [{"role": "assistant", "content": "no"}]
    implicit = parse({"prompt": "hi", "chosen": user + a, "rejected": user + b})["docs"]  # UltraFeedback
    explicit = parse({"prompt": user, "chosen": a, "rejected": b})["docs"]  # TRL's explicit prompt
    as_user = parse({"prompt": "hi", "chosen": a, "rejected": b})["docs"]  # a string before answers only
    assert implicit == explicit == as_user
    assert implicit["chosen"] == render_chat(user + a, only_last_turn=True)
    # Multi-turn: only the last answer is trained; everything before it is the shared prompt.
    docs = parse({"chosen": CHAT, "rejected": CHAT[:-1] + [{"role": "assistant", "content": "Five."}]})["docs"]
    assert [t for t, train in docs["chosen"] if train and t] == ["It is four."]
    assert [t for t, train in docs["rejected"] if train and t] == ["Five."]


def test_bad_preference_records_name_the_key():
    parse = pairwise_parser("prompt", "chosen", "rejected", BUILTIN)
    assert _bad(parse, {"prompt": "p", "chosen": "a"}) == (MISSING_KEY, " 'rejected'")
    assert _bad(parse, {"prompt": "p", "rejected": "a"}) == (MISSING_KEY, " 'chosen'")
    assert _bad(parse, {"prompt": "p", "chosen": "a", "rejected": "a"})[0] == SAME
    assert _bad(parse, {"chosen": CHAT, "rejected": CHAT})[0] == SAME
    assert _bad(parse, {"chosen": "a", "rejected": "b"}) == (MISSING_KEY, " 'prompt'")
    assert _bad(parse, {"prompt": "p", "chosen": 3, "rejected": "b"})[0] == WRONG_TYPE
    assert _bad(parse, {"prompt": "p", "chosen": "a", "rejected": CHAT})[0] == WRONG_TYPE
    assert _bad(parse, {"prompt": "p", "chosen": " ", "rejected": "b"}) == (NOTHING_TO_TRAIN, " (empty 'chosen')")
    assert _bad(parse, {"chosen": [], "rejected": CHAT})[0] == EMPTY
    other = [{"role": "user", "content": "something else"}] + CHAT[-1:]
    assert _bad(parse, {"chosen": CHAT, "rejected": other})[0] == PROMPTS_DIFFER
    assert _bad(parse, {"chosen": CHAT[:2], "rejected": CHAT[:1]})[0] == NOTHING_TO_TRAIN  # no answer
    assert _bad(parse, {"chosen": [{"role": "user"}], "rejected": CHAT}) == (MISSING_KEY, " 'chosen[0].content'")


def test_kto_rewards_and_documents():
    assert [reward_value({"label": v}, "label") for v in (True, False, 3, -2.0)] == [1, -1, 3, -2]
    assert [reward_value({"r": v}, "r", binary=True) for v in ("yes", 0, 0.5, [])] == [1, -1, 1, -1]
    for value in (0.5, "yes", None, 2.0**40):
        with pytest.raises(BadRecord) as info:
            reward_value({"label": value}, "label")
        assert info.value.reason == WRONG_TYPE and "'label'" in info.value.detail
    parse = kto_parser("prompt", "completion", "label", ChatOptions(append_eod=True))
    record = parse({"prompt": "Q:", "completion": " A", "label": False})
    assert record == {"docs": {"text": [("Q:", False), (" A", True), (None, True)]}, "reward": -1}
    assert _bad(parse, {"prompt": "Q:", "completion": " A"}) == (MISSING_KEY, " 'label'")
    # GPT-NeoX's layout: a conversation and its reward under --chat-key.
    chat = kto_parser("prompt", "completion", "reward", BUILTIN, chat_key="messages")({"messages": CHAT, "reward": 1})
    assert [t for t, train in chat["docs"]["text"] if train and t] == ["Hello!", "It is four."]
    tok = build_tokenizer_from("CharLevelTokenizer", None)
    names, tokens, labels, lengths, rewards = encode_records(
        tok, [(record["docs"], record["reward"]), (chat["docs"], chat["reward"])], np.uint16)
    assert names == ["text"] and rewards.dtype == np.int32 and rewards.tolist() == [-1, 1]
    assert lengths[0] == 5 and tokens.size == labels.size == lengths.sum()
    assert record_outputs("kto", "p", np.uint16)["reward"] == ("p_reward_document", np.int32)
    assert list(record_outputs("pairwise", "p", np.uint16)) == ["chosen", "chosen_label", "rejected", "rejected_label"]


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    """A tiny byte-level BPE tokenizer directory as transformers saves one, with a chat template."""
    from tokenizers import ByteLevelBPETokenizer

    root = tmp_path_factory.mktemp("chat_tok")
    tok = ByteLevelBPETokenizer()
    words = [m["content"] for m in CHAT] + ["system user assistant the answer"]
    tok.train_from_iterator(words * 30, vocab_size=320, special_tokens=SPECIALS)
    tok.save(str(root / "tokenizer.json"))
    return root


def _write_config(directory, template: str, eos: str | None) -> None:
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "chat_template": template,
              "bos_token": "<|begin_of_text|>", "pad_token": "<|padding|>"}
    if eos is not None:
        config["eos_token"] = eos
    (directory / "tokenizer_config.json").write_text(json.dumps(config))


def _transformers_ids(directory, template: str, messages: list[dict], eos: str) -> list[int]:
    """``apply_chat_template(tokenize=True)`` of a tokenizer built independently of ours."""
    from transformers import PreTrainedTokenizerFast

    hf = PreTrainedTokenizerFast(tokenizer_file=str(directory / "tokenizer.json"), bos_token="<|begin_of_text|>",
                                 eos_token=eos, pad_token="<|padding|>")
    out = hf.apply_chat_template(messages, chat_template=template, tokenize=True)
    return list(out["input_ids"] if hasattr(out, "keys") else out)  # transformers 5 returns a dict


@pytest.mark.parametrize("template,eos", [(CHATML, "<|im_end|>"), (LLAMA3, "<|eot_id|>")])
def test_template_ids_are_transformers_and_labels_mask_the_prompt(hf_dir, template, eos):
    _write_config(hf_dir, template, eos)
    tok = build_tokenizer_from("HFTokenizer", str(hf_dir / "tokenizer.json"))
    ct = ChatTemplate(str(hf_dir), tok)
    doc = ct.chat(CHAT, [4])
    assert isinstance(doc, RenderedChat) and doc.eos == SPECIALS.index(eos)
    tokens, labels, lengths = encode_docs(tok, [doc], np.uint16)
    ids = _transformers_ids(hf_dir, template, CHAT, eos)
    # GPT-NeoX's build_chat: transformers' ids, then eos (trained: the token before it is).
    assert tokens.tolist() == ids + [doc.eos] and labels[-1] == doc.eos and lengths.tolist() == [len(ids) + 1]
    prompt = _transformers_ids(hf_dir, template, CHAT[:4], eos)
    header = len(tok.tokenize_batch([ct.render(CHAT[:4], add_generation_prompt=True)], add_special_tokens=False)[0])
    if template == CHATML:  # turns end with special tokens: the prompt (with its header) is masked exactly
        assert (labels[:header] == IGNORE_INDEX).all() and np.array_equal(labels[header:], tokens[header:])
    trained = tokens[labels >= 0]
    assert tok.detokenize(trained.tolist()).strip().startswith("It is four.")
    assert (labels[: len(prompt)] == IGNORE_INDEX).all()  # nothing of the earlier turns is trained
    # All assistant turns trained: "Hello!" too, and the user turns never.
    both = encode_docs(tok, [ct.chat(CHAT, [2, 4])], np.uint16)
    text = tok.detokenize(both[0][both[1] >= 0].tolist())
    assert "Hello!" in text and "It is four." in text and "Hi there" not in text and "two and two" not in text


def test_template_for_rm_and_no_eos(hf_dir):
    _write_config(hf_dir, CHATML, "<|im_end|>")
    tok = build_tokenizer_from("HFTokenizer", str(hf_dir / "tokenizer.json"))
    tokens, labels, _ = encode_docs(tok, [ChatTemplate(str(hf_dir), tok, for_rm=True).chat(CHAT, [4])], np.uint16)
    eos = SPECIALS.index("<|im_end|>")
    assert tokens[-2:].tolist() == [eos, eos] and (labels[:-1] == IGNORE_INDEX).all() and labels[-1] == eos
    _write_config(hf_dir, CHATML, None)
    plain = ChatTemplate(str(hf_dir), tok)
    assert plain.eos is None and encode_docs(tok, [plain.chat(CHAT, [4])], np.uint16)[0].tolist() == \
        _transformers_ids(hf_dir, CHATML, CHAT, "<|endoftext|>")  # nothing appended
    with pytest.raises(ValueError, match="has none"):
        ChatTemplate(str(hf_dir), tok, for_rm=True)
    bad = ("{% if messages[0]['role'] != 'user' %}{{ raise_exception('Conversations must start with the user') }}"
           "{% endif %}" + CHATML)
    _write_config(hf_dir, bad, "<|im_end|>")
    with pytest.raises(BadRecord) as info:
        ChatTemplate(str(hf_dir), tok).chat(CHAT, [4])
    assert info.value.reason == "chat template error" and "must start with the user" in info.value.detail


def test_template_directory_rules(hf_dir, tmp_path):
    _write_config(hf_dir, CHATML, "<|im_end|>")
    vocab = str(hf_dir / "tokenizer.json")
    assert template_directory(None, "HFTokenizer", vocab) == str(hf_dir)  # the tokenizer's own directory
    assert template_directory("none", "HFTokenizer", vocab) is None
    assert template_directory(None, "CharLevelTokenizer", None) is None
    assert template_directory(str(hf_dir), "SPMTokenizer", "x.model") == str(hf_dir)
    (tmp_path / "tokenizer_config.json").write_text("{}")
    assert template_directory(None, "HFTokenizer", str(tmp_path / "tokenizer.json")) is None  # no template
    with pytest.raises(ValueError, match="no chat template"):
        template_directory(str(tmp_path), "HFTokenizer", vocab)
    with pytest.raises(ValueError, match="not a directory"):
        template_directory(str(tmp_path / "missing"), "HFTokenizer", vocab)


def test_mixed_documents_keep_their_order(hf_dir):
    _write_config(hf_dir, CHATML, "<|im_end|>")
    tok = build_tokenizer_from("HFTokenizer", str(hf_dir / "tokenizer.json"))
    rendered = ChatTemplate(str(hf_dir), tok).chat(CHAT[1:3], [1])
    segments = [("Q:", False), (" A", True)]
    tokens, labels, lengths = encode_docs(tok, [segments, rendered, segments], np.uint16)
    alone = [encode_docs(tok, [d], np.uint16) for d in (segments, rendered)]
    assert lengths.tolist() == [alone[0][2][0], alone[1][2][0], alone[0][2][0]]
    assert tokens.tolist() == (alone[0][0].tolist() + alone[1][0].tolist() + alone[0][0].tolist())
    assert labels.tolist() == (alone[0][1].tolist() + alone[1][1].tolist() + alone[0][1].tolist())


def test_flags_select_the_mode_and_clash_clearly():
    import argparse

    from megatron_lite.data.preprocess_args import add_record_args, check_record_args

    def check(*argv: str) -> argparse.Namespace:
        p = argparse.ArgumentParser()
        p.add_argument("--jsonl-keys", nargs="+")
        p.add_argument("--txt-blocks", action="store_true")
        add_record_args(p)
        args = p.parse_args(argv)
        check_record_args(p, args)
        return args

    pairwise = check("--chosen-key", "better")
    assert (pairwise.mode, pairwise.prompt_key, pairwise.chosen_key, pairwise.rejected_key) == \
        ("pairwise", "prompt", "better", "rejected")
    kto = check("--reward-key", "label")
    assert (kto.mode, kto.prompt_key, kto.completion_key) == ("kto", "prompt", "completion")
    assert check("--reward-key", "reward", "--chat-key", "messages").prompt_key is None  # GPT-NeoX's layout
    assert check("--chat-key", "m", "--chat-template-from", "none").mode == "chat"
    for argv in (["--chosen-key", "c", "--reward-key", "r"], ["--rejected-key", "r", "--completion-key", "c"],
                 ["--for-rm"], ["--reward-key", "r", "--for-rm"], ["--binary-reward"],
                 ["--prompt-key", "p", "--chat-template-from", "x"], ["--chosen-key", "c", "--jsonl-keys", "t"]):
        with pytest.raises(SystemExit):
            check(*argv)
