"""The curation config: one section per stage, a preset, and a YAML file that overrides it.

``load_config(path, preset)`` starts from the preset (``web``, ``code`` or ``none``), then applies
the YAML file section by section. A key no section knows is an error naming the key and the
closest known ones (difflib), like the training config. A threshold set to ``null`` switches
that one rule off; ``enabled: false`` switches a whole stage off.

Presets:

- ``web``: English web text, the FineWeb / Gopher / C4 thresholds (docs/curation.md lists them);
- ``code``: source code: the rules that wrongly drop code are off (symbol and alphabetic-word
  ratios, stop words, bullet and repetition rules, C4's sentence and line rules, language
  identification); deduplication, PII and decontamination stay on;
- ``none``: every stage off, for a config file to switch on what it wants (decontamination is
  on whenever ``decontamination.eval_files`` is given, unless ``enabled: false``).
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from typing import Any

import yaml

PRESETS = ("web", "code", "none")


@dataclass
class DedupConfig:
    """Exact (normalized-text hash) and near (MinHash LSH) deduplication.

    Two documents become LSH candidates when one of ``bands`` bands of ``rows`` MinHash values
    agrees: probability ``1 - (1 - J**rows)**bands`` at Jaccard similarity ``J`` of their word
    ``ngram`` shingle sets; the implied threshold is about ``(1 / bands) ** (1 / rows)``.
    """

    exact: bool = True
    near: bool = True
    num_perm: int = 160  # must equal bands * rows
    bands: int = 20
    rows: int = 8
    ngram: int = 5
    seed: int = 1


@dataclass
class LanguageConfig:
    """Language identification (CLD2, pycld2: langid.py)."""

    enabled: bool = True
    languages: list[str] = field(default_factory=lambda: ["en"])
    min_score: float = 0.65
    chars: int = 4000  # the first this many characters are classified (cost grows with length)


@dataclass
class GopherQualityConfig:
    """Gopher quality rules (Rae et al. 2021, appendix A.1.1)."""

    enabled: bool = True
    min_words: int | None = 50
    max_words: int | None = 100000
    min_mean_word_length: float | None = 3.0
    max_mean_word_length: float | None = 10.0
    max_symbol_word_ratio: float | None = 0.1  # "#" and ellipses per word
    max_bullet_lines_ratio: float | None = 0.9
    max_ellipsis_lines_ratio: float | None = 0.3
    min_alpha_words_ratio: float | None = 0.8  # words with at least one letter
    min_stop_words: int | None = 2  # of: the, be, to, of, and, that, have, with


@dataclass
class GopherRepetitionConfig:
    """Gopher repetition rules (Rae et al. 2021, table A1)."""

    enabled: bool = True
    max_dup_line_ratio: float | None = 0.3
    max_dup_para_ratio: float | None = 0.3
    max_dup_line_char_ratio: float | None = 0.2
    max_dup_para_char_ratio: float | None = 0.2
    # n -> the most frequent n-gram's largest share of the characters
    max_top_ngram_char_ratio: dict[int, float] = field(default_factory=lambda: {2: 0.2, 3: 0.18, 4: 0.16})
    # n -> the largest share of characters in n-grams that occur more than once
    max_dup_ngram_char_ratio: dict[int, float] = field(
        default_factory=lambda: {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10})


@dataclass
class C4Config:
    """C4 rules (Raffel et al. 2020, section 2.2). Line rules remove lines; document rules
    remove the document."""

    enabled: bool = True
    lorem_ipsum: bool = True  # document
    javascript_lines: bool = True  # lines mentioning javascript ("please enable JavaScript")
    policy_lines: bool = True  # "terms of use", "privacy policy", cookie notices
    min_sentences: int | None = 5  # document, after the line rules
    min_words_per_line: int | None = 3
    max_word_length: int | None = 1000  # lines with a longer word
    terminal_punctuation_lines: bool = False  # C4 keeps only such lines; FineWeb turned it off
    curly_bracket: bool = False  # C4 drops any page with "{"; off: it drops code and math


@dataclass
class PIISection:
    """Passed to ``megatron_lite.curation.pii.PIIConfig`` (every key but ``enabled``)."""

    enabled: bool = True
    mode: str = "placeholder"
    kinds: list[str] | None = None  # None: every kind pii.py knows
    secret: str | None = None
    blocklist_file: str | None = None
    blocklist_max: int = 0


@dataclass
class DecontaminationConfig:
    """Evaluation sets kept out (``megatron_lite.curation.decontaminate``)."""

    enabled: bool | None = None  # None: on when eval_files is given
    eval_files: list[str] = field(default_factory=list)
    ngram: int = 13
    mode: str = "drop"


@dataclass
class StatsConfig:
    source_field: str | None = "meta.source"  # else the input file's name


@dataclass
class ClusterConfig:
    """The datatrove executors (``--executor local|slurm|ray``)."""

    tasks: int = 0  # stage-1 tasks; 0: one per input file
    bucket_shards: int = 1  # hash ranges per band in the grouping stage
    workers: int = 0  # tasks at once (local, ray; slurm: the array limit %N); 0: --workers (slurm: no limit)
    partition: str | None = None  # slurm
    time: str = "24:00:00"  # slurm, per task
    cpus_per_task: int = 1
    mem_per_cpu_gb: float = 2.0


@dataclass
class CurationConfig:
    dedup: DedupConfig = field(default_factory=DedupConfig)
    language: LanguageConfig = field(default_factory=LanguageConfig)
    gopher_quality: GopherQualityConfig = field(default_factory=GopherQualityConfig)
    gopher_repetition: GopherRepetitionConfig = field(default_factory=GopherRepetitionConfig)
    c4: C4Config = field(default_factory=C4Config)
    pii: PIISection = field(default_factory=PIISection)
    decontamination: DecontaminationConfig = field(default_factory=DecontaminationConfig)
    stats: StatsConfig = field(default_factory=StatsConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_CODE_QUALITY = {k: None for k in ("min_mean_word_length", "max_mean_word_length", "max_symbol_word_ratio",
                                   "max_bullet_lines_ratio", "max_ellipsis_lines_ratio",
                                   "min_alpha_words_ratio", "min_stop_words")}
# Overrides of the defaults (which are the web preset).
_PRESET_OVERRIDES: dict[str, dict[str, dict[str, Any]]] = {
    "web": {},
    # Code: symbols, short identifiers, repeated lines ("}", "return") and n-grams, few
    # sentences and no stop words are normal; none of these rules applies.
    "code": {"language": {"enabled": False}, "gopher_quality": {**_CODE_QUALITY, "min_words": 5},
             "gopher_repetition": {"enabled": False}, "c4": {"enabled": False}},
    "none": {name: {"enabled": False} for name in ("language", "gopher_quality", "gopher_repetition",
                                                     "c4", "pii")}
    | {"dedup": {"exact": False, "near": False}},
}


def load_config(path: str | None = None, preset: str = "web") -> CurationConfig:
    """The preset, overridden by the YAML file at ``path`` (checked: see the module docstring)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r} (use one of {', '.join(PRESETS)})")
    cfg = CurationConfig()
    apply_overrides(cfg, _PRESET_OVERRIDES[preset], "preset " + preset)
    if path:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
        if data is not None and not isinstance(data, dict):
            raise ValueError(f"{path}: a curation config is a mapping of sections (dedup, c4, ...)")
        apply_overrides(cfg, data or {}, path)
    check_config(cfg)
    return cfg


def _unknown(where: str, key: Any, known: list[str]) -> ValueError:
    close = difflib.get_close_matches(str(key), known, n=3, cutoff=0.5)
    hint = f" (closest: {', '.join(close)})" if close else f" (known: {', '.join(known)})"
    return ValueError(f"{where}: unknown key {key!r}{hint}")


def apply_overrides(cfg: CurationConfig, data: dict[str, Any], where: str) -> None:
    """Set ``data[section][key]`` on ``cfg``; an unknown section or key is a ``ValueError``."""
    sections = [f.name for f in dataclasses.fields(cfg)]
    for name, values in data.items():
        if name not in sections:
            raise _unknown(where, name, sections)
        section = getattr(cfg, name)
        if not isinstance(values, dict):
            raise ValueError(f"{where}: section {name!r} must be a mapping of keys, not {values!r}")
        keys = [f.name for f in dataclasses.fields(section)]
        for key, value in values.items():
            if key not in keys:
                raise _unknown(f"{where}: {name}", key, keys)
            setattr(section, key, value)


def check_config(cfg: CurationConfig) -> None:
    """Values that cannot work, as one ``ValueError`` naming the key."""
    d = cfg.dedup
    for key in ("num_perm", "bands", "rows", "ngram"):
        if not isinstance(getattr(d, key), int) or getattr(d, key) < 1:
            raise ValueError(f"dedup.{key} must be a positive integer, not {getattr(d, key)!r}")
    if d.num_perm != d.bands * d.rows:
        raise ValueError(f"dedup.num_perm ({d.num_perm}) must equal dedup.bands * dedup.rows "
                         f"({d.bands} * {d.rows} = {d.bands * d.rows})")
    if cfg.decontamination.enabled is None:
        cfg.decontamination.enabled = bool(cfg.decontamination.eval_files)
    if cfg.decontamination.enabled and not cfg.decontamination.eval_files:
        raise ValueError("decontamination.enabled needs decontamination.eval_files")
    if cfg.decontamination.mode not in ("drop", "cut"):
        raise ValueError(f"decontamination.mode must be drop or cut, not {cfg.decontamination.mode!r}")
    rep = cfg.gopher_repetition
    for key in ("max_top_ngram_char_ratio", "max_dup_ngram_char_ratio"):
        value = getattr(rep, key)
        if not isinstance(value, dict) or not all(isinstance(n, int) and n >= 1 for n in value):
            raise ValueError(f"gopher_repetition.{key} maps n-gram sizes (integers) to ratios, not {value!r}")
    if cfg.cluster.bucket_shards < 1 or cfg.cluster.tasks < 0:
        raise ValueError("cluster.bucket_shards must be at least 1 and cluster.tasks at least 0")


def implied_threshold(bands: int, rows: int) -> float:
    """The Jaccard similarity where the LSH candidate probability rises most steeply:
    about ``(1 / bands) ** (1 / rows)``."""
    return (1.0 / bands) ** (1.0 / rows)


def candidate_probability(jaccard: float, bands: int, rows: int) -> float:
    """The probability that two documents of Jaccard similarity ``jaccard`` share a band."""
    return 1.0 - (1.0 - jaccard ** rows) ** bands
