"""Config loading: merging, aliases, strictness, derived values, validation, round trip."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from megatron_lite.config import (
    ConfigError,
    config_from_flat,
    dump_yaml,
    layout_world_size,
    load_config,
    pad_vocab_size,
)
from megatron_lite.config.derived import resolve, solve_batch_triple

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "neox"

BASE = {
    "num_layers": 2,
    "hidden_size": 64,
    "num_attention_heads": 4,
    "seq_length": 32,
    "train_micro_batch_size_per_gpu": 2,
    "optimizer": {"type": "Adam", "params": {"lr": 0.001}},
    "train_iters": 10,
}


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def resolved(world_size: int = 1, **overrides):
    return resolve(config_from_flat({**BASE, **overrides}), world_size)


# ---- merging and spelling ---------------------------------------------------------------------


def test_later_file_wins_and_override_is_logged(tmp_path, caplog):
    a = write(tmp_path, "a.yml", "num_layers: 2\nhidden_size: 64\nnum_attention_heads: 4\n")
    b = write(tmp_path, "b.yml", "num_layers: 6\ntrain_micro_batch_size_per_gpu: 1\n")
    with caplog.at_level(logging.INFO, logger="megatron_lite"):
        cfg = load_config([a, b], world_size=1)
    assert cfg.model.num_layers == 6
    assert cfg.model.hidden_size == 64
    assert any("overrides num_layers" in r.getMessage() and "b.yml" in r.getMessage() for r in caplog.records)


def test_dash_underscore_and_megatron_aliases(tmp_path):
    a = write(
        tmp_path,
        "a.yml",
        """
        num-layers: 3
        hidden_size: 64
        num-attention-heads: 4
        tensor_model_parallel_size: 2
        micro_batch_size: 3
        """,
    )
    cfg = load_config([a], world_size=4)
    assert cfg.model.num_layers == 3
    assert cfg.parallel.model_parallel_size == 2
    assert cfg.training.train_micro_batch_size_per_gpu == 3
    assert cfg.parallel.data_parallel_size == 2


def test_conf_dir_prefix_and_optional_suffix(tmp_path):
    write(tmp_path, "model.yml", "num_layers: 5\nhidden_size: 64\nnum_attention_heads: 4\n")
    cfg = load_config(["model"], config_dir=str(tmp_path), world_size=1)
    assert cfg.model.num_layers == 5
    with pytest.raises(ConfigError, match="config file not found: nothere"):
        load_config(["nothere"], config_dir=str(tmp_path), world_size=1)


def test_command_line_overrides_win_last(tmp_path):
    a = write(tmp_path, "a.yml", "eval_tasks: [piqa]\n")
    cfg = load_config([a], overrides={"eval_tasks": ["lambada_openai"], "iteration": 7}, world_size=1)
    assert cfg.evaluation.eval_tasks == ["lambada_openai"]
    assert cfg.checkpoint.iteration == 7


# ---- strictness --------------------------------------------------------------------------------


def test_unknown_key_names_file_key_and_suggestion(tmp_path):
    a = write(tmp_path, "typo.yml", "num_layer: 2\n")
    with pytest.raises(ConfigError) as err:
        load_config([a], world_size=1)
    message = str(err.value)
    assert "typo.yml" in message and "'num_layer'" in message and "num_layers" in message


def test_ignored_neox_keys_are_listed_once(tmp_path, caplog):
    a = write(tmp_path, "a.yml", "rope_fusion: true\npartition-activations: true\n")
    b = write(tmp_path, "b.yml", "rope_fusion: false\n")
    with caplog.at_level(logging.INFO, logger="megatron_lite"):
        load_config([a, b], world_size=1)
    lines = [r.getMessage() for r in caplog.records if "ignored" in r.getMessage()]
    assert len(lines) == 1
    assert "rope_fusion" in lines[0] and "partition_activations" in lines[0]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("pos_emb: xpos\n", "pos_emb: 'xpos' is not implemented"),
        ("norm: scalenorm\n", "norm: 'scalenorm' is not implemented"),
        ("num_experts: 8\n", "mixture of experts"),
        ("attention_config: [[['sparse_fixed'], 2]]\nnum_layers: 2\n", "'sparse_fixed' attention is not implemented"),
        ("optimizer: {type: lion, params: {lr: 0.1}}\n", "optimizer.type: 'lion' is not implemented"),
        ("data_impl: cached\n", "data_impl: 'cached' is not implemented"),
    ],
)
def test_unimplemented_neox_features_are_errors(tmp_path, text, expected):
    a = write(tmp_path, "feature.yml", text)
    with pytest.raises(ConfigError, match=expected):
        load_config([a], world_size=1)


def test_default_values_of_unimplemented_features_are_accepted(tmp_path):
    a = write(tmp_path, "a.yml", "num_experts: 1\nsparsity_config: {}\n")
    load_config([a], world_size=1)


def test_type_errors_and_yaml_errors_name_the_file(tmp_path):
    a = write(tmp_path, "types.yml", "num_layers: many\n")
    with pytest.raises(ConfigError, match=r"types.yml: num_layers must be int"):
        load_config([a], world_size=1)
    b = write(tmp_path, "broken.yml", "num_layers: 2\n  hidden_size: [\n")
    with pytest.raises(ConfigError, match=r"broken.yml.*line \d+.*invalid YAML"):
        load_config([b], world_size=1)


# ---- derived values ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "given, dp, expected",
    [
        ((32, 4, None), 2, (32, 4, 4)),
        ((32, None, 2), 2, (32, 8, 2)),
        ((None, 4, 3), 2, (24, 4, 3)),
        ((16, None, None), 4, (16, 4, 1)),
        ((None, 4, None), 4, (16, 4, 1)),
        ((24, 4, 3), 2, (24, 4, 3)),
    ],
)
def test_batch_triple_from_any_two(given, dp, expected):
    assert solve_batch_triple(*given, dp) == expected


def test_batch_triple_inconsistent_with_dp():
    with pytest.raises(ConfigError, match="data-parallel size 2"):
        solve_batch_triple(30, 4, None, 2)
    with pytest.raises(ConfigError, match="train_batch_size"):
        resolved(world_size=2, train_batch_size=10, train_micro_batch_size_per_gpu=2,
                 gradient_accumulation_steps=2)


def test_dp_is_world_over_tp_times_pp():
    cfg = resolved(world_size=8, model_parallel_size=2, pipe_parallel_size=2)
    assert cfg.parallel.data_parallel_size == 2
    assert cfg.training.train_batch_size == 2 * 2
    cfg = resolved(world_size=4, model_parallel_size=2, pipe_parallel_size=0)
    assert cfg.parallel.data_parallel_size == 2


def test_padded_vocab():
    assert pad_vocab_size(50257, 128, 1) == 50304
    assert pad_vocab_size(50257, 128, 2) == 50432
    assert pad_vocab_size(512, 128, 4) == 512
    cfg = resolved(world_size=2, tokenizer_type="CharLevelTokenizer", model_parallel_size=2,
                   make_vocab_size_divisible_by=100)
    assert cfg.model.padded_vocab_size == 600  # 512 bytes+specials -> multiple of 200


def test_precision_lr_and_decay_iters_are_derived():
    cfg = resolved(fp16={"enabled": True})
    assert cfg.training.precision == "fp16"
    cfg = resolved(precision="bfloat16")
    assert cfg.training.precision == "bfloat16"
    cfg = resolved()
    assert cfg.training.precision == "fp32"
    assert cfg.optimizer.lr == 0.001
    assert cfg.lr_schedule.lr_decay_iters == 10
    assert cfg.model.max_position_embeddings == 32
    assert cfg.model.mlp_inner_size == 256
    # GPT-NeoX's gated default: value and gate share int(2/3 * 4h) = 170, 85 each.
    assert resolved(activation="swiglu").model.mlp_inner_size == 85


# ---- validation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "world, overrides, expected",
    [
        (2, {"model_parallel_size": 2, "num_attention_heads": 3, "hidden_size": 96}, "num_attention_heads \\(3\\) is not divisible by model_parallel_size \\(2\\)"),
        (3, {"model_parallel_size": 2}, "world size 3 is not divisible"),
        (1, {"seq_length": 128, "max_position_embeddings": 64}, "seq_length \\(128\\) exceeds max_position_embeddings \\(64\\)"),
        (2, {"pipe_parallel_size": 1, "zero_optimization": {"stage": 2}}, "stage 2 cannot run with pipe_parallel_size 1"),
        (2, {"pipe_parallel_size": 2, "zero_optimization": {"stage": 3}}, "stage 3 cannot run"),
        (1, {"zero_optimization": {"stage": 5}}, "stage must be 0, 1, 2 or 3"),
        (1, {"fp16": {"enabled": True}, "bf16": {"enabled": True}}, "both true"),
        (1, {"num_kv_heads": 3}, "num_kv_heads \\(3\\)"),
        (1, {"hidden_size": 66}, "hidden_size \\(66\\) is not divisible"),
        (1, {"attention_type": "groupedquery"}, "groupedquery needs num_kv_heads"),
        (1, {"split": "90:10"}, "split"),
        (1, {"train_data_paths": ["a", "b"], "train_data_weights": [1.0]}, "train_data_weights has 1"),
        (1, {"train_epochs": 2}, "train_iters or train_epochs"),
        (1, {"rotary_pct": 0.0}, "rotary_pct"),
        (1, {"include": "worker-1:0,1", "num_gpus": 2}, "include/exclude cannot be combined with num_gpus"),
        (1, {"exclude": "worker-1", "num_nodes": 1}, "include/exclude cannot be combined with num_gpus or num_nodes"),
    ],
)
def test_invalid_combinations(world, overrides, expected):
    with pytest.raises(ConfigError, match=expected):
        resolved(world_size=world, **overrides)


@pytest.mark.parametrize("split", ["969,30,1", "969/30/1", "100", "0.7, 0.2, 0.1"])
def test_split_accepted_by_the_pre_launch_check_as_by_the_data_layer(split):
    """One validator per key: what the data layer parses, the pre-launch check accepts."""
    from megatron_lite.data.splits import split_boundaries

    cfg = resolved(world_size=1, split=split)
    assert split_boundaries(cfg.data.split, 1000)[-1] == 1000


@pytest.mark.parametrize("split", ["90:10", "1,2,3,4", "0,0,0", ""])
def test_bad_split_gets_the_same_message_before_launch_and_at_run_time(split):
    from megatron_lite.config.validators import parse_split

    with pytest.raises(ConfigError) as before_launch:
        resolved(world_size=1, split=split)
    with pytest.raises(ConfigError) as at_run_time:
        parse_split(split)
    assert str(before_launch.value) == str(at_run_time.value)


@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("num_attention_heads", 0, "num_attention_heads must be > 0, got 0"),
        ("hidden_size", -64, "hidden_size must be > 0, got -64"),
        ("num_layers", 0, "num_layers must be > 0"),
        ("make_vocab_size_divisible_by", 0, "make_vocab_size_divisible_by must be > 0"),
        ("train_iters", 0, "train_iters must be > 0"),
        ("seq_length", 0, "seq_length must be > 0"),
        ("num_gpus", 0, "num_gpus must be >= 1"),
        ("master_port", 70000, "master_port must be a port in 1-65535, got 70000"),
        ("master_port", 0, "master_port must be a port in 1-65535"),
        ("eval_iters", -1, "eval_iters must be >= 0"),
        ("optimizer", {"type": "Adam", "params": {"lr": float("nan")}}, "lr \\(optimizer.params.lr\\) must be finite"),
        ("optimizer", {"type": "Adam", "params": {"lr": float("inf")}}, "lr \\(optimizer.params.lr\\) must be finite"),
        ("min_lr", float("nan"), "min_lr must be finite and >= 0"),
        ("generation_batch_size", 0, "generation_batch_size must be > 0"),
        ("eval_limit", 0, "eval_limit must be > 0"),
        ("temperature", -0.5, "temperature must be finite and >= 0"),
        ("temperature", float("nan"), "temperature must be finite and >= 0"),
        ("top_p", 1.5, "top_p must be in \\(0, 1\\], or 0"),
        ("top_k", -1, "top_k must be >= 0"),
        ("maximum_tokens", 0, "maximum_tokens must be > 0"),
    ],
)
def test_out_of_range_values_name_the_key_before_anything_starts(key, value, expected):
    with pytest.raises(ConfigError, match=expected):
        resolved(world_size=1, **{key: value})


def test_a_huge_value_in_an_error_is_shortened():
    with pytest.raises(ConfigError) as info:
        resolved(world_size=1, top_k=-10 ** 500)
    assert len(str(info.value)) < 120


def test_zero_2_and_3_allowed_without_pipeline():
    for stage in (0, 1, 2, 3):
        cfg = resolved(world_size=2, pipe_parallel_size=0, zero_optimization={"stage": stage})
        assert cfg.parallel.zero_optimization["stage"] == stage


# ---- round trip, shipped configs, fixtures ---------------------------------------------------------


def test_resolved_yaml_loads_back_to_the_same_config(tmp_path):
    cfg = load_config([str(FIXTURES / "small_gpt.yml"), str(FIXTURES / "local_setup.yml")], world_size=2)
    path = tmp_path / "resolved.yml"
    path.write_text(dump_yaml(cfg))
    again = load_config([str(path)], world_size=2)
    assert again == cfg
    with pytest.raises(ConfigError, match="global_num_gpus: 2 but the run has 4 ranks"):
        load_config([str(path)], world_size=4)


def _layout_world(names: list[str], config_dir: Path) -> int:
    """A world size the files' tp x pp layout fits, with 2 data-parallel replicas."""
    return 2 * layout_world_size(names, str(config_dir))


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "configs").glob("*.yml")))
def test_every_shipped_config_loads_alone_and_with_local_setup(name):
    configs = REPO / "configs"
    world = _layout_world([name], configs)
    load_config([name], config_dir=str(configs), world_size=world)
    load_config([name, "local_setup.yml"], config_dir=str(configs), world_size=world)


@pytest.mark.parametrize("name", ["small_gpt.yml", "pythia_style.yml", "bf16_style.yml", "text_generation.yml"])
def test_neox_format_fixtures_load(name):
    world = _layout_world([name], FIXTURES)
    cfg = load_config([name, "local_setup.yml"], config_dir=str(FIXTURES), world_size=world)
    assert cfg.data.data_path == "data/enwik8/enwik8_text_document"


def test_neox_fixture_values():
    cfg = load_config(["pythia_style", "local_setup"], config_dir=str(FIXTURES), world_size=4)
    assert cfg.model.gpt_j_residual and cfg.model.rotary_pct == 0.25
    assert cfg.model.attention_config == [[["flash"], 6]]
    assert cfg.training.precision == "fp16"
    assert cfg.parallel.data_parallel_size == 2
    assert cfg.training.train_batch_size == 8 * 2 * 2
    assert cfg.checkpoint.extra_save_iters == [0, 1, 2, 4, 8]
    bf16 = load_config(["bf16_style"], config_dir=str(FIXTURES), world_size=1)
    assert bf16.training.precision == "bfloat16"


# ---- the printer CLI and the generated docs ---------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "megatron_lite.config", *args],
        capture_output=True, text=True, cwd=REPO, timeout=60,
    )


def test_config_printer_prints_yaml_and_fails_clearly(tmp_path):
    ok = run_cli("-d", str(FIXTURES), "small_gpt", "local_setup", "--world_size", "2")
    assert ok.returncode == 0, ok.stderr
    assert "num_layers: 4" in ok.stdout and "data_parallel_size: 2" in ok.stdout
    bad = write(tmp_path, "bad.yml", "hidden_sise: 3\n")
    result = run_cli(bad)
    assert result.returncode == 1
    assert "unknown config key 'hidden_sise'" in result.stderr and "hidden_size" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.meta
def test_docs_config_md_is_current():
    result = subprocess.run(
        [sys.executable, "tools/gen_config_docs.py", "--check", "docs/config.md"],
        capture_output=True, text=True, cwd=REPO, timeout=60,
    )
    assert result.returncode == 0, result.stderr


def _alias_bomb(levels: int) -> str:
    lines = ['  x0: &x0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"  x{i}: &x{i} [" + ",".join([f"*x{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "deepspeed_extra_args:\n" + "\n".join(lines) + f"\nnum_layers: [*x{levels - 1}]\n"


def test_a_yaml_alias_bomb_is_refused_at_once(tmp_path):
    import time

    path = write(tmp_path, "bomb.yml", _alias_bomb(9))  # 9**9 items once expanded
    start = time.perf_counter()
    with pytest.raises(ConfigError, match="deepspeed_extra_args: the value expands to more than 100000 items"):
        load_config([path], world_size=1)
    assert time.perf_counter() - start < 5


def test_a_nested_value_where_a_number_belongs_is_one_short_line(tmp_path):
    path = write(tmp_path, "nested.yml", _alias_bomb(4))  # under the limit, wrong type
    with pytest.raises(ConfigError, match="num_layers must be int, got") as info:
        load_config([path], world_size=1)
    assert len(str(info.value)) < 200


# ---- the MLP width: GPT-NeoX's keys, Megatron-LM's ffn_hidden_size, --summary ----------------------


@pytest.mark.parametrize("keys, expected", [
    ({}, 256),  # 4h
    ({"expansion_factor": 2.5}, 160),  # int(2.5 h)
    ({"intermediate_size": 300}, 300),  # plain MLP: the width itself
    ({"intermediate_size": 300, "mlp_multiple_of": 128}, 384),
    ({"activation": "swiglu"}, 85),  # int(2/3 * 256) = 170 for value and gate together
    ({"activation": "geglu", "expansion_factor": 6}, 128),  # int(2/3 * 384) // 2
    ({"activation": "swiglu", "intermediate_size": 512, "mlp_multiple_of": 32}, 192),  # 170 -> 192
    ({"activation": "swiglu", "hidden_size": 4096, "intermediate_size": 32768, "mlp_multiple_of": 256}, 11008),
    ({"activation": "swiglu", "hidden_size": 8192, "intermediate_size": 86016, "mlp_multiple_of": 256}, 28672),
    # GPT-NeoX's up projection would round 85 to 86 rows but its down projection take 42: its
    # model cannot run; we build the down projection's width.
    ({"activation": "swiglu", "hidden_size": 32}, 42),
    ({"activation": "swiglu", "ffn_hidden_size": 192}, 192),  # Megatron-LM: the literal width
    ({"activation": "swiglu", "ffn_hidden_size": 192, "intermediate_size": 576}, 192),  # agree
])
def test_mlp_width_follows_gpt_neox(keys, expected):
    cfg = resolved(**keys)
    assert cfg.model.mlp_inner_size == expected
    assert cfg.model.intermediate_size == keys.get("intermediate_size")  # GPT-NeoX's key, as given


@pytest.mark.parametrize("keys, expected", [
    ({"intermediate_size": 512, "expansion_factor": 2.0}, "intermediate_size or expansion_factor, not both"),
    ({"activation": "swiglu", "ffn_hidden_size": 192, "intermediate_size": 512}, "mlp_inner_size \\(ffn_hidden_size\\) is 192 but .* give 170"),
    ({"mlp_multiple_of": 0}, "mlp_multiple_of must be >= 1"),
    ({"expansion_factor": 0}, "expansion_factor must be > 0"),
    ({"intermediate_size": 0}, "intermediate_size must be >= 1"),
    ({"activation": "swiglu", "model_parallel_size": 2}, "mlp_inner_size \\(85\\), is not divisible by model_parallel_size \\(2\\)"),
])
def test_contradictory_mlp_keys_are_errors(keys, expected):
    world = keys.get("model_parallel_size", 1)
    with pytest.raises(ConfigError, match=expected):
        resolved(world_size=world, **keys)


def test_resolved_llama_style_config_loads_back_to_the_same_config(tmp_path):
    cfg = resolved(activation="swiglu", intermediate_size=512, mlp_multiple_of=32)
    path = tmp_path / "resolved.yml"
    path.write_text(dump_yaml(cfg))
    assert "mlp_inner_size: 192" in path.read_text()
    assert load_config([str(path)], world_size=1) == cfg


def test_an_old_stored_config_keeps_its_literal_mlp_width():
    from megatron_lite.config.neox_compat import upgrade_stored_config

    # Written before mlp_inner_size existed: intermediate_size was the built width, GLU or not.
    old = {**BASE, "activation": "swiglu", "intermediate_size": 192}
    new = upgrade_stored_config(old)
    assert "intermediate_size" not in new and new["mlp_inner_size"] == 192
    assert resolve(config_from_flat(new), 1).model.mlp_inner_size == 192
    today = dump_yaml(resolved(activation="swiglu", intermediate_size=576))
    assert upgrade_stored_config(yaml.safe_load(today)) == yaml.safe_load(today)  # unchanged
