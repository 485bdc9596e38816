"""tools/check_neox_configs.py on GPT-NeoX-style configs the test writes (issue #18, item 3):
every config loads, or names the feature it needs, or fails."""

from __future__ import annotations

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Abridged from GPT-NeoX's shipped configs (same keys and spellings, smaller numbers).
CONFIGS = {
    "pythia/70M.yml": """{
  "pipe-parallel-size": 1, "model-parallel-size": 1,
  "num-layers": 6, "hidden-size": 512, "num-attention-heads": 8, "seq-length": 2048,
  "max-position-embeddings": 2048, "pos-emb": "rotary", "rotary-pct": 0.25,
  "no-weight-tying": true, "gpt-j-residual": true, "output-layer-parallelism": "column",
  "attention-config": [[["flash"], 6]], "scaled-upper-triang-masked-softmax-fusion": true,
  "bias-gelu-fusion": true, "init_method": "small_init", "output_layer_init_method": "wang_init",
  "optimizer": {"type": "Adam", "params": {"lr": 0.001, "betas": [0.9, 0.95], "eps": 1.0e-8}},
  "min_lr": 0.0001, "zero_optimization": {"stage": 1, "allgather_partitions": true},
  "train_micro_batch_size_per_gpu": 32, "gradient_clipping": 1.0, "fp16": {"enabled": true},
  "fp32_allreduce": true, "train-iters": 143000, "lr-decay-style": "cosine", "warmup": 0.01,
  "checkpoint-factor": 1000, "extra-save-iters": [0, 1, 2, 4, 8], "eval-interval": 143000,
  "eval-iters": 10, "log-interval": 10, "steps_per_print": 10, "wall_clock_breakdown": true,
  "tokenizer-type": "HFTokenizer"
}""",
    "llama/7B.yml": """{
  "pipe_parallel_size": 1, "model_parallel_size": 1, "make_vocab_size_divisible_by": 1,
  "num_layers": 32, "hidden_size": 4096, "num_attention_heads": 32, "seq_length": 2048,
  "max_position_embeddings": 2048, "pos_emb": "rotary", "rotary_pct": 1, "no_weight_tying": true,
  "gpt_j_residual": false, "output_layer_parallelism": "column", "norm": "rmsnorm",
  "rms_norm_epsilon": 1.0e-6, "scaled_upper_triang_masked_softmax_fusion": true,
  "bias_gelu_fusion": false, "use_bias_in_norms": false, "use_bias_in_attn_linear": false,
  "activation": "swiglu", "mlp_multiple_of": 256, "intermediate_size": 32768
}""",
    "llemma/34B.yml": """{
  "model_parallel_size": 8, "num_layers": 48, "hidden_size": 8192, "num_attention_heads": 64,
  "attention_type": "groupedquery", "num_kv_heads": 8, "seq_length": 4096, "pos_emb": "rotary",
  "rotary_emb_base": 1000000, "bf16": {"enabled": true}, "data_types": {"grad_accum_dtype": "fp32"}
}""",
    "slurm_125M.yml": """{
  "num_layers": 12, "hidden_size": 768, "num_attention_heads": 12, "seq_length": 2048,
  "launcher": "slurm", "deepspeed_slurm": true, "attention_config": [[["global"], "all"]]
}""",
    "mamba/mamba-130M.yml": """{
  "num_layers": 24, "hidden_size": 768, "attention_config": [[["mamba"], 24]],
  "mamba_selective_scan_fusion": true
}""",
    "125M-dmoe.yml": """{"num_layers": 12, "hidden_size": 768, "num_attention_heads": 12, "moe_num_experts": 8}""",
    "post-training/llama3-8b-dpo.yml": """{"num_layers": 2, "hidden_size": 64, "num_attention_heads": 4,
  "train_impl": "dpo", "dataset_impl": "pairwise", "pack_impl": "unpacked", "dpo_beta": 0.01,
  "pos_train_data_paths": ["data/pairwise/llama3_dpo_train_chosen_document"],
  "neg_train_data_paths": ["data/pairwise/llama3_dpo_train_rejected_document"]}""",
    # As GPT-NeoX ships it: the REINFORCE keys come before (and without) a refusable train_impl
    # in key order, and must be refused by name, not reported as unknown keys.
    "post-training/llama3-8b-reinforce.yml": """{"num_layers": 2, "hidden_size": 64,
  "reinforce_leave_one_out": true, "fp32_reinforce": true, "kl_impl": "abs",
  "online_dataserver_ports": [10000, 10001], "train_impl": "reinforce"}""",
    "llemma/7B.yml": """{"num_layers": 2, "hidden_size": 64, "num_attention_heads": 4, "decay_lr_to": 0.033}""",
    "typo.yml": """{"num_layers": 2, "hiden_size": 64}""",
}


def test_every_config_loads_or_names_what_is_missing(tmp_path, capsys):
    for name, text in CONFIGS.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    spec = importlib.util.spec_from_file_location("check", REPO / "tools" / "check_neox_configs.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    assert tool.main([str(tmp_path)]) == 1  # the typo fails the check; refusals do not
    lines = {line.split()[1].rstrip(":"): line for line in capsys.readouterr().out.splitlines()}
    for name in ("pythia/70M.yml", "llama/7B.yml", "llemma/34B.yml", "slurm_125M.yml",
                 "post-training/llama3-8b-dpo.yml"):
        assert lines[name].startswith("ok "), lines[name]
    for name, feature in (("mamba/mamba-130M.yml", "Mamba"), ("125M-dmoe.yml", "mixture of experts"),
                          ("post-training/llama3-8b-reinforce.yml", "REINFORCE"),
                          ("llemma/7B.yml", "decay_lr_to of the llemma fork of GPT-NeoX; set min_lr instead")):
        assert lines[name].startswith("refused ") and feature in lines[name], lines[name]
    assert lines["typo.yml"].startswith("FAIL ") and "'hiden_size'" in lines["typo.yml"]
