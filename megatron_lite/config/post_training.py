"""Checks of the post-training keys (``train_impl`` dpo / kto / rm, ``dataset_impl: pairwise``,
``pack_impl: unpacked``) before any process starts: what GPT-NeoX would fail on at its first
batch, or silently mis-read, is one line here."""

from __future__ import annotations

from megatron_lite.config.loader import ConfigError
from megatron_lite.config.schema import Config, DataConfig

_SPLITS = ("train", "valid", "test")


def _count(data: DataConfig, key: str) -> int:
    value = getattr(data, key)
    return 0 if value is None else 1 if isinstance(value, str) else len(value)


def _check_pairwise_paths(data: DataConfig) -> None:
    if not _count(data, "pos_train_data_paths"):
        raise ConfigError("dataset_impl: pairwise reads pos_train_data_paths (chosen) and "
                          "neg_train_data_paths (rejected): set both")
    for split in _SPLITS:
        pos = _count(data, f"pos_{split}_data_paths")
        counts = {key: _count(data, key) for key in (
            f"neg_{split}_data_paths", f"pos_{split}_label_data_paths", f"neg_{split}_label_data_paths")}
        for key, n in counts.items():
            if n != pos and (n or not key.endswith("_label_data_paths")):
                raise ConfigError(f"{key} has {n} entries but pos_{split}_data_paths has {pos}: "
                                  "chosen and rejected datasets (and their labels) come in pairs")
        labels = [n for key, n in counts.items() if key.endswith("_label_data_paths")]
        if (labels[0] == 0) != (labels[1] == 0):
            raise ConfigError(f"pos_{split}_label_data_paths and neg_{split}_label_data_paths: give both or neither")


def _check_kto(cfg: Config) -> None:
    data = cfg.data
    if data.pack_impl != "unpacked":
        raise ConfigError("train_impl: kto reads one document (and its reward) per sample: set pack_impl: unpacked")
    for split in _SPLITS:
        paths, rewards = _count(data, f"{split}_data_paths"), _count(data, f"{split}_reward_data_paths")
        if paths != rewards:
            raise ConfigError(f"train_impl: kto: {split}_reward_data_paths has {rewards} entries but "
                              f"{split}_data_paths has {paths}: every dataset needs its rewards")
    if not _count(data, "train_data_paths"):
        raise ConfigError("train_impl: kto reads train_data_paths with train_label_data_paths and "
                          "train_reward_data_paths")
    micro = cfg.training.train_micro_batch_size_per_gpu
    if micro is not None and micro < 2:
        raise ConfigError(f"train_impl: kto needs train_micro_batch_size_per_gpu >= 2, got {micro}: each "
                          "half of a micro batch is the other half's KL reference (as in GPT-NeoX)")


def check_post_training(cfg: Config) -> None:
    """``train_impl`` and the data it reads agree (docs/cli.md#post-training-dpo-kto-reward-models)."""
    impl, data = cfg.post_training.train_impl, cfg.data
    pairwise = data.dataset_impl == "pairwise"
    if impl in ("dpo", "rm") and not pairwise:
        raise ConfigError(f"train_impl: {impl} trains on chosen/rejected pairs: set dataset_impl: pairwise "
                          "with pos_train_data_paths and neg_train_data_paths")
    if pairwise:
        if impl not in ("dpo", "rm"):
            raise ConfigError(f"dataset_impl: pairwise serves train_impl dpo or rm, not {impl}")
        if data.pack_impl != "unpacked":
            raise ConfigError("dataset_impl: pairwise needs pack_impl: unpacked (one pair per sample; "
                              "GPT-NeoX refuses packed pairs too)")
        _check_pairwise_paths(data)
    if impl == "kto":
        _check_kto(cfg)
    elif any(_count(data, f"{split}_reward_data_paths") for split in _SPLITS):
        raise ConfigError(f"train_reward_data_paths (and valid_/test_) are read by train_impl kto only, not {impl}")
    if data.precompute_model_name and impl not in ("dpo", "kto"):
        raise ConfigError(f"precompute_model_name gives reference log-probabilities to train_impl dpo or kto, "
                          f"not {impl}")
    for key in ("dpo_beta", "kto_beta", "kto_desirable_weight", "kto_undesirable_weight", "z_loss"):
        value = getattr(cfg.post_training, key)
        if not value >= 0 or value == float("inf"):
            raise ConfigError(f"{key} must be finite and >= 0, got {value}")
