"""The splits of a data.mixture: each source read as a data.train_file is (its columns and bad rows checked, its
own held-out validation rows without data.validation_file), then tokenized and finished on its own (its own cache
entry; a task's packing never joins rows of two sources) and mixed by ptrain/data/mixtures.py."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
from datasets import Dataset, DatasetDict, concatenate_datasets

from ptrain.config import Config, data_path
from ptrain.data.bad_rows import BadRows
from ptrain.data.mixtures import SOURCE_COLUMN, MixturePlan, mix_sources
from ptrain.data.splits import load_raw_splits
from ptrain.data.tokenize import Splits, tokenize_splits
from ptrain.errors import DataError


class MixesSources(Protocol):
    """What a mixture needs of a task (ptrain.tasks.Task has it): its columns, encoder and finishing."""

    name: str

    def columns(self, cfg) -> list[tuple[str, str]]: ...

    def encoder(self, cfg, tokenizer, label_names: list[str], ds, split: str) -> Callable: ...

    def finish_split(self, cfg, split: str, ds, raw) -> tuple[Any, dict | None]: ...


def read_splits(cfg: Config, task: MixesSources) -> tuple[DatasetDict, BadRows]:
    """load_raw_splits, or a mixture's splits (read_mixture)."""
    return read_mixture(cfg, task) if cfg.data.mixture else load_raw_splits(cfg, task)


def source_config(cfg: Config, name: str) -> Config:
    """The config that reads source `name` as data.train_file, with its own reading keys, and no test or named
    evaluation sets (read_mixture reads those with the data section's keys). With data.validation_file nothing is
    held out: the source stands in as its own validation file, whose rows are dropped."""
    data, source = cfg.data, cfg.data.mixture[name]
    update = {"train_file": source.file, "mixture": {}, "test_file": None, "eval_files": {}, **source.reading()}
    update["validation_file"] = source.file if data.validation_file else None
    return cfg.model_copy(update={"data": data.model_copy(update=update)})


def read_mixture(cfg: Config, task: MixesSources) -> tuple[DatasetDict, BadRows]:
    """The raw splits: `train` holds every source's rows in data.mixture order, with SOURCE_COLUMN (the tokenizer,
    label names and data summary read it whole); `validation` is data.validation_file's rows or each source's
    held-out ones together; the test and named evaluation sets as without a mixture."""
    bad_rows, sources, held_out = BadRows(cfg.data.bad_rows), [], []
    for name in cfg.data.mixture:
        raw, bad = load_raw_splits(source_config(cfg, name), task)
        _add_ledgers(bad_rows, bad)
        sources.append(raw["train"])
        if cfg.data.validation_file is None:
            held_out.append(raw["validation"])
    names = list(cfg.data.mixture)
    tagged = [ds.add_column(SOURCE_COLUMN, np.full(len(ds), i, dtype=np.int32)) for i, ds in enumerate(sources)]
    splits = {"train": concatenated(tagged, names)}
    if held_out:
        splits["validation"] = concatenated(held_out, names)
    evaluation, bad = _evaluation_splits(cfg, task)
    _add_ledgers(bad_rows, bad)
    return DatasetDict({**splits, **evaluation}), bad_rows


def _evaluation_splits(cfg: Config, task: MixesSources) -> tuple[dict[str, Dataset], BadRows]:
    """data.validation_file, data.test_file and data.eval_files read as load_raw_splits reads them, one of them
    standing in for the training file (its training rows dropped)."""
    data = cfg.data
    stand_in = next((file for file in (data.validation_file, data.test_file, *data.eval_files.values()) if file), None)
    if stand_in is None:
        return {}, BadRows(data.bad_rows)
    update = {"train_file": stand_in, "validation_file": data.validation_file or stand_in, "mixture": {}}
    update.update(max_train_rows=None, sample_train_rows=None)
    raw, bad = load_raw_splits(cfg.model_copy(update={"data": data.model_copy(update=update)}), task)
    raw.pop("train")
    if data.validation_file is None:
        raw.pop("validation")
    return dict(raw), bad


def _add_ledgers(bad_rows: BadRows, more: BadRows) -> None:
    """A file read twice (a stand-in, a source as its own validation file) is listed once."""
    seen = {ledger.source for ledger in bad_rows.ledgers}
    bad_rows.ledgers += [ledger for ledger in more.ledgers if ledger.source not in seen]


def concatenated(parts: list[Dataset], names: list[str]) -> Dataset:
    """The sources' rows one after the other, in the columns they all have (as the first source types them)."""
    common = [column for column in parts[0].column_names if all(column in part.column_names for part in parts)]
    parts = [part.select_columns(common) for part in parts]
    first = parts[0].features
    for position, (name, part) in enumerate(zip(names[1:], parts[1:]), start=1):
        for column in common:
            feature = part.features[column]
            if feature == first[column]:
                continue
            if _kind(feature) != _kind(first[column]):
                raise DataError(
                    f"data.mixture: column '{column}' of source '{name}' holds {feature}, of source '{names[0]}' "
                    f"{first[column]}; give the sources the same column types"
                )
            parts[position] = part = part.cast_column(column, first[column])  # e.g. string and large_string
    return concatenate_datasets(parts)


def _kind(feature) -> str:
    """A column's type up to Arrow's offset width (the JSON reader's string, the text reader's large_string)."""
    return str(feature).replace("large_", "")


def source_rows(train: Dataset, names: list[str]) -> dict[str, Dataset]:
    """read_mixture's training rows apart again, one Dataset per source (without SOURCE_COLUMN)."""
    counts = np.bincount(train.with_format("numpy")[SOURCE_COLUMN], minlength=len(names))
    bounds = np.concatenate([[0], np.cumsum(counts)]).tolist()
    rows = train.remove_columns(SOURCE_COLUMN)
    return {name: rows.select(range(bounds[i], bounds[i + 1])) for i, name in enumerate(names)}


def tokenize_mixture(cfg: Config, raw: DatasetDict, tokenizer, task: MixesSources, label_names: list[str]) -> Splits:
    """tokenize_splits for the evaluation splits; each source's training rows tokenized with its config (its own
    cache entry) and finished (Task.finish_split: policies and packing, here within the source), then mixed with
    the sources' weights, drawn with data.sample_seed. The training split comes back finished: the caller
    finishes the other splits only. Splits.mixture says what an epoch of the mixture holds."""
    data, names = cfg.data, list(cfg.data.mixture)
    splits = tokenize_splits(
        cfg, DatasetDict({k: v for k, v in raw.items() if k != "train"}), tokenizer, task, label_names
    )
    tokenized, hits, counts = {}, [], {}
    for name, rows in source_rows(raw["train"], names).items():
        source_cfg = source_config(cfg, name)
        rows.info.description = str(data_path(cfg, data.mixture[name].file))
        part = tokenize_splits(source_cfg, DatasetDict({"train": rows}), tokenizer, task, label_names)
        tokenized[name], finished = task.finish_split(source_cfg, "train", part.tokenized["train"], rows)
        hits.append(part.cache_hits["train"])
        for key, value in (finished or {}).items():  # the task's counts, over all sources
            counts[key] = counts.get(key, 0) + value
        if len(tokenized[name]) == 0:
            raise DataError(f"data.mixture source '{name}' ({rows.info.description}) has no training rows left")
    weights = [source.weight for source in data.mixture.values()]
    how = {"stopping_strategy": data.mixture_stopping_strategy, "seed": data.sample_seed}
    mixed = mix_sources(tokenized, weights, **how)
    sizes = [len(ds) for ds in tokenized.values()]
    splits.mixture = MixturePlan.of(mixed, names, weights, sizes, **how)
    splits.raw = raw
    splits.tokenized = DatasetDict({"train": mixed, **splits.tokenized})
    splits.cache_hits = {"train": all(hits), **splits.cache_hits}
    if counts:
        splits.counts["train"] = counts
    return splits
