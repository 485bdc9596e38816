"""GPT-NeoX keys outside our schema (issue #18): nothing that changes what is computed is
accepted and ignored. Each former ignored key is ignored, refused unless default, or a field."""

from __future__ import annotations

import pytest
import yaml

from megatron_lite.config import ConfigError, load_config, neox_compat
from megatron_lite.config.deepspeed_config import build_deepspeed_config
from megatron_lite.config.loader import short
from megatron_lite.config.schema import key_index

BASE = {"num_layers": 2, "hidden_size": 64, "num_attention_heads": 4, "seq_length": 32,
        "train_micro_batch_size_per_gpu": 2, "train_iters": 10,
        "optimizer": {"type": "Adam", "params": {"lr": 0.001}}}

# IGNORED_KEYS before issue #18, and where each went.
FORMERLY_IGNORED = """
scaled_upper_triang_masked_softmax_fusion scaled_masked_softmax_fusion bias_gelu_fusion
bias_dropout_fusion rope_fusion layernorm_fusion use_flashattn_swiglu partition_activations
synchronize_each_layer contiguous_checkpointing checkpoint_in_cpu profile_backward
checkpoint_validation_with_forward_pass fp32_allreduce apply_query_key_layer_scaling
attention_softmax_in_fp32 gradient_noise_scale_n_batches gradient_noise_scale_cpu_offload
log_gradient_noise_scale log_param_norm log_optimizer_states profile profile_step_start
profile_step_stop memory_profiling memory_profiling_path dump_state use_checkpoint_lr_scheduler
override_lr_scheduler zero_allow_untested_optimizer mmap_warmup short_seq_prob reset_position_ids
reset_attention_mask eod_mask_loss use_shared_fs autotuning autotuning_run comment git_hash
wandb_init_all_ranks opt_pos_emb_offset amp auto_cast flops_profiler comms_logger
curriculum_learning sparse_gradients prescale_gradients gradient_predivide_factor
dynamic_loss_scale onnx_safe deepscale deepscale_config deepspeed_activation_checkpointing
precompute_model_name char_level_ppl tokenizer_kwargs output_layer_init_method_std
sequence_parallel pack_impl allow_chopped s3_path s3_chunk_size hf_upload checkpoint_scale
checkpoint_factor_scale keep_last_n_checkpoints_scale
""".split()

IMPLEMENTED = {"sequence_parallel",
               "eod_mask_loss", "reset_position_ids", "reset_attention_mask", "fp32_allreduce",
               "bias_gelu_fusion", "pack_impl", "allow_chopped", "precompute_model_name"}

# A value other than the default, for every key refused unless left at its default.
REFUSED = {
    "opt_pos_emb_offset": 2,
    "output_layer_init_method_std": 0.01,
    "curriculum_learning": {"enabled": True, "curriculum_type": "seqlen"},
    "amp": {"enabled": True, "opt_level": "O1"},
    "prescale_gradients": True,
    "gradient_predivide_factor": 2.0,
    "use_checkpoint_lr_scheduler": True,
    "tokenizer_kwargs": {"add_prefix_space": True},
    "autotuning_run": "tune",
    "checkpoint_scale": "log",
    "checkpoint_factor_scale": 2,
    "keep_last_n_checkpoints_scale": 2,
    "s3_path": "s3://bucket/run",
    "hf_upload": True,
    "use_bnb_optimizer": True,
}


def load(tmp_path, extra: dict):
    path = tmp_path / "run.yml"
    path.write_text(yaml.safe_dump({**BASE, **extra}))
    return load_config([str(path)], world_size=1)


def test_every_formerly_ignored_key_has_exactly_one_place():
    schema = key_index()
    for key in FORMERLY_IGNORED:
        places = [key in neox_compat.IGNORED_KEYS, key in neox_compat.UNSUPPORTED_KEYS, key in schema]
        assert places.count(True) == 1, key
        assert (key in schema) == (key in IMPLEMENTED), key
    assert set(REFUSED) <= set(neox_compat.UNSUPPORTED_KEYS)
    assert not (set(FORMERLY_IGNORED) - IMPLEMENTED - neox_compat.IGNORED_KEYS) - set(REFUSED)


@pytest.mark.parametrize("key", list(REFUSED))
def test_refused_value_is_one_line_naming_key_and_value(tmp_path, key):
    with pytest.raises(ConfigError) as err:
        load(tmp_path, {key: REFUSED[key]})
    message = str(err.value)
    assert "\n" not in message and "not implemented" in message
    assert f"{key}: {short(REFUSED[key])}" in message


def test_defaults_as_shipped_gpt_neox_configs_spell_them_load(tmp_path, caplog):
    defaults = {
        "sequence_parallel": False, "opt_pos_emb_offset": 0, "output_layer_init_method_std": None,
        "pack_impl": "packed", "curriculum_learning": {"enabled": False}, "amp": None,
        "prescale_gradients": False, "gradient_predivide_factor": 1.0,
        "use_checkpoint_lr_scheduler": False, "tokenizer_kwargs": {}, "autotuning_run": None,
        "checkpoint_scale": "linear", "s3_path": None, "hf_upload": False,
        "sliding_window_width": None, "use_bnb_optimizer": False,
        # ignored keys, whatever their value
        "allow_chopped": False, "partition_activations": True,  # allow_chopped: a field
        "override_lr_scheduler": True, "char_level_ppl": True, "sparse_gradients": True,
    }
    with caplog.at_level("INFO", logger="megatron_lite"):
        cfg = load(tmp_path, defaults)
    assert not (cfg.data.eod_mask_loss or cfg.data.reset_position_ids or cfg.data.reset_attention_mask)
    ignored = [r.getMessage() for r in caplog.records if "ignored" in r.getMessage()]
    assert len(ignored) == 1 and "partition_activations" in ignored[0] and "sequence_parallel" not in ignored[0]


def test_implemented_keys_load_and_reach_deepspeed(tmp_path):
    cfg = load(tmp_path, {"eod_mask_loss": True, "reset_position_ids": True,
                          "reset_attention_mask": True, "fp32_allreduce": True})
    assert cfg.data.eod_mask_loss and cfg.data.reset_position_ids and cfg.data.reset_attention_mask
    assert build_deepspeed_config(cfg, on_gpu=False)["communication_data_type"] == "fp32"
    assert "communication_data_type" not in build_deepspeed_config(load(tmp_path, {}), on_gpu=False)


@pytest.mark.parametrize("spec, layers, expected", [
    ([[["global", "flash"], 2]], 4, None),  # a pattern repeated count times: 4 layers
    ([[["global"], "all"]], 3, None),
    ([[["flash"], 1], [["global", "flash"], "all"]], 4, None),  # "all" is the whole answer
    (["global", "flash", "global"], 3, None),  # already expanded
    ([[["global", "flash"], 2]], 2, "covers 4 layers but num_layers is 2"),
    ([[["global", "flash"], "all"]], 3, "must tile num_layers"),
    ([[["gmlp"], "all"]], 2, "'gmlp' attention is not implemented"),
])
def test_attention_config_expands_as_gpt_neox(tmp_path, spec, layers, expected):
    keys = {**BASE, "num_layers": layers, "attention_config": spec}
    if expected is None:
        assert load(tmp_path, keys).model.attention_config == spec
    else:
        with pytest.raises(ConfigError, match=expected):
            load(tmp_path, keys)


def test_attention_type_multihead_contradicting_num_kv_heads_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match="attention_type: multihead contradicts num_kv_heads: 2"):
        load(tmp_path, {**BASE, "attention_type": "multihead", "num_kv_heads": 2})


def test_sequence_parallel_reaches_the_pipeline_and_checks_seq_length(tmp_path):
    path = tmp_path / "sp.yml"
    path.write_text(yaml.safe_dump({**BASE, "model_parallel_size": 2, "sequence_parallel": True}))
    cfg = load_config([str(path)], world_size=2)
    assert cfg.parallel.sequence_parallel
    # Each tensor rank holds its own sequence chunk: DeepSpeed's pipeline must send all of it.
    assert build_deepspeed_config(cfg, on_gpu=False)["pipeline"] == {
        "pipe_partitioned": False, "grad_partitioned": False}
    assert "pipeline" not in build_deepspeed_config(load(tmp_path, {"sequence_parallel": True}), on_gpu=False)
    path.write_text(yaml.safe_dump({**BASE, "seq_length": 30, "model_parallel_size": 4,
                                    "sequence_parallel": True}))
    with pytest.raises(ConfigError, match=r"sequence_parallel: seq_length \(30\) is not divisible by "
                                          r"model_parallel_size \(4\)"):
        load_config([str(path)], world_size=4)
