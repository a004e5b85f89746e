"""Checks of data.streaming against the rest of the config, before any data is read: what a stream cannot do (its
length is unknown, it is never whole in memory) is refused in one line naming the key and the fix."""

from __future__ import annotations

import glob
from pathlib import Path

from ptrain.config.keys import data_path
from ptrain.config.schema import Config
from ptrain.errors import ConfigError

GLOB_CHARACTERS = frozenset("*?[")
# Keys that need every training row at once, and why; refused with data.streaming.
WHOLE_SPLIT_KEYS = {
    "data.split_column": "splits the rows of one file",
    "data.num_folds": "holds out a fold of the training rows",
    "data.sample_train_rows": "samples the training rows (data.max_train_rows takes N rows of the stream)",
    "data.group_column": "holds out whole groups of the training rows",
}


def train_patterns(cfg: Config) -> list[str]:
    """data.train_file as a list of paths or globs (relative ones under data.data_dir)."""
    files = cfg.data.train_file
    names = [files] if isinstance(files, str) else list(files or [])
    return [str(data_path(cfg, name)) for name in names]


def expand_train_files(cfg: Config, path: Path | str = "config") -> list[Path]:
    """The files (or one save_to_disk folder) of data.train_file, each glob expanded in sorted order; refused in one
    line when a pattern matches nothing."""
    found: list[Path] = []
    for pattern in train_patterns(cfg):
        matches = sorted(glob.glob(pattern)) if GLOB_CHARACTERS & set(pattern) else [pattern]
        matches = [Path(match) for match in matches if Path(match).exists()]
        if not matches:
            raise ConfigError(
                f"{path}: data.train_file {pattern} matches no file; fix the path or glob, or point data.data_dir "
                "at your copy of the data"
            )
        found.extend(matches)
    return found


def _check_length(cfg: Config, path: Path) -> None:
    """A stream's length is unknown before it is read: the run's is in optimizer steps, or in tokens when every
    step holds the same number (packed rows)."""
    train = cfg.train
    if (train.max_steps is None) == (train.max_tokens is None):
        raise ConfigError(
            f"{path}: data.streaming: a stream's length is unknown before it is read; set train.max_steps (the "
            "run's length in optimizer steps) or train.max_tokens (in tokens, with packed rows), not both"
        )
    if train.max_tokens is not None and not getattr(getattr(cfg, cfg.task, None), "packing", False):
        raise ConfigError(
            f"{path}: train.max_tokens needs rows of a fixed number of tokens ({cfg.task}.packing=true, where the "
            "task packs); otherwise set train.max_steps"
        )


def check_streaming(cfg: Config, path: Path) -> None:
    data, train = cfg.data, cfg.train
    several = isinstance(data.train_file, list) or any(GLOB_CHARACTERS & set(p) for p in train_patterns(cfg))
    if not data.streaming:
        if several:
            raise ConfigError(
                f"{path}: data.train_file as a list or glob is read as a stream; set data.streaming=true, or give "
                "one file"
            )
        if train.max_tokens is not None:
            raise ConfigError(f"{path}: train.max_tokens sets the length of a stream; set data.streaming=true")
        return
    _check_length(cfg, path)
    for key, why in WHOLE_SPLIT_KEYS.items():
        if getattr(data, key.split(".")[1]):
            raise ConfigError(f"{path}: {key} {why}, which a stream cannot do; unset it or data.streaming")
    if data.bad_rows == "skip" and data.train_file is None and not data.mixture:
        raise ConfigError(
            f"{path}: data.bad_rows=skip with data.streaming reads JSON Lines files only, not data.hub_dataset "
            f"{data.hub_dataset}; give the files as data.train_file or use data.bad_rows=stop"
        )
    if train.class_weights == "balanced":
        raise ConfigError(
            f"{path}: train.class_weights=balanced counts every training label before training; give the weights "
            "as a list with data.streaming"
        )
    if cfg.model.train_tokenizer is not None:
        raise ConfigError(
            f"{path}: model.train_tokenizer learns from the whole training split; with data.streaming train it once "
            "on a sample (a run without streaming) and give its folder as model.tokenizer"
        )
    if data.train_file is not None:
        if data.validation_file is None:
            raise ConfigError(
                f"{path}: data.streaming holds out no validation rows from the stream; set data.validation_file"
            )
        files = expand_train_files(cfg, path)
        if any(file.is_dir() for file in files) and len(files) > 1:
            raise ConfigError(f"{path}: data.train_file: a save_to_disk folder is streamed alone, not with other files")
