"""Reading a config: YAML and its `base:` files, dotted key=value overrides, validation against the config tree
(with the task sections the caller passes), the generic checks; every error is one ConfigError line."""

from __future__ import annotations

import difflib
import os
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from ptrain.config.checks import check_config
from ptrain.config.inherit import read_merged
from ptrain.config.keys import MISSING, raw_value
from ptrain.config.references import anchor_references
from ptrain.config.schema import DATA_DIR_ENV, Config, config_class
from ptrain.errors import ConfigError

Sections = Sequence[tuple[str, type[BaseModel]]]


def read_config(
    path: str | Path,
    overrides: Sequence[str] = (),
    sections: Sections = (),
    moved_keys: Mapping[str, Mapping[str, str]] | None = None,
) -> Config:
    """Read YAML (and its bases), apply `key=value` overrides, validate, run the generic checks.

    sections: (task name, section class) pairs the config may hold (ptrain.tasks passes its registry's);
    moved_keys: old dotted key -> {task: its new key}; an old key is refused in one line naming its new place.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    raw, origins = read_merged(path)
    if os.environ.get(DATA_DIR_ENV) and isinstance(raw.get("data"), dict):
        raw["data"]["data_dir"] = os.environ[DATA_DIR_ENV]  # the environment wins over every file
    overridden = set()
    for item in overrides:
        key, value = _parse_override(item)
        _set_dotted(raw, key, value)
        overridden.add(key)
    anchor_references(raw, Path.cwd())  # a relative file in an override is relative to the working directory
    _refuse_moved_keys(raw, moved_keys or {}, overridden, origins, path)
    schema = config_class(tuple(sections))
    try:
        cfg = schema.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_describe(err, path, overridden, origins, schema)) from None
    check_config(cfg, path)
    return cfg


def _refuse_moved_keys(
    raw: dict, moved: Mapping[str, Mapping[str, str]], overridden: set[str], origins: dict[str, Path], path: Path
) -> None:
    """A key that moved into a task's section names its new place (for this config's task when it has one)."""
    task = raw.get("task", Config.model_fields["task"].default)
    for old, places in moved.items():
        if raw_value(raw, old) is MISSING:
            continue
        where = f"override {old}" if old in overridden else str(_origin(old.split("."), origins, path))
        if task in places:
            raise ConfigError(f"{where}: '{old}' has moved to '{places[task]}' (the {task} section)")
        elsewhere = " or ".join(f"'{key}'" for key in places.values())
        raise ConfigError(f"{where}: '{old}' has moved to {elsewhere}, a key of another task than {task}")


def _parse_override(item: str) -> tuple[str, Any]:
    key, sep, text = item.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override '{item}' is not of the form dotted.key=value (e.g. train.epochs=2)")
    try:
        value = yaml.safe_load(text) if text else None
    except yaml.YAMLError:
        value = text
    if isinstance(value, bool) and text.strip().lower() not in ("true", "false"):
        value = text  # YAML 1.1 reads no/yes/on/off as booleans; on a command line they are words (mixed_precision=no)
    return key, value


def _set_dotted(raw: dict, key: str, value: Any) -> None:
    node = raw
    parts = key.split(".")
    for depth, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            prefix = ".".join(parts[: depth + 1])
            raise ConfigError(f"override '{key}': '{prefix}' is a value, not a section")
        node = child
    node[parts[-1]] = value


def _describe(
    err: ValidationError, path: Path, overridden: set[str], origins: dict[str, Path], schema: type[Config]
) -> str:
    first = err.errors()[0]
    loc = [str(part) for part in first["loc"] if not str(part).startswith("function-")]
    key = ".".join(loc)
    where = f"override {key}" if key in overridden else str(_origin(loc, origins, path))
    kind = first["type"]
    if kind == "extra_forbidden":
        return f"{where}: unknown key '{key}'{_suggest(loc, schema)}"
    if kind == "missing":
        return f"{path}: missing required key '{key}'"
    if kind == "value_error":
        return f"{where}: {first['msg'].removeprefix('Value error, ')}"
    return f"{where}: '{key}' {first['msg'][0].lower()}{first['msg'][1:]} (got {first.get('input')!r})"


def _origin(loc: list[str], origins: dict[str, Path], path: Path) -> Path:
    """The file that set this key, or the nearest section holding it; the named file when none did."""
    for depth in range(len(loc), 0, -1):
        if ".".join(loc[:depth]) in origins:
            return origins[".".join(loc[:depth])]
    return path


def _suggest(loc: list[str], schema: type[Config]) -> str:
    model: type[BaseModel] = schema
    named = False  # the previous part was a {name: section} mapping (data.mixture): this part is a name
    for part in loc[:-1]:
        if named:
            named = False
            continue
        field = model.model_fields.get(part)
        annotation = getattr(field, "annotation", None)
        named = typing.get_origin(annotation) is dict
        sections = [a for a in (annotation, *typing.get_args(annotation)) if isinstance(a, type)]
        sections = [a for a in sections if issubclass(a, BaseModel)]  # a task section is `Options | None`
        if not sections:
            return ""
        model = sections[0]
    close = difflib.get_close_matches(loc[-1], list(model.model_fields), n=1, cutoff=0.5)
    if not close:
        return f"; valid keys here: {', '.join(model.model_fields)}"
    return f" (did you mean '{'.'.join(loc[:-1] + close)}'?)"


def to_yaml(cfg: Config) -> str:
    """The resolved config as YAML; task sections without keys (and other tasks' unset ones) are left out."""
    tree = {key: value for key, value in cfg.model_dump(mode="json").items() if key in Config.model_fields or value}
    return yaml.safe_dump(tree, sort_keys=False)
