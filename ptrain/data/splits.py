"""Load train/validation/test splits from local files or the Hub, map labels, tokenize with an on-disk cache."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.compute as pc
from datasets import Dataset, DatasetDict

from ptrain.config.schema import Config, DataConfig, data_path
from ptrain.data.conll import read_conll
from ptrain.data.labels import source_name
from ptrain.errors import DataError, first_line
from ptrain.tasks import Task, get_task

SPLITS = ("train", "validation", "test")
EXTENSION_FORMATS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".json": "json",
    ".jsonl": "jsonl",
    ".parquet": "parquet",
    ".txt": "text",
}
DEFAULT_CACHE_DIR = Path("~/.cache/ptrain/tokenized")


@dataclass
class Splits:
    raw: DatasetDict  # untokenized rows, for the text of the highest-loss examples
    tokenized: DatasetDict  # input_ids, attention_mask, [token_type_ids], labels, idx
    label_names: list[str]
    cache_hits: dict[str, bool]  # split -> tokenization read back from disk
    dropped: dict[str, int] = field(default_factory=dict)  # split -> rows dropped for an empty text


def load_raw_splits(cfg: Config) -> tuple[DatasetDict, dict[str, int]]:
    """Every split as a Dataset, and the rows dropped per split for an empty text (data.empty_texts=drop).

    Validation comes from its file or a seeded split of train; checks run on whole files, so the rows
    they name are rows of the file.
    """
    data = cfg.data
    if data.train_file is not None:
        splits = {
            split: read_table(data, data_path(cfg, getattr(data, f"{split}_file")))
            for split in SPLITS
            if getattr(data, f"{split}_file") is not None
        }
    else:
        splits = {k: v for k, v in datasets.load_dataset(data.hub_dataset, data.hub_config).items() if k in SPLITS}
    dropped = {}
    for split, ds in splits.items():
        _check_columns(cfg, split, ds)
        splits[split], dropped[split] = _handle_empty_texts(cfg, split, ds)
    if "validation" not in splits:
        splits["train"], splits["validation"] = _split_validation(cfg, splits["train"])
    for split, ds in splits.items():
        limit = data.max_train_rows if split == "train" else data.max_eval_rows
        if limit is not None and len(ds) > limit:
            splits[split] = ds.select(range(limit))
    return DatasetDict(splits), dropped


def _split_validation(cfg: Config, train: Dataset) -> tuple[Dataset, Dataset]:
    """A seeded random sample of rows; for a corpus the contiguous tail, so no passage leaks across the split."""
    if cfg.data.format == "corpus":
        cut = len(train) - max(1, round(len(train) * cfg.data.validation_fraction))
        return train.select(range(cut)), train.select(range(cut, len(train)))
    parts = train.train_test_split(test_size=cfg.data.validation_fraction, seed=cfg.train.seed)
    return parts["train"], parts["test"]


def read_table(data: DataConfig, path: Path) -> Dataset:
    """One local file as a Dataset; the format comes from data.format or the file extension."""
    fmt = data.format if data.format != "auto" else EXTENSION_FORMATS.get(path.suffix.lower())
    if fmt == "conll":
        return read_conll(path, data.text_column, data.label_column, data.encoding)
    if fmt is None:
        raise DataError(
            f"{path}: unknown extension '{path.suffix}'; set data.format to one of {list(EXTENSION_FORMATS.values())}"
        )
    if fmt == "corpus":  # plain text; a document is a paragraph (text between blank lines), line breaks kept
        builder, kwargs = "text", {"sample_by": "paragraph", "encoding": data.encoding}
    elif fmt in ("json", "jsonl", "parquet"):
        builder, kwargs = ("parquet" if fmt == "parquet" else "json"), {}
    else:
        builder, kwargs = "csv", _csv_options(data, fmt, path)
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


def _csv_options(data: DataConfig, fmt: str, path: Path) -> dict:
    options: dict = {"sep": {"csv": ",", "tsv": "\t"}.get(fmt, data.separator)}
    if fmt == "text" and data.separator is None:
        raise DataError(f"{path}: a text file needs data.separator (e.g. ';') and data.column_names")
    if fmt != "csv":
        options["quoting"] = 3  # csv.QUOTE_NONE: tsv/text fields are never quoted (GLUE, emotion)
    if data.column_names is not None:
        options["names"] = data.column_names
    text_columns = [c for c in (data.text_column, data.text_pair_column, data.target_column) if c]
    options["converters"] = {column: str for column in text_columns}  # a text of digits stays text
    options["encoding"] = data.encoding
    return options


def _check_columns(cfg: Config, split: str, ds: Dataset) -> None:
    for key, column in get_task(cfg.task).columns(cfg):
        if column not in ds.column_names:
            raise DataError(f"data.{key} '{column}' not in {source_name(ds, split)} columns {ds.column_names}")


def _handle_empty_texts(cfg: Config, split: str, ds: Dataset) -> tuple[Dataset, int]:
    """Rows with a null or blank text (or label) are refused, or dropped and counted (data.empty_texts)."""
    empty = None
    for _, column in get_task(cfg.task).columns(cfg):
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


def tokenize_splits(cfg: Config, raw: DatasetDict, tokenizer, task: Task, label_names: list[str]) -> Splits:
    """Batched tokenization of each split, cached on disk by content: a second run reads it back."""
    cache_dir = Path(cfg.data.cache_dir or DEFAULT_CACHE_DIR).expanduser()
    cache_dir.mkdir(parents=True, exist_ok=True)
    tokenized, hits = {}, {}
    tokenizer_hash = _tokenizer_hash(tokenizer)
    for split, ds in raw.items():
        encode, identity = task.encoder(cfg, tokenizer, label_names, ds, split)
        key = _cache_key(ds, tokenizer_hash, [task.name, *identity])
        cache_file = cache_dir / f"{key}.arrow"
        hits[split] = cache_file.is_file()
        tokenized[split] = ds.map(
            encode,
            batched=True,
            with_indices=True,
            remove_columns=ds.column_names,
            cache_file_name=str(cache_file),
            load_from_cache_file=True,
            new_fingerprint=key,
            desc=f"tokenizing {split}",
        )
    return Splits(raw=raw, tokenized=DatasetDict(tokenized), label_names=label_names, cache_hits=hits)


def _tokenizer_hash(tokenizer) -> str:
    """Vocabulary, normaliser and post-processor; not the truncation/padding state, which every call resets."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        state = repr(sorted(tokenizer.get_vocab().items()))
    else:
        state = json.loads(backend.to_str())
        state.pop("truncation", None), state.pop("padding", None)
        state = json.dumps(state, sort_keys=True)
    return hashlib.sha256(f"{type(tokenizer).__name__}:{state}".encode()).hexdigest()


def _cache_key(ds: Dataset, tokenizer_hash: str, identity: list[str]) -> str:
    """Content hash of everything that changes the tokenized rows: data, tokenizer, the task's encoding."""
    parts = [ds._fingerprint, tokenizer_hash, *identity, "v2"]  # fingerprint: datasets' hash of the file and selection
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:24]
