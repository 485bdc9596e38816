"""Read flat GPT-NeoX YAML files, merge them left to right, and build a resolved ``Config``.

Strictness is the point: an unknown key is an error naming the file, the key and the closest
known keys; a GPT-NeoX feature we lack is an error naming it; a key we accept but ignore is
listed once. No torch import here: ``deepy.py`` resolves configs before any worker starts.
"""

from __future__ import annotations

import difflib
import os
import reprlib
from dataclasses import dataclass, field, fields
from typing import Any

import yaml

from megatron_lite.config import neox_compat
from megatron_lite.config.schema import GROUP_CLASSES, Config, key_index
from megatron_lite.utils.logging import get_logger

logger = get_logger(__name__)


class ConfigError(ValueError):
    """A configuration problem, with a message meant for the user (no traceback needed)."""


@dataclass
class RawConfig:
    """Merged flat keys before typing: value and the file each came from."""

    values: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    ignored: dict[str, str] = field(default_factory=dict)


def normalize_key(key: str) -> str:
    """``-`` and ``_`` are the same; Megatron-LM / old GPT-NeoX spellings map to ours."""
    key = str(key).strip().replace("-", "_")
    return neox_compat.ALIASES.get(key, key)


def resolve_config_paths(names: list[str], config_dir: str | None = None) -> list[str]:
    """Apply the ``-d DIR`` prefix and the optional ``.yml`` suffix; error on a missing file."""
    paths = []
    for name in names:
        candidates = [name]
        if config_dir and not os.path.isabs(name):
            candidates.insert(0, os.path.join(config_dir, name))
        for candidate in list(candidates):
            if not candidate.endswith((".yml", ".yaml")):
                candidates += [candidate + ".yml", candidate + ".yaml"]
        found = next((c for c in candidates if os.path.isfile(c)), None)
        if found is None:
            where = f" (looked in {config_dir!r} too)" if config_dir else ""
            raise ConfigError(f"config file not found: {name}{where}")
        paths.append(found)
    return paths


def read_yaml(path: str) -> dict[str, Any]:
    """One YAML file as a flat mapping, with errors that name the file and line."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}:{where}: invalid YAML: {problem}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file must be a mapping of keys to values")
    return data


def merge_files(paths: list[str], overrides: dict[str, Any] | None = None) -> RawConfig:
    """Merge files left to right (later wins, logged), then command-line overrides."""
    raw = RawConfig()
    sources = [(path, read_yaml(path)) for path in paths]
    if overrides:
        sources.append(("<command line>", {k: v for k, v in overrides.items() if v is not None}))
    known = key_index()
    for source, data in sources:
        for original_key, value in data.items():
            key = normalize_key(original_key)
            if key in neox_compat.IGNORED_KEYS:
                raw.ignored.setdefault(key, source)
                continue
            _check_size(original_key, value, source)
            if key not in known:
                _check_unknown_key(key, original_key, value, source, known)
                continue
            if key in raw.values and raw.values[key] != value:
                logger.info(
                    "%s overrides %s: %s -> %s (was set in %s)",
                    source, key, short(raw.values[key]), short(value), raw.sources[key],
                )
            raw.values[key] = value
            raw.sources[key] = source
    return raw


_MAX_ITEMS = 100_000  # scalars and containers in one key's value, aliases expanded


def short(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters, without building the whole repr: messages
    stay one short line whatever the value (a YAML alias bomb included)."""
    brief = reprlib.Repr()  # attributes, not keywords: Python 3.10 and 3.11 take none
    brief.maxstring = brief.maxother = limit
    brief.maxlist = brief.maxdict = brief.maxtuple = 6
    brief.maxlevel = 3
    return brief.repr(value)[:limit]


def _expanded_size(value: Any, memo: dict[int, int]) -> int:
    """Items in ``value`` once YAML aliases are expanded (shared subtrees counted per use,
    computed once each: linear in the document, not in its expansion)."""
    if not isinstance(value, (list, tuple, dict)):
        return 1
    if id(value) not in memo:
        memo[id(value)] = 0  # a self-referencing value counts its cycle once
        items = list(value.items()) if isinstance(value, dict) else [(None, v) for v in value]
        memo[id(value)] = 1 + sum(_expanded_size(v, memo) for _, v in items)
    return memo[id(value)]


def _check_size(key: str, value: Any, source: str) -> None:
    if _expanded_size(value, {}) > _MAX_ITEMS:
        raise ConfigError(f"{source}: {key}: the value expands to more than {_MAX_ITEMS} items "
                          "(YAML aliases nested in aliases?)")


def _check_unknown_key(key: str, original: str, value: Any, source: str, known: dict) -> None:
    if key in neox_compat.UNSUPPORTED_KEYS:
        default, feature = neox_compat.UNSUPPORTED_KEYS[key]
        # Shipped GPT-NeoX configs spell "off" many ways: the default, null, empty, false, or a
        # DeepSpeed section with enabled: false (curriculum_learning, amp).
        disabled = isinstance(value, dict) and value.get("enabled") is False
        if value == default or value in (None, {}, [], False) or disabled:
            return
        raise ConfigError(
            f"{source}: {original}: {short(value)} is not implemented in megatron_lite ({feature}); "
            + ("remove the key" if default is None else f"remove the key or set it to {default!r}")
        )
    vocabulary = list(known) + list(neox_compat.ALIASES) + list(neox_compat.IGNORED_KEYS)
    close = difflib.get_close_matches(key, vocabulary, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise ConfigError(
        f"{source}: unknown config key {original!r}{hint} "
        f"(all keys are listed in docs/config.md)"
    )


def _coerce(value: Any, annotation: str, key: str, source: str) -> Any:
    """Check a YAML value against a field's annotation (a string: annotations are postponed)."""
    types = [t.strip() for t in annotation.split("|")]
    if value is None:
        if "None" in types:
            return None
        raise ConfigError(f"{source}: {key} cannot be null")
    for type_name in types:
        if type_name == "bool" and isinstance(value, bool):
            return value
        if type_name == "int" and not isinstance(value, bool):
            if isinstance(value, int):
                return value
            if isinstance(value, float) and value.is_integer():
                return int(value)
        if type_name == "float" and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if type_name == "str" and isinstance(value, str):
            return value
        if type_name == "list" and isinstance(value, (list, tuple)):
            return list(value)
        if type_name == "dict" and isinstance(value, dict):
            return dict(value)
    expected = " or ".join(t for t in types if t != "None")
    raise ConfigError(f"{source}: {key} must be {expected}, got {short(value)}")


def _check_supported_value(key: str, value: Any, source: str) -> None:
    allowed = neox_compat.SUPPORTED_VALUES.get(key)
    if allowed is None or value is None or value in allowed:
        return
    raise ConfigError(
        f"{source}: {key}: {short(value)} is not implemented in megatron_lite "
        f"(supported: {', '.join(sorted(map(str, allowed)))})"
    )


def build_config(raw: RawConfig) -> Config:
    """Typed ``Config`` (not yet derived or validated) from merged raw keys."""
    index = key_index()
    group_kwargs: dict[str, dict[str, Any]] = {name: {} for name in GROUP_CLASSES}
    for key, value in raw.values.items():
        group_name, fld = index[key]
        source = raw.sources[key]
        typed = _coerce(value, str(fld.type), key, source)
        _check_supported_value(key, typed, source)
        group_kwargs[group_name][key] = typed
    groups = {name: GROUP_CLASSES[name](**kwargs) for name, kwargs in group_kwargs.items()}
    return Config(**groups)


def config_from_flat(values: dict[str, Any], source: str = "<dict>") -> Config:
    """Build a config from an in-memory flat mapping (tests, tools)."""
    raw = RawConfig()
    known = key_index()
    for original_key, value in values.items():
        key = normalize_key(original_key)
        if key in neox_compat.IGNORED_KEYS:
            continue
        if key not in known:
            _check_unknown_key(key, original_key, value, source, known)
            continue
        raw.values[key] = value
        raw.sources[key] = source
    return build_config(raw)


def dump_yaml(cfg: Config) -> str:
    """The resolved config as flat YAML that loads back to the same config."""
    return yaml.safe_dump(cfg.to_flat_dict(), sort_keys=False, default_flow_style=None, width=100)


def field_help() -> dict[str, tuple[str, str, Any, str, bool]]:
    """key -> (group, type, default, help, derived), for the generated docs."""
    out = {}
    for group_name, cls in GROUP_CLASSES.items():
        instance = cls()
        for fld in fields(cls):
            out[fld.name] = (
                group_name,
                str(fld.type),
                getattr(instance, fld.name),
                fld.metadata["help"],
                fld.metadata["derived"],
            )
    return out
