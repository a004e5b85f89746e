"""Load train/validation/test splits from local files or the Hub, with the columns a task reads checked and
empty texts refused or dropped (tokenizing them is ptrain/data/tokenize.py)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import datasets
import pyarrow as pa
import pyarrow.compute as pc
from datasets import Dataset, DatasetDict

from ptrain.config import Config, DataConfig, data_path
from ptrain.data.conll import read_conll
from ptrain.data.dialogues import read_dialogues
from ptrain.data.labels import source_name
from ptrain.data.sampling import fold_split, group_split, seeded_sample, split_by_column
from ptrain.data.squad import read_squad
from ptrain.errors import DataError, first_line

SPLITS = ("train", "validation", "test")
DIALOGUE_COLUMN = "turns"  # data.format=dialogues: the utterances of each dialogue
EVAL_SET_PREFIX = "eval_"  # data.eval_files' sets are the splits eval_<name>
EXTENSION_FORMATS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".json": "json",
    ".jsonl": "jsonl",
    ".parquet": "parquet",
    ".txt": "text",
}


class ReadsColumns(Protocol):
    """What reading needs of a task (ptrain.tasks.Task has it): the columns every split must have."""

    def columns(self, cfg) -> list[tuple[str, str]]: ...

    # stratified: bool (optional) -- seeded samples and folds keep each data.label_column value's share
    # refuses_empty_texts: bool (optional, default true) -- data.empty_texts applies to its columns


def load_raw_splits(cfg: Config, task: ReadsColumns) -> tuple[DatasetDict, dict[str, int]]:
    """Every split as a Dataset, and the rows dropped per split for an empty text (data.empty_texts=drop).

    Validation comes from its file or a seeded split of train; checks run on whole files, so the rows
    they name are rows of the file.
    """
    data, columns = cfg.data, task.columns(cfg)
    text_columns = [column for key, column in columns if key != "data.label_column"]
    if data.train_file is not None:
        splits = {
            split: read_table(data, data_path(cfg, getattr(data, f"{split}_file")), text_columns)
            for split in SPLITS
            if getattr(data, f"{split}_file") is not None
        }
    else:
        splits = {k: v for k, v in datasets.load_dataset(data.hub_dataset, data.hub_config).items() if k in SPLITS}
    if data.split_column:
        splits.update(split_by_column(data, splits.pop("train")))
        if "train" not in splits:
            raise DataError(f"data.split_column '{data.split_column}' names no training rows; see data.split_values")
    for name, file in data.eval_files.items():  # named evaluation sets: splits eval_<name>
        splits[f"{EVAL_SET_PREFIX}{name}"] = read_table(data, data_path(cfg, file), text_columns)
    dropped = {}
    for split, ds in splits.items():
        _check_columns(columns, split, ds)
        if getattr(task, "refuses_empty_texts", True):
            splits[split], dropped[split] = _handle_empty_texts(cfg, columns, split, ds)
    stratify = data.label_column if getattr(task, "stratified", False) else None
    if data.num_folds:
        if "validation" in splits:
            raise DataError("data.num_folds holds out a fold of the training rows; the data has validation rows too")
        splits["train"], splits["validation"] = fold_split(
            splits["train"], data.num_folds, data.fold, data.sample_seed, stratify, data.group_column
        )
    elif "validation" not in splits:
        splits["train"], splits["validation"] = _split_validation(cfg, splits["train"])
    for split, ds in splits.items():
        sample = data.sample_train_rows if split == "train" else data.sample_eval_rows
        if sample is not None:
            ds = splits[split] = seeded_sample(ds, sample, data.sample_seed, stratify)
        limit = data.max_train_rows if split == "train" else data.max_eval_rows
        if limit is not None and len(ds) > limit:
            splits[split] = ds.select(range(limit))
    return DatasetDict(splits), dropped


def _split_validation(cfg: Config, train: Dataset) -> tuple[Dataset, Dataset]:
    """A seeded random sample of rows (or of whole groups, data.group_column); for a corpus the contiguous tail, so
    no passage leaks across the split."""
    if cfg.data.group_column is not None:
        return group_split(train, cfg.data.group_column, cfg.data.validation_fraction, cfg.train.seed)
    if cfg.data.format == "corpus":
        cut = len(train) - max(1, round(len(train) * cfg.data.validation_fraction))
        return train.select(range(cut)), train.select(range(cut, len(train)))
    parts = train.train_test_split(test_size=cfg.data.validation_fraction, seed=cfg.train.seed)
    return parts["train"], parts["test"]


def read_table(data: DataConfig, path: Path, text_columns: Sequence[str] = ()) -> Dataset:
    """One local file as a Dataset; the format comes from data.format or the file extension; text_columns
    (default data.text_column and data.text_pair_column) are read as strings."""
    fmt = data.format if data.format != "auto" else EXTENSION_FORMATS.get(path.suffix.lower())
    if fmt == "conll":
        return read_conll(path, data.text_column, data.label_column, data.encoding)
    if fmt == "dialogues":
        return read_dialogues(path, data.turn_separator, DIALOGUE_COLUMN, data.encoding)
    if fmt == "squad":
        return read_squad(path, data.encoding)
    if fmt is None:
        raise DataError(
            f"{path}: unknown extension '{path.suffix}'; set data.format to one of {list(EXTENSION_FORMATS.values())}"
        )
    if fmt == "corpus":  # plain text; a document is a paragraph (text between blank lines), line breaks kept
        builder, kwargs = "text", {"sample_by": "paragraph", "encoding": data.encoding}
    elif fmt in ("json", "jsonl", "parquet"):
        builder, kwargs = ("parquet" if fmt == "parquet" else "json"), {}
    else:
        builder, kwargs = "csv", _csv_options(data, fmt, path, text_columns)
    try:
        ds = datasets.load_dataset(builder, data_files=str(path), split="train", **kwargs)
    except Exception as err:  # the builders raise many types; the message is what matters to the user
        raise DataError(_read_failure(path, fmt, data.encoding, err)) from None
    ds.info.description = str(path)
    return ds


def _read_failure(path: Path, fmt: str, encoding: str, err: Exception) -> str:
    """Name the line that broke the reader: undecodable bytes, or a row with the wrong number of fields."""
    chain = []
    while err is not None:
        chain.append(err)
        err = err.__cause__ or err.__context__
    if any(isinstance(e, UnicodeDecodeError) for e in chain):
        raw = path.read_bytes()
        try:
            raw.decode(encoding)
        except UnicodeDecodeError as bad:
            line = raw[: bad.start].count(b"\n") + 1
            return (
                f"{path}: line {line} is not valid {encoding} (byte 0x{raw[bad.start]:02x}); convert the file "
                f"(e.g. iconv -f latin1 -t utf-8) or set data.encoding"
            )
    text = first_line(chain[-1])
    fields = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", text)
    if fields:
        expected, line, saw = fields.groups()
        return (
            f"{path}: line {line} has {saw} fields where {expected} were expected; fix or quote that row "
            f"(or check data.separator)"
        )
    return f"{path}: could not be read as {fmt} ({text})"


def _csv_options(data: DataConfig, fmt: str, path: Path, text_columns: Sequence[str]) -> dict:
    options: dict = {"sep": {"csv": ",", "tsv": "\t"}.get(fmt, data.separator)}
    if fmt == "text" and data.separator is None:
        raise DataError(f"{path}: a text file needs data.separator (e.g. ';') and data.column_names")
    if fmt != "csv":
        options["quoting"] = 3  # csv.QUOTE_NONE: tsv/text fields are never quoted (GLUE, emotion)
    if data.column_names is not None:
        options["names"] = data.column_names
    text_columns = text_columns or [c for c in (data.text_column, data.text_pair_column) if c]
    options["converters"] = {column: str for column in text_columns}  # a text of digits stays text
    options["encoding"] = data.encoding
    return options


def _check_columns(columns: list[tuple[str, str]], split: str, ds: Dataset) -> None:
    for key, column in columns:
        if column not in ds.column_names:
            raise DataError(f"{key} '{column}' not in {source_name(ds, split)} columns {ds.column_names}")


def _handle_empty_texts(cfg: Config, columns: list[tuple[str, str]], split: str, ds: Dataset) -> tuple[Dataset, int]:
    """Rows with a null or blank text (or label) are refused, or dropped and counted (data.empty_texts)."""
    empty = None
    for _, column in columns:
        values = ds.data.column(column)
        blank = pc.is_null(values)
        if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
            blank = pc.or_(blank, pc.equal(pc.utf8_trim_whitespace(values), ""))
        elif column == cfg.data.text_column and (pa.types.is_list(values.type) or pa.types.is_large_list(values.type)):
            blank = pc.or_(
                blank, pc.equal(pc.list_value_length(values), 0)
            )  # no words (an empty label list is "no labels")
        empty = blank if empty is None else pc.or_(empty, blank)
    empty = pc.fill_null(empty, True)
    count = pc.sum(empty).as_py() or 0
    if not count:
        return ds, 0
    if cfg.data.empty_texts == "error":
        first = empty.to_pylist().index(True)
        raise DataError(
            f"{source_name(ds, split)}: {count} rows have an empty text or label (first: data row {first}); "
            f"fix them, or set data.empty_texts=drop to skip them"
        )
    keep = [i for i, is_empty in enumerate(empty.to_pylist()) if not is_empty]
    return ds.select(keep), count
