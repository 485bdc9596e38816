"""The checkpoint layout: write/read round trips for any tp (GLU and GQA included), shards equal
to what a tensor-parallel rank's model holds, clear errors for missing or incomplete
checkpoints, and load_model on a pipeline (layer file) layout equal to the plain one."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import megatron_lite
from megatron_lite.checkpoint.layout import (
    CONFIG_FILE,
    META_FILE,
    CheckpointError,
    CheckpointMeta,
    finish_step_dir,
    read_meta,
    resolve_step_dir,
    write_latest,
)
from megatron_lite.checkpoint.weights import (
    read_full_state_dict,
    shard_state_dict,
    write_weights_checkpoint,
)
from megatron_lite.config import config_from_flat, dump_yaml
from megatron_lite.config.derived import resolve
from megatron_lite.model.gpt import GPTModel
from megatron_lite.model.pipeline import pipeline_index_to_prefix
from megatron_lite.parallel.state import ParallelState

VOCAB = 300


def make_config(**keys):
    flat = {"num_layers": 2, "hidden_size": 32, "num_attention_heads": 8, "seq_length": 16,
            "padded_vocab_size": 512, "make_vocab_size_divisible_by": 128, "pos_emb": "rotary",
            "rotary_pct": 0.5, "tokenizer_type": "CharLevelTokenizer", **keys}
    return resolve(config_from_flat(flat), 1)


def full_state(cfg, seed: int = 3) -> dict[str, torch.Tensor]:
    return GPTModel(cfg.model, seed=seed).state_dict()


def write(cfg, full, save: Path, tp: int = 1, iteration: int = 0) -> str:
    return write_weights_checkpoint(full, str(save), dump_yaml(cfg), tp,
                                    glu=cfg.model.activation in ("swiglu", "geglu"),
                                    iteration=iteration, vocab_size=VOCAB)


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert sorted(a) == sorted(b)
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("tp", [1, 2, 4])
# intermediate_size 384: GPT-NeoX's gated width 128, divisible by every tp here.
@pytest.mark.parametrize("keys", [{}, {"activation": "swiglu", "intermediate_size": 384, "num_kv_heads": 4,
                                       "no_weight_tying": True}],
                         ids=["gelu-mha-tied", "swiglu-gqa-untied"])
def test_write_read_round_trip_and_shards_match_tp_models(tmp_path, tp, keys):
    cfg = make_config(**keys)
    full = full_state(cfg)
    step = write(cfg, full, tmp_path, tp=tp)
    assert (tmp_path / "latest").read_text() == "global_step0"
    assert sorted(p for p in os.listdir(step) if p.endswith(".pt")) == [
        f"mp_rank_{r:02d}_model_states.pt" for r in range(tp)]
    meta = read_meta(step)
    assert (meta.model_parallel_size, meta.pipe_parallel_size, meta.vocab_size) == (tp, 0, VOCAB)
    glu = cfg.model.activation == "swiglu"
    assert_same(read_full_state_dict(step, glu=glu), full)
    # Each file holds exactly what that tensor-parallel rank's model holds (same seed: the
    # TP layers initialise a master weight and keep their slice), GLU rows rank-major included.
    for rank in range(tp):
        shard = torch.load(os.path.join(step, f"mp_rank_{rank:02d}_model_states.pt"), weights_only=True)["module"]
        own = GPTModel(cfg.model, ParallelState(tp_size=tp, tp_rank=rank), seed=3).state_dict()
        assert_same(shard, own)


def test_load_model_any_tp_equal(tmp_path):
    cfg = make_config(no_weight_tying=True)
    full = full_state(cfg)
    tokens = torch.randint(0, VOCAB, (2, 10), generator=torch.Generator().manual_seed(0))
    logits = []
    for tp in (1, 2, 4):
        write(cfg, full, tmp_path / f"tp{tp}", tp=tp)
        model, tokenizer = megatron_lite.load_model(str(tmp_path / f"tp{tp}"))
        assert not model.training and tokenizer.name == "CharLevelTokenizer"
        with torch.no_grad():
            logits.append(model(tokens))
    assert logits[0].shape == (2, 10, VOCAB)
    assert torch.equal(logits[0], logits[1]) and torch.equal(logits[0], logits[2])


def write_pipeline(cfg, full, save: Path, tp: int) -> None:
    """The layout DeepSpeed's PipelineModule writes: one file per (layer index, tp rank), keys
    relative to the layer (pipeline.py's table); a tied head has no file of its own."""
    layers = cfg.model.num_layers
    step = save / "global_step5"
    step.mkdir(parents=True)
    glu = cfg.model.activation in ("swiglu", "geglu")
    for index in range(layers + 3):
        prefix = pipeline_index_to_prefix(index, layers)
        # Sharding rules go by the full name (e.g. "attention.dense.weight"): cut, then strip.
        part = {k: v for k, v in full.items() if k.startswith(prefix)}
        if not part:
            continue  # the tied head
        for rank in range(tp):
            shard = shard_state_dict(part, tp, rank, glu)
            torch.save({k[len(prefix):]: v for k, v in shard.items()},
                       step / f"layer_{index:02d}-model_{rank:02d}-model_states.pt")
    finish_step_dir(str(step), dump_yaml(cfg), None, CheckpointMeta(5, 80, tp, 1, vocab_size=VOCAB))
    write_latest(str(save), 5)


@pytest.mark.parametrize("tied", [True, False])
def test_load_model_pipeline_layout_equals_plain(tmp_path, tied):
    cfg = make_config(no_weight_tying=not tied, activation="swiglu", gpt_j_residual=True)
    full = full_state(cfg)
    write(cfg, full, tmp_path / "plain")
    write_pipeline(cfg, full, tmp_path / "pipe", tp=2)
    assert_same(read_full_state_dict(resolve_step_dir(str(tmp_path / "pipe")), glu=True), full)
    plain, _ = megatron_lite.load_model(str(tmp_path / "plain"))
    piped, _ = megatron_lite.load_model(str(tmp_path / "pipe"))
    assert_same(plain.gpt.state_dict(), piped.gpt.state_dict())
    tokens = torch.randint(0, VOCAB, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(plain(tokens), piped(tokens))


def test_iteration_selection_and_step_dir_path(tmp_path):
    cfg = make_config()
    first, second = full_state(cfg, seed=1), full_state(cfg, seed=2)
    write(cfg, first, tmp_path, iteration=10)
    step20 = write(cfg, second, tmp_path, iteration=20)
    assert resolve_step_dir(str(tmp_path)) == step20
    key = "layers.0.attention.dense.weight"
    for kwargs, expected in (({}, second), ({"iteration": 10}, first), ({"iteration": 20}, second)):
        model, _ = megatron_lite.load_model(str(tmp_path), **kwargs)
        assert torch.equal(model.gpt.state_dict()[key], expected[key])
    model, _ = megatron_lite.load_model(str(tmp_path / "global_step10"))
    assert torch.equal(model.gpt.state_dict()[key], first[key])


def test_missing_and_incomplete_checkpoints_name_the_path(tmp_path):
    absent = tmp_path / "absent"
    with pytest.raises(CheckpointError, match=str(absent)):
        megatron_lite.load_model(str(absent))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match=f"{empty}.*no checkpoint"):
        resolve_step_dir(str(empty))
    cfg = make_config()
    save = tmp_path / "save"
    write(cfg, full_state(cfg), save, tp=2, iteration=4)
    with pytest.raises(CheckpointError, match="global_step7"):
        resolve_step_dir(str(save), iteration=7)
    # A step whose metadata was never written (crash mid-save) is incomplete.
    (save / "global_step4" / META_FILE).unlink()
    with pytest.raises(CheckpointError, match=r"incomplete.*global_step4"):
        megatron_lite.load_model(str(save))


def test_missing_shard_or_weights_is_a_checkpoint_error(tmp_path):
    cfg = make_config()
    step = Path(write(cfg, full_state(cfg), tmp_path, tp=2))
    (step / "mp_rank_01_model_states.pt").unlink()  # half of every split tensor is gone
    with pytest.raises(CheckpointError, match=f"{step} is incomplete: .* lacks tensor-parallel rank\\(s\\) \\[1\\] of 2"):
        megatron_lite.load_model(str(tmp_path))
    (step / "mp_rank_00_model_states.pt").unlink()
    with pytest.raises(CheckpointError, match=f"no model weights found in {step}"):
        megatron_lite.load_model(str(tmp_path))
    (step / CONFIG_FILE).unlink()
    with pytest.raises(CheckpointError, match=f"{step} has no {CONFIG_FILE}"):
        megatron_lite.load_model(str(tmp_path))


def test_load_model_while_a_run_rotates_reads_the_new_latest(tmp_path, monkeypatch):
    """A running job saves step 3 and deletes step 2 (keep_last_n_checkpoints: 1) while
    load_model reads step 2: the read is retried once on the new `latest`."""
    import shutil

    from megatron_lite.checkpoint import loader

    cfg = make_config()
    write(cfg, full_state(cfg, seed=2), tmp_path, iteration=2)
    newer = full_state(cfg, seed=3)
    real_read = loader.read_full_state_dict

    def rotated_meanwhile(step_dir, glu):
        if step_dir.endswith("global_step2"):
            write(cfg, newer, tmp_path, iteration=3)
            shutil.rmtree(step_dir)
        return real_read(step_dir, glu)

    monkeypatch.setattr(loader, "read_full_state_dict", rotated_meanwhile)
    _, full, _, _ = loader.load_weights(str(tmp_path))
    assert_same(full, newer)
    with pytest.raises(CheckpointError, match="global_step3"):  # a step that stays broken: one error
        shutil.rmtree(tmp_path / "global_step3" / "tokenizer", ignore_errors=True)
        os.unlink(tmp_path / "global_step3" / "mp_rank_00_model_states.pt")
        loader.load_weights(str(tmp_path))
