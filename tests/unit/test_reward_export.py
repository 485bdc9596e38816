"""Reward-model checkpoints (``train_impl: rm``) at the export boundary: convert_to_hf.py writes
GPTNeoX / Llama / Mistral ``...ForSequenceClassification`` whose reward (``logits[:, 0]`` at the
position transformers picks) equals our RewardModel's at its reading point, from tp 1, tp 2 and
pipeline-layout checkpoints; the pad-token rule; and the one-line refusals of load_model, generation and
evaluation (``build_model``), and of importing a classifier."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import megatron_lite
from megatron_lite.checkpoint.hf import UnsupportedForHF
from megatron_lite.checkpoint.layout import CheckpointError
from megatron_lite.checkpoint.weights import write_weights_checkpoint
from megatron_lite.config import config_from_flat, dump_yaml
from megatron_lite.config.derived import resolve
from megatron_lite.model.gpt import GPTModel
from megatron_lite.model.reward import REWARD_HEAD_KEY, RewardModel
from megatron_lite.training.losses import last_label_values
from tests.unit.test_hf_interop import tool_main

VOCAB, EOD, PAD = 300, 0, 1  # CharLevelTokenizer: eod 0, pad 1
RM_KEYS = {"train_impl": "rm", "dataset_impl": "pairwise", "pack_impl": "unpacked",
           "pos_train_data_paths": ["data/pos"], "neg_train_data_paths": ["data/neg"]}
BASE = {"num_layers": 2, "hidden_size": 64, "num_attention_heads": 4, "seq_length": 32,
        "padded_vocab_size": 512, "make_vocab_size_divisible_by": 128, "pos_emb": "rotary",
        "tokenizer_type": "CharLevelTokenizer"}
SHAPES = {
    "gptneox": ({"rotary_pct": 0.25, "gpt_j_residual": True}, "GPTNeoXForSequenceClassification"),
    "llama": ({"num_kv_heads": 2, "rotary_pct": 1.0, "norm": "rmsnorm", "rms_norm_epsilon": 1e-5,
               "activation": "swiglu", "ffn_hidden_size": 96, "use_bias_in_attn_linear": False,
               "use_bias_in_mlp": False, "use_bias_in_norms": False, "no_weight_tying": True},
              "LlamaForSequenceClassification"),
}
SHAPES["mistral"] = ({**SHAPES["llama"][0], "sliding_window_width": 4}, "MistralForSequenceClassification")


def rm_checkpoint(path: Path, keys: dict, tp: int = 1, reward: bool = True, pp: int = 0) -> dict[str, torch.Tensor]:
    """One of our random-init reward models (or, ``reward`` False, language models), written
    at ``tp`` (``pp`` >= 1: pipeline layer files) as the trainer would; returns its full state dict."""
    cfg = resolve(config_from_flat({**BASE, **(RM_KEYS if reward else {}), **keys}), 1)
    full = (RewardModel if reward else GPTModel)(cfg.model, seed=5).state_dict()
    gen = torch.Generator().manual_seed(0)
    for name, value in full.items():  # non-trivial norms; a head of order 1 (rewards far from 0)
        if "norm" in name:
            value.add_(0.1 * torch.randn(value.shape, generator=gen))
    if reward:
        full[REWARD_HEAD_KEY].mul_(20)
    write_weights_checkpoint(full, str(path), dump_yaml(cfg), tp, glu=cfg.model.activation == "swiglu",
                             vocab_size=VOCAB, pipe_parallel_size=pp)
    return full


def for_rm_batch(lengths: tuple[int, ...], seq: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens [b, s], loss_mask [b, s]) as GPT-NeoX's ``--for-rm`` data gives them: text and an
    eod, right-padded; the only label is on the eod, where the reward is read."""
    gen = torch.Generator().manual_seed(2)
    tokens = torch.full((len(lengths), seq), PAD)
    mask = torch.zeros(len(lengths), seq)
    for row, n in enumerate(lengths):
        tokens[row, : n - 1] = torch.randint(2, VOCAB, (n - 1,), generator=gen)
        tokens[row, n - 1] = EOD
        mask[row, n - 1] = 1
    return tokens, mask


def our_rewards(ckpt: Path, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    model, _ = megatron_lite.load_reward_model(str(ckpt))
    assert isinstance(model, RewardModel) and not model.training
    with torch.no_grad():
        return last_label_values(model(tokens), mask)  # the training step's reading point


@pytest.mark.parametrize("shape,tp,pp", [("gptneox", 1, 0), ("gptneox", 2, 0), ("llama", 1, 0), ("llama", 2, 0),
                                         ("mistral", 1, 0), ("gptneox", 2, 2)])
def test_reward_model_exports_as_sequence_classifier_with_equal_rewards(tmp_path, capsys, shape, tp, pp):
    from transformers import AutoModelForSequenceClassification

    keys, arch = SHAPES[shape]
    full = rm_checkpoint(tmp_path / "rm", keys, tp, pp=pp)
    args = ["--architecture", arch] if shape == "llama" else []  # either spelling is accepted
    assert tool_main("convert_to_hf.py", "--input_dir", tmp_path / "rm", "--output_dir", tmp_path / "hf", *args) == 0
    assert f"{arch} (num_labels 1" in capsys.readouterr().out
    written = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert written["architectures"] == [arch] and len(written["id2label"]) == 1  # transformers' num_labels
    assert written["pad_token_id"] == PAD and written["tie_word_embeddings"] is False
    weights = load_file(tmp_path / "hf" / "model.safetensors")
    assert torch.equal(weights["score.weight"], full[REWARD_HEAD_KEY])
    assert not {"lm_head.weight", "embed_out.weight"} & set(weights)
    hf = AutoModelForSequenceClassification.from_pretrained(tmp_path / "hf").eval()
    assert type(hf).__name__ == arch and hf.config.num_labels == 1
    tokens, mask = for_rm_batch((9, 20, 14))
    with torch.no_grad():
        theirs = hf(tokens, attention_mask=(tokens != PAD).long()).logits  # [b, num_labels]
    assert theirs.shape == (3, 1)
    torch.testing.assert_close(theirs[:, 0], our_rewards(tmp_path / "rm", tokens, mask), rtol=1e-5, atol=1e-5)


def test_a_tokenizer_that_pads_with_eod_leaves_pad_token_id_unset(tmp_path, capsys):
    """transformers would skip the trailing eod as padding and read the reward one token early:
    pad_token_id stays unset, so one unpadded sequence is scored exactly and a batch is refused."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPTNeoXForSequenceClassification

    tok = ByteLevelBPETokenizer()
    tok.train_from_iterator(["hello world tokens"] * 50, vocab_size=280, special_tokens=["<|endoftext|>"])
    tok.save(str(tmp_path / "tokenizer.json"))
    rm_checkpoint(tmp_path / "rm", {**SHAPES["gptneox"][0], "tokenizer_type": "HFTokenizer",
                                    "vocab_file": str(tmp_path / "tokenizer.json"),
                                    "padded_vocab_size": 384})
    assert tool_main("convert_to_hf.py", "--input_dir", tmp_path / "rm", "--output_dir", tmp_path / "hf") == 0
    assert "pad_token_id unset" in capsys.readouterr().out
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["pad_token_id"] is None
    hf = GPTNeoXForSequenceClassification.from_pretrained(tmp_path / "hf").eval()
    tokens = torch.tensor([tok.encode("hello world").ids + [EOD]])  # <|endoftext|> is id 0
    with torch.no_grad():
        theirs = hf(tokens).logits[:, 0]
        with pytest.raises(ValueError, match="no padding token"):
            hf(tokens.repeat(2, 1))
    torch.testing.assert_close(theirs, our_rewards(tmp_path / "rm", tokens, (tokens == EOD).float()),
                               rtol=1e-5, atol=1e-5)


def test_load_model_refuses_a_reward_model_and_load_reward_model_a_language_model(tmp_path):
    rm_checkpoint(tmp_path / "rm", SHAPES["gptneox"][0])  # tied: it would load as an LM silently
    with pytest.raises(CheckpointError) as exc:
        megatron_lite.load_model(str(tmp_path / "rm"))
    message = str(exc.value)
    assert "\n" not in message and str(tmp_path / "rm") in message and "is a reward model" in message
    assert "load_reward_model" in message
    rm_checkpoint(tmp_path / "lm", SHAPES["gptneox"][0], reward=False)
    with pytest.raises(CheckpointError, match="is a language model, not a reward model"):
        megatron_lite.load_reward_model(str(tmp_path / "lm"))


@pytest.mark.parametrize("untied", [False, True])
def test_generation_and_evaluation_refuse_a_reward_model_by_name(tmp_path, untied):
    """``build_model`` (generate.py's and evaluate.py's) names the checkpoint as a reward model;
    before, a tied one generated from its embedding and an untied one lacked embed_out."""
    from megatron_lite.inference.main import build_model
    from megatron_lite.parallel.state import ParallelState

    keys = {**SHAPES["gptneox"][0], "no_weight_tying": untied}
    rm_checkpoint(tmp_path / "rm", keys)
    cfg = resolve(config_from_flat({**BASE, **RM_KEYS, **keys, "load": str(tmp_path / "rm")}), 1)
    with pytest.raises(CheckpointError) as exc:
        build_model(cfg, ParallelState(), "cpu")
    assert "\n" not in str(exc.value) and f"{tmp_path / 'rm'} is a reward model" in str(exc.value)
    assert "no LM head" in str(exc.value)


def test_classifier_names_and_directories_on_the_wrong_side_are_clear_errors(tmp_path, capsys):
    rm_checkpoint(tmp_path / "lm", SHAPES["gptneox"][0], reward=False)
    assert tool_main("convert_to_hf.py", "--input_dir", tmp_path / "lm", "--output_dir", tmp_path / "x",
                     "--architecture", "GPTNeoXForSequenceClassification") == 1
    assert "is for reward models" in capsys.readouterr().err
    rm_checkpoint(tmp_path / "rm", SHAPES["gptneox"][0])
    assert tool_main("convert_to_hf.py", "--input_dir", tmp_path / "rm", "--output_dir", tmp_path / "hf") == 0
    with pytest.raises(UnsupportedForHF, match="GPTNeoXForSequenceClassification is a sequence-classification"):
        megatron_lite.load_model(str(tmp_path / "hf"))
