"""DPO, KTO and reward models through deepy.py on CPU (issue #20): a tiny model learns a small
synthetic preference set; tensor, pipeline and ZeRO data parallel runs follow one process's DPO,
KTO and reward model losses; a resumed DPO run is bit-exact and keeps its reference model; bad
records are one line."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from megatron_lite.data.indexed_dataset import (
    MMapIndexedDatasetBuilder,
    data_file_path,
    index_file_path,
)
from tests.integration.test_train import base_config, records, run_train, train_losses

SEED = 7


def write(prefix: str, docs: list[list[int]], dtype=np.int32) -> str:
    with MMapIndexedDatasetBuilder(data_file_path(prefix), dtype) as builder:
        for doc in docs:
            builder.add_item(np.asarray(doc, dtype=dtype))
            builder.end_document()
        builder.finalize(index_file_path(prefix))
    return prefix


def preference_pairs(n: int, seed: int, prompt_len: tuple[int, int] = (3, 8)) -> list[tuple[list[int], list[int], list[int]]]:
    """(prompt, chosen, rejected) byte sequences: the same four distinct letters, in ascending
    order (chosen) or descending (rejected), each ended by eod (0). A random model has no
    preference between them; learning one is learning the order."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        prompt = [int(c) for c in rng.choice(list(b"hjklmnpqrstvwxyz"), size=rng.integers(*prompt_len))] + [ord(":")]
        letters = sorted(int(c) for c in rng.choice(list(b"abcdefgh"), size=4, replace=False))
        out.append((prompt, letters + [0], letters[::-1] + [0]))
    return out


def write_pairs(prefix: str, pairs: list, for_rm: bool = False) -> dict[str, str]:
    """GPT-NeoX's pairwise layout (preprocess_data_with_chat_template --jsonl-keys chosen rejected):
    <prefix>_chosen_document, <prefix>_chosen_label_document, ... The labels are -100 on the prompt
    (--only-last) or, for a reward model (--for-rm), everywhere but the final token."""
    files = {}
    for side, index in (("chosen", 1), ("rejected", 2)):
        docs = [p[0] + p[index] for p in pairs]
        if for_rm:
            labels = [[-100] * (len(d) - 1) + d[-1:] for d in docs]
        else:
            labels = [[-100] * len(p[0]) + p[index] for p in pairs]
        files[side] = write(f"{prefix}_{side}_document", docs)
        files[f"{side}_label"] = write(f"{prefix}_{side}_label_document", labels)
    return files


def pairwise_keys(train: dict[str, str], valid: dict[str, str]) -> dict:
    keys = {"dataset_impl": "pairwise", "pack_impl": "unpacked", "allow_chopped": False}
    for split, files in (("train", train), ("valid", valid)):
        keys[f"pos_{split}_data_paths"] = [files["chosen"]]
        keys[f"pos_{split}_label_data_paths"] = [files["chosen_label"]]
        keys[f"neg_{split}_data_paths"] = [files["rejected"]]
        keys[f"neg_{split}_label_data_paths"] = [files["rejected_label"]]
    return keys


@pytest.fixture(scope="module")
def pairs_data(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("pairs")
    valid = preference_pairs(16, seed=1)
    return {"train": write_pairs(str(root / "pairs_train"), preference_pairs(64, seed=0)),
            "valid": write_pairs(str(root / "pairs_valid"), valid), "valid_pairs": valid,
            "root": root}


def dpo_config(tmp_path: Path, data: dict, **overrides) -> dict:
    cfg = base_config(tmp_path, "", train_impl="dpo", dpo_beta=0.1, **pairwise_keys(data["train"], data["valid"]))
    del cfg["data_path"], cfg["split"]
    cfg.update({"train_batch_size": 8, "train_iters": 6, "eval_interval": 3, "eval_iters": 2,
                "weight_decay": 0.0, "warmup": 0.0, "lr_decay_style": "constant", "seed": SEED})
    cfg.update(overrides)
    return cfg


@pytest.fixture(scope="module")
def dpo_run(tmp_path_factory, pairs_data) -> Path:
    """One uninterrupted single-process DPO run (6 iterations, validation at 3 and 6), saved."""
    tmp = tmp_path_factory.mktemp("dpo")
    run_train(tmp, dpo_config(tmp, pairs_data, train_micro_batch_size_per_gpu=8, save=str(tmp / "ckpt")))
    return tmp


@pytest.fixture(scope="module")
def dpo_losses(dpo_run) -> dict[int, float]:
    losses = train_losses(dpo_run)
    assert sorted(losses) == list(range(1, 7))
    return losses


def sequence_logps(model: torch.nn.Module, pairs: list) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(completion | prompt) [n] of the chosen and of the rejected completions."""
    out = []
    for index in (1, 2):
        values = []
        for pair in pairs:
            doc = torch.tensor(pair[0] + pair[index])
            with torch.no_grad():
                logits = model(doc[None, :-1])[0].float()  # [s, v]
            logp = torch.log_softmax(logits, -1).gather(-1, doc[1:, None]).squeeze(-1)
            values.append(logp[len(pair[0]) - 1:].sum())
        out.append(torch.stack(values))
    return out[0], out[1]


def test_dpo_learns_held_out_preferences(dpo_run, dpo_losses, pairs_data):
    from megatron_lite import load_model
    from megatron_lite.model.gpt import GPTModel

    # Step 0: the reference is the policy, so the loss is log(2), the margin and accuracy 0.
    first = records(dpo_run)[0]
    assert first["iteration"] == 1 and abs(first["loss"] - math.log(2)) < 1e-6
    assert first["reward_margin"] == 0.0 and first["reward_accuracy"] == 0.0
    assert dpo_losses[6] < dpo_losses[1] - 0.1
    valid = records(dpo_run, "valid")
    assert [r["iteration"] for r in valid] == [3, 6]
    assert valid[-1]["reward_accuracy"] >= 0.9 and valid[-1]["reward_margin"] > valid[0]["reward_margin"] > 0
    # Held out, measured outside the trainer: the initial model (the seed's initialisation, the
    # reference) against the trained one.
    trained, _ = load_model(str(dpo_run / "ckpt"))
    initial = GPTModel(trained.gpt.cfg, seed=SEED).eval()
    init_c, init_r = sequence_logps(initial, pairs_data["valid_pairs"])
    new_c, new_r = sequence_logps(trained, pairs_data["valid_pairs"])
    init_acc, new_acc = (init_c > init_r).float().mean().item(), (new_c > new_r).float().mean().item()
    margin = ((new_c - init_c) - (new_r - init_r)).mean().item()  # relative to the reference: 0 at start
    assert new_acc >= 0.9 and new_acc > init_acc, (init_acc, new_acc)
    assert margin > 0.5, margin


DPO_LAYOUTS = {
    "tp2": {"num_gpus": 2, "model_parallel_size": 2, "train_micro_batch_size_per_gpu": 8},
    "pp2": {"num_gpus": 2, "pipe_parallel_size": 2, "train_micro_batch_size_per_gpu": 4},
    "zero3_dp2": {"num_gpus": 2, "zero_optimization": {"stage": 3}, "train_micro_batch_size_per_gpu": 4},
}


@pytest.mark.parametrize("layout", list(DPO_LAYOUTS))
def test_dpo_parallel_layouts_match_single_process(tmp_path, pairs_data, dpo_run, dpo_losses, layout):
    run_train(tmp_path, dpo_config(tmp_path, pairs_data, **DPO_LAYOUTS[layout]))
    losses = train_losses(tmp_path)
    assert sorted(losses) == sorted(dpo_losses)
    for it, loss in dpo_losses.items():
        assert losses[it] == pytest.approx(loss, rel=2e-5, abs=2e-5), f"{layout} iteration {it}"
    valid, expected = records(tmp_path, "valid"), records(dpo_run, "valid")
    for got, want in zip(valid, expected):
        assert got["reward_accuracy"] == want["reward_accuracy"]
        assert got["reward_margin"] == pytest.approx(want["reward_margin"], rel=1e-4, abs=1e-5)


def test_dpo_resume_is_bit_exact_and_keeps_its_reference(tmp_path, pairs_data, dpo_run, dpo_losses):
    """Stop at 3, resume with load = save: every loss equals the uninterrupted run's, bit for
    bit. The resumed run compares against the reference it started with (here the seed's
    initialisation, recorded in the checkpoint), not against the policy it resumes (GPT-NeoX
    reloads its reference from `load`, so a resumed run drifts)."""
    import yaml

    save = str(tmp_path / "ckpt")
    cfg = dpo_config(tmp_path, pairs_data, train_micro_batch_size_per_gpu=8, save=save, load=save,
                     checkpoint_factor=100)
    run_train(tmp_path, {**cfg, "exit_interval": 3}, "first.yml")
    assert (Path(save) / "latest").read_text() == "global_step3"
    saved = yaml.safe_load((Path(save) / "global_step3" / "config.yml").read_text())
    assert saved["train_impl"] == "dpo" and saved["reference_load"] is None  # the initialisation
    run_train(tmp_path, cfg, "second.yml")
    assert train_losses(tmp_path) == dpo_losses, "bit for bit after resume"
    got = {r["iteration"]: r for r in records(tmp_path, "valid")}
    want = {r["iteration"]: r for r in records(dpo_run, "valid")}
    assert got[6]["loss"] == want[6]["loss"] and got[6]["reward_margin"] == want[6]["reward_margin"]


def test_reference_source_is_pinned_and_recorded(tmp_path, dpo_run, pairs_data):
    """Where the reference comes from: a fine-tuning source, pinned to its step directory; on
    resume, what the checkpoint recorded (the initialisation, or a path)."""
    import shutil
    from dataclasses import replace
    from types import SimpleNamespace

    from megatron_lite.config import config_from_flat
    from megatron_lite.training.preference import PreferenceTrainer

    ckpt = dpo_run / "ckpt"
    base = config_from_flat(dpo_config(tmp_path, pairs_data))

    def plan(**checkpoint):
        cfg = replace(base, checkpoint=replace(base.checkpoint, **checkpoint))
        fake = SimpleNamespace(cfg=cfg, _resumes_weights_only=lambda: False)
        return PreferenceTrainer._reference_plan(fake)

    assert plan() == (None, "copy")  # from scratch: the policy's own initialisation
    assert plan(load=str(ckpt), finetune=True) == (str((ckpt / "global_step6").resolve()), "copy")
    assert plan(load=str(ckpt)) == (None, "init")  # resuming a DPO run that started from init
    other = tmp_path / "other"
    shutil.copytree(ckpt, other)
    config = other / "global_step6" / "config.yml"
    config.write_text(config.read_text().replace("reference_load: null", "reference_load: /models/sft"))
    assert plan(load=str(other)) == ("/models/sft", "load")
    assert plan(load=str(other), finetune=True)[0] == str((other / "global_step6").resolve())


def kto_data(root: Path, pairs: list, name: str) -> dict[str, str]:
    """GPT-NeoX's KTO layout: single documents with labels and one reward per document (the
    chosen completion +1, the rejected one -1), interleaved."""
    docs, labels, rewards = [], [], []
    for prompt, good, bad in pairs:
        for completion, reward in ((good, 1.0), (bad, -1.0)):
            docs.append(prompt + completion)
            labels.append([-100] * len(prompt) + completion)
            rewards.append([reward])
    prefix = str(root / f"kto_{name}_messages")
    return {"text": write(f"{prefix}_document", docs), "label": write(f"{prefix}_label_document", labels),
            "reward": write(f"{prefix}_reward_document", rewards, dtype=np.float32)}


def kto_config(tmp_path: Path, data: dict, **overrides) -> dict:
    keys = {"pack_impl": "unpacked", "train_impl": "kto", "kto_beta": 0.1}
    for split in ("train", "valid"):
        keys.update({f"{split}_data_paths": [data[split]["text"]], f"{split}_label_data_paths": [data[split]["label"]],
                     f"{split}_reward_data_paths": [data[split]["reward"]]})
    cfg = base_config(tmp_path, "", **keys)
    del cfg["data_path"], cfg["split"]
    # KTO's KL estimate is a statistic of the micro batch (each half against the other), so
    # every layout keeps micro batches of 8 documents: 2 of them make a global batch, through
    # gradient accumulation or data parallelism (the sampler gives rank r the r-th micro batch).
    cfg.update({"train_batch_size": 16, "train_micro_batch_size_per_gpu": 8, "train_iters": 6,
                "eval_interval": 3, "eval_iters": 1, "warmup": 0.0, "lr_decay_style": "constant",
                "weight_decay": 0.0, "seed": SEED})
    cfg.update(overrides)
    return cfg


@pytest.fixture(scope="module")
def kto_files(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("kto_data")
    return {split: kto_data(root, preference_pairs(n, seed), split) for split, n, seed in (("train", 64, 0),
                                                                                          ("valid", 8, 1))}


@pytest.fixture(scope="module")
def kto_run(tmp_path_factory, kto_files) -> Path:
    """One single-process KTO run (6 iterations of 2 accumulated micro batches, validation at 3
    and 6): the reference of the layouts below."""
    tmp = tmp_path_factory.mktemp("kto")
    run_train(tmp, kto_config(tmp, kto_files))
    assert sorted(train_losses(tmp)) == list(range(1, 7))
    return tmp


def test_kto_trains(kto_run):
    train = records(kto_run)
    assert train[0]["kl"] == 0.0 and abs(train[0]["loss"] - 0.5) < 1e-6  # policy = reference: 1 - sigmoid(0)
    assert train[-1]["loss"] < train[0]["loss"] and train[-1]["reward_accuracy"] > 0.5
    assert [r["iteration"] for r in records(kto_run, "valid")] == [3, 6]
    assert "kl" in records(kto_run, "valid")[-1]


def reward_config(tmp_path: Path, data: dict, **overrides) -> dict:
    return dpo_config(tmp_path, data, train_impl="rm", z_loss=0.001, **overrides)


@pytest.fixture(scope="module")
def rm_files(tmp_path_factory, pairs_data) -> dict:
    root = tmp_path_factory.mktemp("rm_data")
    return {"train": write_pairs(str(root / "rm_train"), preference_pairs(64, seed=0), for_rm=True),
            "valid": write_pairs(str(root / "rm_valid"), pairs_data["valid_pairs"], for_rm=True)}


@pytest.fixture(scope="module")
def rm_run(tmp_path_factory, rm_files) -> Path:
    """One single-process reward model run from the initialisation (6 iterations, validation at
    3 and 6): the reference of the layouts below."""
    tmp = tmp_path_factory.mktemp("rm")
    run_train(tmp, reward_config(tmp, rm_files, train_micro_batch_size_per_gpu=8))
    losses = train_losses(tmp)
    assert sorted(losses) == list(range(1, 7)) and losses[6] < losses[1]
    return tmp


# Two layouts per objective, together tensor, pipeline and ZeRO data parallelism (DPO's are
# above). tp2_pp2 is 4 ranks: the reference runs stage after stage (kto), the reward head is
# the last stage's layer (rm).
POST_TRAINING_LAYOUTS = {
    "kto-tp2_pp2": ("kto", {"num_gpus": 4, "model_parallel_size": 2, "pipe_parallel_size": 2}),
    "kto-zero1_dp2": ("kto", {"num_gpus": 2, "zero_optimization": {"stage": 1}}),
    "rm-tp2_pp2": ("rm", {"num_gpus": 4, "model_parallel_size": 2, "pipe_parallel_size": 2,
                          "train_micro_batch_size_per_gpu": 4}),
    "rm-zero3_dp2": ("rm", {"num_gpus": 2, "zero_optimization": {"stage": 3}, "train_micro_batch_size_per_gpu": 4}),
}


@pytest.mark.parametrize("layout", list(POST_TRAINING_LAYOUTS))
def test_kto_and_reward_model_parallel_layouts_match_single_process(request, tmp_path, layout):
    """The logged loss of every iteration equals the single process's to DPO's tolerance, and
    so do the metrics (the accuracies exactly), in training and in validation."""
    kind, overrides = POST_TRAINING_LAYOUTS[layout]
    if kind == "kto":
        expected_dir, cfg = request.getfixturevalue("kto_run"), kto_config(tmp_path, request.getfixturevalue("kto_files"),
                                                                          **overrides)
    else:
        expected_dir = request.getfixturevalue("rm_run")
        cfg = reward_config(tmp_path, request.getfixturevalue("rm_files"), **overrides)
    run_train(tmp_path, cfg)
    for split in (None, "valid"):
        got, want = records(tmp_path, split), records(expected_dir, split)
        assert [r["iteration"] for r in got] == [r["iteration"] for r in want] != []
        for g, w in zip(got, want):
            where = f"{layout} {split or 'train'} iteration {w['iteration']}"
            assert g["loss"] == pytest.approx(w["loss"], rel=2e-5, abs=2e-5), where
            assert g["reward_accuracy"] == w["reward_accuracy"], where
            for key in ("reward_margin", "chosen_rewards", "rejected_rewards", "kl", "desirable_rewards",
                        "undesirable_rewards"):
                if key in w:
                    assert g[key] == pytest.approx(w[key], rel=1e-4, abs=1e-5), f"{where}: {key}"


def test_a_prompt_longer_than_seq_length_is_one_line(tmp_path, pairs_data):
    from megatron_lite.config import config_from_flat
    from megatron_lite.data.unpacked import build_unpacked_datasets

    pairs = preference_pairs(8, seed=2)
    pairs[3] = ([ord("q")] * 30 + [ord(":")], pairs[3][1], pairs[3][2])  # 31 prompt tokens > 16
    bad = {"train": write_pairs(str(tmp_path / "long"), pairs), "valid": pairs_data["valid"]}
    # allow_chopped: the document is cut to seq_length + 1 tokens, which leaves no target.
    data = config_from_flat(dpo_config(tmp_path, bad, allow_chopped=True)).data
    with pytest.raises(ValueError) as err:
        build_unpacked_datasets(data, 16, SEED, (8, 8, 0))
    assert "\n" not in str(err.value) and "no label token" in str(err.value)
    assert str(err.value).startswith("pos_train_label_data_paths: ")
    assert "long_chosen_label_document.bin, record 3" in str(err.value)
    # Without allow_chopped (GPT-NeoX skips the record silently): one line from train.py.
    strict = run_train(tmp_path, dpo_config(tmp_path, bad), expect_ok=False)
    assert strict.returncode != 0
    line = next(x for x in strict.stderr.splitlines() if "more than seq_length + 1" in x)
    assert "pos_train_data_paths: " in line and "long_chosen_document.bin, record 3 has 36 tokens" in line
    assert "allow_chopped: true" in line


def test_precomputed_reference_logprobs_replace_the_reference_model(tmp_path, dpo_run, pairs_data):
    """tools/precompute_logprobs.py writes <prefix>_<precompute_model_name> for every dataset; a
    run fine-tuning from the same checkpoint reads them instead of running a reference: at step
    0 the policy is that model, so the loss is log(2) (up to batch-shape rounding)."""
    import json
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
    from precompute_logprobs import main as precompute

    data = {"train": write_pairs(str(tmp_path / "train"), preference_pairs(64, seed=0)),
            "valid": write_pairs(str(tmp_path / "valid"), pairs_data["valid_pairs"])}
    cfg = dpo_config(tmp_path, data, train_micro_batch_size_per_gpu=8, train_iters=2, eval_interval=2,
                     load=str(dpo_run / "ckpt"), finetune=True, precompute_model_name="sft")
    (tmp_path / "run.yml").write_text(json.dumps(cfg))
    assert precompute([str(tmp_path / "run.yml"), "--batch_size", "5"]) == 0
    for side in ("chosen", "rejected"):
        assert Path(f"{data['train'][side]}_sft.bin").exists() and Path(f"{data['valid'][side]}_sft.idx").exists()
    result = run_train(tmp_path, cfg)
    assert "reference model" not in result.stderr  # no second model was built
    first = records(tmp_path)[0]
    assert abs(first["loss"] - math.log(2)) < 1e-5 and abs(first["reward_margin"]) < 1e-4
