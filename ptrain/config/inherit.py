"""Config files that name base files (`base: emotion.yaml` or a list): read the chain, merge it, and remember
which file set each key, so an error names the file that holds the bad key."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from ptrain.config.references import anchor_references
from ptrain.errors import ConfigError, first_line

BASE_KEY = "base"


def read_merged(path: Path) -> tuple[dict, dict[str, Path]]:
    """The file's mapping on top of its bases (later bases over earlier ones), and dotted key -> file."""
    return _read(path, ())


def _read(path: Path, chain: tuple[Path, ...]) -> tuple[dict, dict[str, Path]]:
    resolved = path.resolve()
    if resolved in chain:
        loop = " -> ".join(str(p) for p in (*chain[chain.index(resolved) :], resolved))
        raise ConfigError(f"{path}: config bases form a cycle: {loop}")
    raw = _read_file(path)
    bases = raw.pop(BASE_KEY, None)
    _resolve_data_dir(raw, resolved.parent)  # before merging: a base's data_dir is relative to the base file
    anchor_references(raw, resolved.parent)  # and so are its code references (train.loss, ...)
    merged: dict = {}
    origins: dict[str, Path] = {}
    for name in _base_names(path, bases):
        base_path = Path(name).expanduser()
        if not base_path.is_absolute():
            base_path = resolved.parent / base_path
        if not base_path.is_file():
            raise ConfigError(f"{path}: base config {name} does not exist (looked for {base_path})")
        base_raw, base_origins = _read(base_path, (*chain, resolved))
        _merge(merged, base_raw, origins, base_origins, base_path)
    _merge(merged, raw, origins, {}, path)
    return merged, origins


def _read_file(path: Path) -> dict:
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({first_line(err)})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, got {type(raw).__name__}")
    return raw


def _base_names(path: Path, bases) -> list[str]:
    if bases is None:
        return []
    names = [bases] if isinstance(bases, str) else bases
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise ConfigError(f"{path}: 'base' must be a file name or a list of file names, got {bases!r}")
    return names


def _merge(into: dict, layer: dict, origins: dict, layer_origins: dict, layer_file: Path, prefix: str = "") -> None:
    """Sections merge key by key; any other value (lists included) replaces the one below it."""
    for key, value in layer.items():
        dotted = f"{prefix}{key}"
        origins[dotted] = layer_origins.get(dotted, layer_file)
        if isinstance(value, dict) and isinstance(into.get(key), dict) and key != "scratch_config":
            _merge(into[key], value, origins, layer_origins, layer_file, f"{dotted}.")
        else:
            into[key] = value
            for stale in [k for k in origins if k.startswith(f"{dotted}.")]:
                del origins[stale]
            origins.update({k: v for k, v in layer_origins.items() if k.startswith(f"{dotted}.")})


def _resolve_data_dir(raw: dict, config_dir: Path) -> None:
    data = raw.get("data")
    if isinstance(data, dict) and isinstance(data.get("data_dir"), str) and not os.path.isabs(data["data_dir"]):
        data["data_dir"] = os.path.normpath(config_dir / data["data_dir"])
