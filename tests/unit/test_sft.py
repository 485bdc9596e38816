"""Supervised fine-tuning: masked tokens get no loss and no gradient; records -> segments -> labels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from megatron_lite.config import config_from_flat
from megatron_lite.config.derived import resolve
from megatron_lite.data.loaders import get_batch
from megatron_lite.data.readers import EMPTY, MISSING_KEY, NOTHING_TO_TRAIN, WRONG_TYPE, BadRecord
from megatron_lite.data.sft import (
    IGNORE_INDEX,
    chat_parser,
    encode_segments,
    prompt_completion_parser,
    render_chat,
)
from megatron_lite.model.gpt import GPTModel
from megatron_lite.parallel.cross_entropy import masked_mean_loss
from megatron_lite.parallel.state import ParallelState
from megatron_lite.tokenizer import build_tokenizer_from

VOCAB = 96


def _model() -> GPTModel:
    flat = {"num_layers": 2, "hidden_size": 32, "num_attention_heads": 4, "seq_length": 16,
            "padded_vocab_size": VOCAB, "make_vocab_size_divisible_by": 32,
            "train_micro_batch_size_per_gpu": 1, "optimizer": {"params": {"lr": 1e-3}}}
    return GPTModel(resolve(config_from_flat(flat), 1).model, seed=3)


def _sft_sample() -> dict[str, torch.Tensor]:
    """Two packed rows of [s + 1] tokens whose label file masks the prompt parts with -100."""
    gen = torch.Generator().manual_seed(0)
    text = torch.randint(1, VOCAB, (2, 17), generator=gen)
    label = text.clone()
    label[0, :9] = IGNORE_INDEX  # a prompt, then its completion
    label[1, 3:7] = IGNORE_INDEX  # the end of a completion, a prompt, the next completion
    label[1, 12:] = IGNORE_INDEX
    return {"text": text, "label": label}


def _loss_and_grads(model: GPTModel, tokens, labels, loss_mask):
    model.zero_grad()
    logits = model(tokens)
    logits.retain_grad()
    loss = masked_mean_loss(logits, labels, loss_mask, ParallelState.single())
    loss.backward()
    return loss.detach(), logits, {n: p.grad.clone() for n, p in model.named_parameters()}


def test_masked_prompt_tokens_get_no_loss_and_no_gradient():
    sample = _sft_sample()
    tokens, labels, loss_mask, _ = get_batch(sample)
    # GPT-NeoX's shift: the targets are label[:, 1:], and only label >= 0 counts.
    assert torch.equal(loss_mask.bool(), sample["label"][:, 1:] >= 0)
    assert torch.equal(labels[loss_mask.bool()], sample["text"][:, 1:][loss_mask.bool()])
    model = _model()
    loss, logits, grads = _loss_and_grads(model, tokens, labels, loss_mask)

    # The mean over the unmasked tokens, by hand.
    keep = loss_mask.bool()
    log_probs = torch.log_softmax(logits.detach().float(), dim=-1)
    per_token = -log_probs.gather(-1, labels.unsqueeze(-1)).squeeze(-1)  # [b, s]
    torch.testing.assert_close(loss, per_token[keep].mean(), rtol=1e-6, atol=1e-6)
    assert int(keep.sum()) == (16 - 8) + (16 - 4 - 5)  # 15 of the 32 positions count

    # d loss / d logits is exactly zero at masked positions, nonzero at the others.
    assert torch.count_nonzero(logits.grad[~keep]) == 0
    assert bool((logits.grad[keep].abs().sum(-1) > 0).all())

    # Whatever the masked positions' targets are, loss and every gradient are the same.
    other = labels.clone()
    other[~keep] = torch.randint(0, VOCAB, (int((~keep).sum()),), generator=torch.Generator().manual_seed(5))
    loss2, _, grads2 = _loss_and_grads(model, tokens, other, loss_mask)
    assert torch.equal(loss, loss2)
    for name in grads:
        assert torch.equal(grads[name], grads2[name]), name

    # Unmasking them changes the loss: the mask, not chance, kept them out.
    loss3, _, _ = _loss_and_grads(model, tokens, other, torch.ones_like(loss_mask))
    assert not torch.allclose(loss, loss3)


def test_text_only_batches_keep_every_target():
    text = torch.randint(1, VOCAB, (2, 17), generator=torch.Generator().manual_seed(1))
    _, labels, loss_mask, _ = get_batch({"text": text}, eod_id=0)
    assert torch.equal(labels, text[:, 1:]) and bool(loss_mask.all())


def test_prompt_completion_segments_and_bad_records():
    parse = prompt_completion_parser("q", "a", append_eod=True)
    assert parse({"q": "2+2=", "a": "4", "extra": 1}) == {"segments": [("2+2=", False), ("4", True), (None, True)]}
    assert prompt_completion_parser()({"prompt": "", "completion": "x"})["segments"] == [("", False), ("x", True)]
    cases = [({"a": "4"}, MISSING_KEY, " 'q'"), ({"q": "x", "a": ["4"]}, MISSING_KEY, " 'a' (a list, not a string)"),
             ({"q": "x", "a": "  "}, NOTHING_TO_TRAIN, " (empty 'a')")]
    for record, reason, detail in cases:
        with pytest.raises(BadRecord) as err:
            parse(record)
        assert (err.value.reason, err.value.detail) == (reason, detail)


CHAT = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"}, {"role": "user", "content": "bye"},
        {"role": "assistant", "content": "ciao"}]


def test_chat_template_masks_all_but_assistant_turns():
    segments = render_chat(CHAT)
    assert "".join(t or "<eod>" for t, _ in segments) == (
        "<|system|>\nbe brief<eod><|user|>\nhi<eod><|assistant|>\nhello<eod><|user|>\nbye<eod>"
        "<|assistant|>\nciao<eod>")
    assert [t or "<eod>" for t, train in segments if train] == ["hello", "<eod>", "ciao", "<eod>"]
    last = render_chat(CHAT, only_last_turn=True)
    assert [t or "<eod>" for t, train in last if train] == ["ciao", "<eod>"]
    assert [t for t, train in render_chat(CHAT, generation_role="user") if train and t] == ["hi", "bye"]


@pytest.mark.parametrize("record, reason, detail", [
    ({"chat": []}, MISSING_KEY, " 'messages'"),
    ({"messages": "hi"}, WRONG_TYPE, " 'messages' (a str, not a list of messages)"),
    ({"messages": []}, EMPTY, " ('messages' is an empty list)"),
    ({"messages": ["hi"]}, WRONG_TYPE, " 'messages[0]' (a str, not an object)"),
    ({"messages": [{"role": "user"}]}, MISSING_KEY, " 'messages[0].content'"),
    ({"messages": [{"role": "user", "content": 3}]}, WRONG_TYPE, " 'messages[0].content' (a int, not a string)"),
    ({"messages": [{"role": "user", "content": "hi"}]}, NOTHING_TO_TRAIN, " (no 'assistant' turn)"),
])
def test_bad_chat_records(record, reason, detail):
    with pytest.raises(BadRecord) as err:
        chat_parser()(record)
    assert (err.value.reason, err.value.detail) == (reason, detail)


def test_encode_segments_labels_are_the_trained_tokens():
    tok = build_tokenizer_from("CharLevelTokenizer")
    docs = [[("ab", False), ("cd", True), (None, True)], [("", False), ("e", True)]]
    tokens, labels, lengths = encode_segments(tok, docs, np.uint16)
    assert lengths.tolist() == [5, 1] and tokens.dtype == np.uint16 and labels.dtype == np.int32
    assert tokens.tolist() == [97, 98, 99, 100, 0, 101]
    assert labels.tolist() == [-100, -100, 99, 100, 0, 101]


def test_post_processor_tokens_are_added_once_per_document(tmp_path):
    """A tokenizer that prepends <s> (Llama style): once at the start, not before every piece."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace
    from tokenizers.processors import TemplateProcessing

    vocab = {"<|endoftext|>": 0, "<s>": 1, "[UNK]": 2, "what": 3, "?": 4, "this": 5}
    backend = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = Whitespace()
    backend.post_processor = TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    backend.save(str(tmp_path / "tok.json"))
    tok = build_tokenizer_from("HFTokenizer", str(tmp_path / "tok.json"))
    tokens, labels, _ = encode_segments(tok, [[("what ?", False), ("this", True), (None, True)]], np.int32)
    assert tokens.tolist() == [1, 3, 4, 5, 0]
    assert labels.tolist() == [-100, -100, -100, 5, 0]
