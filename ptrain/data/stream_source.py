"""Where a streamed training split comes from: local files (a glob or a list: JSONL/JSON, Parquet, CSV/TSV, corpus
text), a save_to_disk folder (read as data.stream_shards shards) or a Hub dataset read with streaming=True; as one
`datasets.IterableDataset` whose shards the processes share out (ptrain/data/streaming.py). The evaluation splits
stay map-style: read whole, as without streaming."""

from __future__ import annotations

from pathlib import Path

import datasets
import numpy as np
from datasets import Dataset, DatasetDict, IterableDataset
from pyarrow import ArrowException

from ptrain.config import Config
from ptrain.config.stream_checks import expand_train_files
from ptrain.data.bad_rows import BadRows
from ptrain.data.line_reader import starts_with_object
from ptrain.data.splits import EXTENSION_FORMATS, load_raw_splits
from ptrain.data.stream_rows import json_lines_stream, without_bad_rows
from ptrain.errors import DataError, first_line

# data.format -> the datasets builder a stream of those files reads with, and its options
STREAM_BUILDERS = {
    "json": ("json", {}),
    "jsonl": ("json", {}),
    "parquet": ("parquet", {}),
    "csv": ("csv", {}),
    "tsv": ("csv", {"sep": "\t", "quoting": 3}),  # never quoted (as map-style reading)
    "corpus": ("text", {"sample_by": "paragraph"}),
}
READ_ERRORS = (ValueError, TypeError, KeyError, OSError, ArrowException)  # what datasets' readers raise on bad files
HEAD_ROWS = 1_000  # rows read before training: the columns, and what an encoder checks on its split


def open_train_stream(cfg: Config, epoch: int | None = None, columns: list[tuple[str, str]] = ()) -> IterableDataset:
    """The training rows as a stream. `epoch`: its files (or a save_to_disk folder's data.stream_shards shards) in an
    order drawn from (train.seed, epoch), each epoch's own; a Hub stream's shards are ordered by datasets' shuffle
    (seed train.seed + epoch, a buffer of one row). None: in file order. data.max_train_rows keeps N rows of it in
    file order (datasets' take(); each process takes its share of N). A data.mixture opens one per source
    (ptrain/training/streamed_data.py), mixed once encoded (ptrain/data/streaming.py). JSON Lines files are read
    line by line, each row's task `columns` ((key, column) pairs) checked under data.bad_rows (stream_rows.py);
    data.bad_rows=skip reads no other kind of stream."""
    data = cfg.data
    order = None if epoch is None or data.max_train_rows is not None else [cfg.train.seed, epoch]
    if data.train_file is None:
        _refuse_skip(cfg, f"data.hub_dataset {data.hub_dataset}")
        stream = datasets.load_dataset(data.hub_dataset, data.hub_config, split="train", streaming=True)
        if order is not None:
            stream = stream.shuffle(seed=cfg.train.seed + epoch, buffer_size=1)
        stream.info.description = f"{data.hub_dataset} (train, streamed)"
    else:
        stream = _file_stream(cfg, expand_train_files(cfg), order, columns)
    if data.max_train_rows is not None:
        stream = stream.take(data.max_train_rows)
    return stream


def _file_stream(
    cfg: Config, files: list[Path], order: list[int] | None, columns: list[tuple[str, str]]
) -> IterableDataset:
    """The files as one stream, a file a shard (in an order drawn from the seeds `order`, else as given); a
    save_to_disk folder as data.stream_shards contiguous shards (ordered the same way)."""
    if files[0].is_dir():  # a save_to_disk folder
        _refuse_skip(cfg, f"the save_to_disk folder {files[0]}")
        saved = datasets.load_from_disk(str(files[0]))
        if isinstance(saved, DatasetDict):
            if "train" not in saved:
                raise DataError(f"{files[0]}: a saved DatasetDict without a train split (it has {list(saved)})")
            saved = saved["train"]
        shards = min(cfg.data.stream_shards, max(len(saved), 1))
        if order is not None and shards > 1:  # the shards in this epoch's order (slices of the Arrow files: no copy)
            permutation = np.random.default_rng(order).permutation(shards)
            saved = datasets.concatenate_datasets([saved.shard(shards, int(i), contiguous=True) for i in permutation])
        stream = saved.to_iterable_dataset(num_shards=shards)
    else:
        formats = {_format(cfg, file) for file in files}
        if len(formats) > 1:
            raise DataError(f"data.train_file: the streamed files mix formats {sorted(formats)}; give one format")
        fmt = formats.pop()
        builder, options = STREAM_BUILDERS[fmt]
        if builder in ("csv", "text"):
            options = {**options, "encoding": cfg.data.encoding}
        ordered = files if order is None else [files[i] for i in np.random.default_rng(order).permutation(len(files))]
        if builder == "json" and (fmt == "jsonl" or all(_json_lines(file) for file in files)):
            stream = json_lines_stream(ordered, columns, cfg.data.text_column, cfg.data.bad_rows)
        else:
            _refuse_skip(cfg, f"{files[0]} ({fmt}, not JSON Lines)")
            stream = datasets.load_dataset(
                builder, data_files=[str(file) for file in ordered], split="train", streaming=True, **options
            )
    stream.info.description = str(files[0]) if len(files) == 1 else f"{len(files)} files under {files[0].parent}"
    return stream


def _json_lines(file: Path) -> bool:
    return file.suffix.lower() == ".jsonl" or starts_with_object(file)


def _refuse_skip(cfg: Config, what: str) -> None:
    if cfg.data.bad_rows == "skip":
        raise DataError(
            f"data.bad_rows=skip with data.streaming reads JSON Lines files only, and the training stream is {what}; "
            "convert it to JSON Lines (one row per line) or use data.bad_rows=stop"
        )


def _format(cfg: Config, file: Path) -> str:
    """By the extension (the evaluation files may be another format: data.format is theirs), else data.format."""
    fmt = EXTENSION_FORMATS.get(file.suffix.lower())
    if fmt in (None, "text"):  # .txt: data.format says how (corpus)
        fmt = cfg.data.format
    if fmt not in STREAM_BUILDERS:
        raise DataError(
            f"{file}: data.streaming reads {sorted(STREAM_BUILDERS)} files; this one is {fmt or file.suffix!r} "
            "(set data.format, or convert it, e.g. to JSONL)"
        )
    return fmt


def read_head(stream: IterableDataset, columns: list[tuple[str, str]]) -> Dataset:
    """The stream's first HEAD_ROWS rows, map-style, with the task's columns checked: what the encoder is given as
    its split (its checks see these rows), read before training at the cost of opening the first shard."""
    source = stream.info.description or "the training stream"
    try:
        rows = list(stream.take(HEAD_ROWS))
    except READ_ERRORS as err:
        raise read_failure(source, "in its first rows", err) from None
    rows = without_bad_rows(rows, source)  # data.bad_rows=skip: recorded as training reads them
    if not rows:
        raise DataError(f"{source}: the training stream has no rows")
    for key, column in columns:
        if column not in rows[0]:
            raise DataError(f"{key} '{column}' not in {source} columns {list(rows[0])}")
    head = Dataset.from_list(rows, features=stream.features)
    head.info.description = source
    return head


def read_failure(source: str, where: str, err: Exception) -> DataError:
    """What stopped a stream's reading (a file that does not parse, shards with different columns), in one line."""
    return DataError(f"{source}: reading the training stream failed {where} ({type(err).__name__}: {first_line(err)})")


def load_eval_splits(cfg: Config, task) -> tuple[DatasetDict, BadRows]:
    """validation, test and data.eval_files as map-style splits, read, checked and limited as without streaming
    (ptrain/data/splits.py): the validation file stands in for the training file there, and the stand-in is
    dropped. From the Hub: the dataset's validation and test splits, downloaded (only those)."""
    data = cfg.data
    if data.train_file is None and not data.mixture:  # a mixture has a validation file (config check)
        splits = {}
        for split in ("validation", "test"):
            try:
                splits[split] = datasets.load_dataset(data.hub_dataset, data.hub_config, split=split)
            except ValueError:  # the dataset has no such split
                if split == "validation":
                    raise DataError(
                        f"data.hub_dataset {data.hub_dataset} has no validation split to evaluate a stream on; "
                        "give data.validation_file"
                    ) from None
        for split, ds in splits.items():
            missing = [f"{key} '{column}'" for key, column in task.columns(cfg) if column not in ds.column_names]
            if missing:
                raise DataError(f"{missing[0]} not in {data.hub_dataset} ({split}) columns {ds.column_names}")
        if data.max_eval_rows is not None:
            splits = {name: ds.select(range(min(len(ds), data.max_eval_rows))) for name, ds in splits.items()}
        return DatasetDict(splits), BadRows(policy=data.bad_rows)
    stand_in = data.model_copy(
        update={"train_file": data.validation_file, "max_train_rows": None, "sample_train_rows": None}
    )
    raw, bad_rows = load_raw_splits(cfg.model_copy(update={"data": stand_in}), task)
    raw.pop("train")
    bad_rows.ledgers = list({ledger.source: ledger for ledger in bad_rows.ledgers}.values())  # the stand-in's file
    return raw, bad_rows
