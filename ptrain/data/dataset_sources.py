"""Rows that are not a data file: folders written by datasets' save_to_disk (a Dataset or a DatasetDict) and Hub
datasets, each read with its problems as one line (no such folder, not a saved one, no train split, not cached while
offline)."""

from __future__ import annotations

from pathlib import Path

import datasets
from datasets import Dataset, DatasetDict

from ptrain.config.sources import saved_dataset_kind
from ptrain.errors import DataError, first_line

SPLITS = ("train", "validation", "test")


def saved_splits(path: Path, key: str) -> dict[str, Dataset]:
    """The splits of a save_to_disk folder named by data.train_file (or data.hub_dataset): a Dataset is the training
    rows; a DatasetDict gives its train, validation and test splits and must have train."""
    loaded = _load_saved(path, key)
    if isinstance(loaded, Dataset):
        return {"train": _named(loaded, str(path))}
    if "train" not in loaded:
        raise DataError(
            f"data.{key} {path} is a saved DatasetDict with splits {list(loaded)} and no 'train'; save the training "
            "rows as its train split, or name a saved Dataset folder"
        )
    return {split: _named(ds, f"{path} [{split}]") for split, ds in loaded.items() if split in SPLITS}


def saved_rows(path: Path, key: str) -> Dataset:
    """The rows of a save_to_disk Dataset folder named by data.validation_file, data.test_file or data.eval_files."""
    loaded = _load_saved(path, key)
    if isinstance(loaded, DatasetDict):
        raise DataError(
            f"data.{key} {path} is a saved DatasetDict (splits {list(loaded)}); name one split's folder "
            f"(e.g. {path / ('validation' if 'validation' in loaded else next(iter(loaded)))}), or give the "
            "DatasetDict as data.train_file"
        )
    return _named(loaded, str(path))


def _load_saved(path: Path, key: str) -> Dataset | DatasetDict:
    if saved_dataset_kind(path) is None:
        raise DataError(
            f"data.{key} {path} is a folder but not one written by save_to_disk (no state.json or dataset_dict.json); "
            "name a data file, or save the rows with Dataset.save_to_disk"
        )
    try:
        return datasets.load_from_disk(str(path))
    except Exception as err:  # a damaged folder: a missing arrow file, unreadable json
        raise DataError(f"data.{key} {path}: cannot read this save_to_disk folder ({first_line(err)})") from None


def hub_splits(name: str, config: str | None) -> dict[str, Dataset]:
    """The train, validation and test splits of Hub dataset `name` (from the cache when HF_HUB_OFFLINE=1); a local
    save_to_disk folder reads as data.train_file reads it, any other folder by datasets' own rules (data files)."""
    local = Path(name).expanduser()
    if local.is_dir() and saved_dataset_kind(local):
        return saved_splits(local, "hub_dataset")
    if name.startswith((".", "/", "~")) and not local.exists():
        raise DataError(
            f"data.hub_dataset {name} does not exist; fix the path, or give a Hub id (e.g. dair-ai/emotion)"
        )
    try:
        loaded = datasets.load_dataset(name, config)
    except Exception as err:  # offline, not found, a wrong config name, a broken script: the message is what helps
        raise DataError(_hub_failure(name, err)) from None
    if "train" not in loaded:
        raise DataError(
            f"data.hub_dataset {name} has splits {list(loaded)} and no 'train'; use a dataset with a train split, "
            "or save the rows you want with save_to_disk and set data.train_file"
        )
    label = f"{name}{f' ({config})' if config else ''}"
    return {split: _named(ds, f"{label} [{split}]") for split, ds in loaded.items() if split in SPLITS}


def _hub_failure(name: str, err: Exception) -> str:
    text = first_line(err)
    if datasets.config.HF_HUB_OFFLINE and isinstance(err, ConnectionError):
        return (
            f"data.hub_dataset {name} is not in the datasets cache and HF_HUB_OFFLINE=1 forbids downloading it; "
            "run once online to cache it, or give local files (data.train_file)"
        )
    if type(err).__name__ == "DatasetNotFoundError":
        return f"data.hub_dataset {name}: no such dataset on the Hub (or it is private: log in with `hf auth login`)"
    return f"data.hub_dataset {name}: could not be loaded ({text})"


def _named(ds: Dataset, source: str) -> Dataset:
    """The split with its source in its description, which error messages and data.bad_rows name."""
    ds.info.description = source
    return ds
