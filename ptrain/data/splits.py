"""Load train/validation/test splits from local files, save_to_disk folders or the Hub, with the columns a task
reads checked and bad rows refused or skipped (data.bad_rows; tokenizing them is ptrain/data/tokenize.py)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import datasets
import pyarrow as pa
from datasets import Dataset, DatasetDict

from ptrain.config import Config, DataConfig, data_path
from ptrain.data.bad_rows import SKIP_HINT, BadRows, Ledger, check_fraction, drop_bad_values
from ptrain.data.conll import read_conll
from ptrain.data.dataset_sources import SPLITS, hub_splits, saved_rows, saved_splits
from ptrain.data.dialogues import read_dialogues
from ptrain.data.labels import source_name
from ptrain.data.line_reader import reread
from ptrain.data.sampling import fold_split, group_split, seeded_sample, split_by_column
from ptrain.data.squad import read_squad
from ptrain.errors import DataError, first_line

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
    # refuses_empty_texts: bool (optional, default true) -- data.bad_rows covers empty texts in its columns


def load_raw_splits(cfg: Config, task: ReadsColumns) -> tuple[DatasetDict, BadRows]:
    """Every split as a Dataset, and the bad rows skipped (data.bad_rows=skip) per source.

    Validation comes from its file or a seeded split of train; checks run on whole files, so the rows
    they name are rows of the file.
    """
    data, columns = cfg.data, task.columns(cfg)
    text_columns = [column for key, column in columns if key != "data.label_column"]
    ledgers: dict[str, Ledger] = {}  # split -> its file's unreadable rows
    if data.train_file is not None:
        splits = _read_files(cfg, text_columns, ledgers)
    else:
        splits = hub_splits(data.hub_dataset, data.hub_config)
    for name, file in data.eval_files.items():  # named evaluation sets: splits eval_<name>
        split = f"{EVAL_SET_PREFIX}{name}"
        splits[split] = _read_source(cfg, data_path(cfg, file), f"eval_files.{name}", text_columns, ledgers, split)
    bad_rows = BadRows(data.bad_rows)
    for split, ds in splits.items():  # whole files, before data.split_column divides them: rows are the file's
        _check_columns(columns, split, ds)
        ledger = ledgers.get(split) or Ledger(source_name(ds, split), data.bad_rows, rows_read=len(ds))
        bad_rows.ledgers.append(ledger)
        splits[split] = _skip_bad_rows(cfg, task, columns, ds, ledger)
    if data.split_column:
        splits.update(split_by_column(data, splits.pop("train")))
        if "train" not in splits:
            raise DataError(f"data.split_column '{data.split_column}' names no training rows; see data.split_values")
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
    return DatasetDict(splits), bad_rows


def _read_files(cfg: Config, text_columns: Sequence[str], ledgers: dict[str, Ledger]) -> dict[str, Dataset]:
    """data.train_file's splits (a save_to_disk DatasetDict folder holds several), then the validation and test
    files'; a split named twice is refused."""
    data = cfg.data
    train = data_path(cfg, data.train_file)
    if train.is_dir():
        splits = saved_splits(train, "train_file")
    else:
        splits = {"train": _read_source(cfg, train, "train_file", text_columns, ledgers, "train")}
    for split in SPLITS[1:]:
        file = getattr(data, f"{split}_file")
        if file is None:
            continue
        if split in splits:
            raise DataError(
                f"data.train_file {train} has a {split} split and data.{split}_file names another; keep one "
                f"(e.g. data.{split}_file=null)"
            )
        splits[split] = _read_source(cfg, data_path(cfg, file), f"{split}_file", text_columns, ledgers, split)
    return splits


def _read_source(
    cfg: Config, path: Path, key: str, text_columns: Sequence[str], ledgers: dict[str, Ledger], split: str
) -> Dataset:
    """One split's file (its unreadable rows in ledgers[split]), or save_to_disk Dataset folder."""
    if path.is_dir():
        return saved_rows(path, key)
    ledgers[split] = Ledger(str(path), cfg.data.bad_rows)
    return read_table(cfg.data, path, text_columns, ledgers[split])


def _skip_bad_rows(cfg: Config, task, columns: list[tuple[str, str]], ds: Dataset, ledger: Ledger) -> Dataset:
    """Rows with an empty or missing text or label (unless the task reads them itself: chat), then the share of
    bad rows checked (data.max_bad_row_fraction)."""
    if getattr(task, "refuses_empty_texts", True):
        ds = drop_bad_values(ds, ledger, columns, cfg.data.text_column)
    check_fraction(ledger, cfg.data.max_bad_row_fraction)
    return ds


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


def read_table(data: DataConfig, path: Path, text_columns: Sequence[str] = (), ledger: Ledger | None = None) -> Dataset:
    """One local file as a Dataset; the format comes from data.format or the file extension; text_columns
    (default data.text_column and data.text_pair_column) are read as strings. Lines the builder cannot read are
    read again line by line where that helps (line_reader.py): recorded in `ledger`, or one line naming the first."""
    in_a_run = ledger is not None  # data.bad_rows applies (ptrain predict reads its input whole)
    ledger = ledger if ledger is not None else Ledger(str(path))
    fmt = data.format if data.format != "auto" else EXTENSION_FORMATS.get(path.suffix.lower())
    if fmt == "conll":
        return _counted(read_conll(path, data.text_column, data.label_column, data.encoding), ledger)
    if fmt == "dialogues":
        return _counted(read_dialogues(path, data.turn_separator, DIALOGUE_COLUMN, data.encoding), ledger)
    if fmt == "squad":
        return _counted(read_squad(path, data.encoding), ledger)
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
        if builder in ("json", "parquet"):
            _check_text_columns(ds, text_columns or [data.text_column])
    except Exception as err:  # the builders raise many types; the message is what matters to the user
        ds = reread(path, fmt, kwargs, ledger, text_columns or [data.text_column])
        if ds is None:
            message = _read_failure(path, fmt, data.encoding, err)
            raise DataError(message + (f", {SKIP_HINT}" if in_a_run and ": line " in message else "")) from None
    ds.info.description = str(path)
    return _counted(ds, ledger)


def _check_text_columns(ds: Dataset, text_columns: Sequence[str]) -> None:
    """What the JSON and Parquet builders let through but tokenizing fails on raises here instead, so the caller can
    name the line: undecodable bytes in a string column (a full validation, one pass in C++), and a text column of
    mixed types (datasets' Json feature: a number among the texts)."""
    for name in text_columns:
        if type(ds.features.get(name)).__name__ == "Json":
            raise TypeError(f"text column '{name}' holds values that are not strings")
    for name in ds.column_names:
        column = ds.data.column(name)
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            try:
                column.validate(full=True)
            except pa.ArrowInvalid as err:
                raise UnicodeError(f"column '{name}' holds bytes that are not utf-8 ({first_line(err)})") from None


def _counted(ds: Dataset, ledger: Ledger) -> Dataset:
    ledger.rows_read = len(ds) + len(ledger.skipped)
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
