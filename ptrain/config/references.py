"""The user's own code, named in a config: `path/to/file.py:Name` (relative to the config file that sets it, or
to the working directory on the command line) or `package.module:Name`. Only what a config names is imported;
each file is imported once per process. A run folder keeps a copy of the files it used (`code/`), and its
config.yaml names the copies, so the run can be re-run and resumed from its folder alone."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import shutil
import sys
from pathlib import Path
from types import ModuleType

from ptrain.errors import ConfigError, first_line

# The keys whose values name code: one reference each, or a list of them.
REFERENCE_KEYS = ("train.loss", "model.builder", "train.metrics", "train.callbacks")
COPIES_DIR = "code"


def is_file_reference(value: str) -> bool:
    return value.partition(":")[0].endswith(".py")


def references_of(value) -> list[str]:
    """The references a key's value holds (None, one string or a list of strings)."""
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def anchor_references(raw: dict, config_dir: Path) -> None:
    """Make the relative file references in a config file's mapping absolute, relative to config_dir (the file's
    folder): a config's (or a base's) files are then found wherever the command runs."""
    for key in REFERENCE_KEYS:
        section_name, name = key.split(".")
        section = raw.get(section_name)
        if not isinstance(section, dict):
            continue
        value = section.get(name)
        if isinstance(value, str) and is_file_reference(value):
            section[name] = _anchored(value, config_dir)
        elif isinstance(value, list):
            section[name] = [
                _anchored(v, config_dir) if isinstance(v, str) and is_file_reference(v) else v for v in value
            ]


def _anchored(reference: str, config_dir: Path) -> str:
    file, _, name = reference.partition(":")
    if os.path.isabs(os.path.expanduser(file)):
        return reference
    return f"{os.path.normpath(config_dir / file)}:{name}"


def load_reference(reference: str, key: str):
    """The object a reference names; a missing file, module or name is one ConfigError naming the key."""
    where, sep, name = reference.rpartition(":")
    if not sep or not where or not name.isidentifier():
        raise ConfigError(
            f"{key}: '{reference}' is not a code reference; write path/to/file.py:Name or package.module:Name"
        )
    module = _import_file(where, key) if is_file_reference(reference) else _import_module(where, key)
    if not hasattr(module, name):
        defined = sorted(n for n in vars(module) if not n.startswith("_"))[:8]
        raise ConfigError(f"{key}: {where} defines no '{name}' (it defines {', '.join(defined) or 'nothing'})")
    return getattr(module, name)


def _import_module(name: str, key: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError as err:
        raise ConfigError(
            f"{key}: module '{name}' cannot be imported ({first_line(err)}); install it, or name a file "
            "as path/to/file.py:Name"
        ) from None


def _import_file(file: str, key: str) -> ModuleType:
    path = Path(file).expanduser().resolve()
    if not path.is_file():
        raise ConfigError(
            f"{key}: {file} does not exist; the path is relative to the config file that sets it "
            "(or to the working directory in an override)"
        )
    module_name = f"ptrain_user_code.{path.stem}_{hashlib.sha256(str(path).encode()).hexdigest()[:10]}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # before running it: dataclasses and pickling look modules up by name
    try:
        spec.loader.exec_module(module)
    except Exception as err:  # the user's file itself fails: say which, with its own first line
        del sys.modules[module_name]
        raise ConfigError(f"{key}: importing {path} failed: {type(err).__name__}: {first_line(err)}") from None
    return module


def copy_user_files(references: dict[str, object], run_dir: Path) -> dict[str, object]:
    """Copy every file a reference names into run_dir/code/; returns the values naming the copies (relative to
    the run folder, where config.yaml lies). Module references stay as they are."""
    copies: dict[Path, str] = {}
    renamed = {}
    for key, value in references.items():
        new = []
        for reference in references_of(value):
            if not is_file_reference(reference):
                new.append(reference)
                continue
            file, _, name = reference.rpartition(":")
            source = Path(file).expanduser().resolve()
            if source not in copies:
                copies[source] = _copy_into(source, run_dir / COPIES_DIR, set(copies.values()))
            new.append(f"{COPIES_DIR}/{copies[source]}:{name}")
        renamed[key] = new if isinstance(value, list) else (new[0] if new else None)
    return renamed


def _copy_into(source: Path, folder: Path, taken: set[str]) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    name, index = source.name, 1
    while name in taken:
        index += 1
        name = f"{source.stem}_{index}{source.suffix}"
    shutil.copy2(source, folder / name)
    return name


def reference_identity(reference: str, base: Path | None = None) -> str:
    """What a reference runs, for comparing configs: a file by its content (so the run's copy matches its
    original), a module by its name."""
    if not is_file_reference(reference):
        return reference
    file, _, name = reference.rpartition(":")
    path = Path(file).expanduser()
    path = path if path.is_absolute() or base is None else base / path
    if not path.is_file():
        return reference
    return f"sha256 {hashlib.sha256(path.read_bytes()).hexdigest()}:{name}"


def with_copied_code(cfg, run_dir: Path):
    """The config as a run folder records it: its user files copied into run_dir/code/ and named there."""
    values = {key: getattr(getattr(cfg, key.split(".")[0]), key.split(".")[1]) for key in REFERENCE_KEYS}
    if not any(references_of(value) for value in values.values()):
        return cfg
    copies = copy_user_files(values, run_dir)
    sections = {}
    for key, value in copies.items():
        section, name = key.split(".")
        sections.setdefault(section, {})[name] = value
    return cfg.model_copy(
        update={section: getattr(cfg, section).model_copy(update=update) for section, update in sections.items()}
    )


def comparable_references(flat: dict, base: Path | None = None) -> dict:
    """A flattened config with its code references replaced by what they run (reference_identity)."""
    flat = dict(flat)
    for key in REFERENCE_KEYS:
        value = flat.get(key)
        if isinstance(value, str):
            flat[key] = reference_identity(value, base)
        elif isinstance(value, list):
            flat[key] = [reference_identity(v, base) for v in value]
    return flat
