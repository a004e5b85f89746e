"""The `data` section: where the rows come from (local files or a Hub dataset), how they are read, split,
sampled and tokenized."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from ptrain.config.mixture_section import MixtureSource
from ptrain.config.strict import Strict

DEFAULT_SPLIT_VALUES = {"train": ["train"], "validation": ["validation", "val", "dev"], "test": ["test"]}


class DataConfig(Strict):
    data_dir: str | None = Field(
        None, description="Base folder of relative data file paths; $PTRAIN_DATA_DIR, when set, replaces this value."
    )
    train_file: str | list[str] | None = Field(
        None,
        description="The training rows: a local file (relative paths: to data.data_dir), or a folder written by "
        "datasets' save_to_disk (a Dataset: the training rows; a DatasetDict: its train, validation and test "
        "splits); or set data.hub_dataset. With data.streaming: also a glob (`shards/*.jsonl`) or a list of files.",
    )
    validation_file: str | None = Field(
        None,
        description="The validation rows (a file or a save_to_disk Dataset folder), scored at each evaluation; "
        "without it, data.validation_fraction of the training rows (or data.fold with data.num_folds) are held out.",
    )
    test_file: str | None = Field(
        None,
        description="The test rows (a file or a save_to_disk Dataset folder), scored once at the end of the run with "
        "the final weights (optional).",
    )
    eval_files: dict[str, str] = Field(
        {},
        description="More evaluation sets, {name: file}, scored at each evaluation and logged as "
        "eval_<name>/<metric>; train.metric_for_best may name one as <name>/<metric>.",
    )

    @field_validator("eval_files")
    @classmethod
    def _eval_set_names(cls, files: dict[str, str]) -> dict[str, str]:
        for name in files:
            if not re.fullmatch(r"[A-Za-z0-9_-]+", name) or name in ("train", "validation", "test"):
                raise ValueError(f"data.eval_files name '{name}': use letters, digits, _ or - (not a split name)")
        return files

    mixture: dict[str, MixtureSource] = Field(
        {},
        description="Several training sources instead of data.train_file: {name: {file, weight}}, each read (and "
        "held out from, without data.validation_file) as data.train_file is, tokenized on its own, then mixed: rows "
        "drawn from source i with probability weight_i / sum of weights, seeded by data.sample_seed. Each source's "
        "share of the trained tokens is logged (train/source_share/<name>) and written to metrics.json. With "
        "data.streaming, a stream per source, mixed as read (needs data.validation_file).",
    )
    mixture_stopping_strategy: Literal["all_exhausted", "first_exhausted"] = Field(
        "all_exhausted",
        description="What one epoch of a data.mixture holds: draws until every source has given each of its rows "
        "(all_exhausted: sources drawn more than their size allows repeat rows) or until the first source runs "
        "out (first_exhausted: the other sources' remaining rows are left out, the same ones every epoch).",
    )

    @field_validator("mixture")
    @classmethod
    def _source_names(cls, sources: dict[str, MixtureSource]) -> dict[str, MixtureSource]:
        for name in sources:
            if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
                raise ValueError(f"data.mixture source name '{name}': use letters, digits, _ or -")
        if len(sources) == 1:
            raise ValueError("data.mixture has one source; give at least two, or use data.train_file")
        return sources

    hub_dataset: str | None = Field(
        None,
        description="A Hub dataset id (from the datasets cache when HF_HUB_OFFLINE=1), read with its "
        "train/validation/test splits when no data.train_file is given; a save_to_disk DatasetDict folder is read as "
        "data.train_file reads it.",
    )
    hub_config: str | None = Field(
        None, description="The configuration (subset) name of data.hub_dataset, if it has several."
    )
    format: Literal[
        "auto", "csv", "tsv", "json", "jsonl", "parquet", "text", "conll", "corpus", "dialogues", "squad"
    ] = Field(
        "auto",
        description="The file format; auto: from the extension (.txt is text). conll: `WORD ... TAG` lines, a list of "
        "words and a list of tags per sentence (token classification); corpus: plain text, one document per "
        "blank-line-separated paragraph (language models); dialogues: one dialogue per line, its utterances "
        "separated by data.turn_separator, read into a `turns` column (chat, with chat.speakers); squad: the SQuAD "
        "JSON as released (v1.1 or 2.0), one row per question with the Hub `squad` columns id, title, context, "
        "question and answers (question answering).",
    )
    turn_separator: str = Field(
        "__eou__", min_length=1, description="The marker between utterances of data.format=dialogues files."
    )
    separator: str | None = Field(None, description='The field separator of `text` files, e.g. ";" for emotion.')
    column_names: list[str] | None = Field(None, description="Names of the columns, for files without a header row.")
    text_column: str = Field(
        "text",
        description="The column of input texts (seq2seq: the sources; token classification: the list of words).",
    )
    text_pair_column: str | None = Field(
        None,
        description="A column of second texts, read with data.text_column as a sentence pair (sequence-level tasks).",
    )
    label_column: str = Field(
        "label",
        description="The column of labels: names or ids (classification), numbers (regression), tag lists (token "
        "classification), name lists or separated names (multi-label).",
    )
    label_names: list[str] | None = Field(
        None, description="The label names in label-id order; when absent, taken from the training data."
    )
    validation_fraction: float = Field(
        0.1,
        gt=0,
        lt=1,
        description="Share of the training rows held out for validation when there is no validation file, drawn "
        "with train.seed (corpus: the contiguous tail, so no passage leaks across the split).",
    )
    group_column: str | None = Field(
        None,
        description="Rows sharing a value of this column stay on one side of a held-out split: "
        "data.validation_fraction and data.num_folds then hold out whole groups (e.g. SQuAD articles: "
        "data.group_column=title), with the same seeds.",
    )
    max_length: int = Field(128, gt=1, description="Tokens per input text at most; longer texts are truncated.")
    max_train_rows: int | None = Field(
        None, gt=0, description="Keep only the first N training rows (after any sample), for smoke runs."
    )
    max_eval_rows: int | None = Field(
        None,
        gt=0,
        description="Keep only the first N rows of each evaluation split (validation, test, data.eval_files sets).",
    )
    split_column: str | None = Field(
        None,
        description="data.train_file holds every row and this column names each row's split (mapped by "
        "data.split_values); the column is dropped.",
    )
    split_values: dict[Literal["train", "validation", "test"], list[str]] = Field(
        dict(DEFAULT_SPLIT_VALUES),
        description="The values of data.split_column that mean each split; a split not given keeps its default "
        "spellings, and a value no split maps is refused.",
    )
    sample_train_rows: int | None = Field(
        None,
        gt=0,
        description="A seeded sample of N training rows, kept in file order (stratified by label for classification).",
    )
    sample_eval_rows: int | None = Field(
        None,
        gt=0,
        description="A seeded sample of N rows of each evaluation split (validation, test, data.eval_files sets).",
    )
    sample_seed: int = Field(0, description="Seed of the row samples and the folds; independent of train.seed.")
    num_folds: int | None = Field(
        None, ge=2, description="k-fold cross-validation: split the training rows into this many (stratified) folds."
    )
    fold: int | None = Field(
        None, ge=0, description="With data.num_folds: the held-out fold (from 0), which is the validation split."
    )

    @field_validator("split_values", mode="before")
    @classmethod
    def _known_spellings_kept(cls, values):
        """A mapping for one split keeps the default spellings of the others."""
        return {**DEFAULT_SPLIT_VALUES, **values} if isinstance(values, dict) else values

    @model_validator(mode="after")
    def _fold_of_folds(self) -> DataConfig:
        if (self.num_folds is None) != (self.fold is None):
            raise ValueError("set data.num_folds and data.fold together (e.g. data.num_folds=5 data.fold=0)")
        if self.fold is not None and self.fold >= self.num_folds:
            raise ValueError(
                f"data.fold={self.fold} must be below data.num_folds={self.num_folds} (folds count from 0)"
            )
        return self

    group_by_length: bool = Field(
        True,
        description="Batch training rows of similar length together: less padding, with the same randomness per epoch.",
    )
    max_tokens_per_batch: int | None = Field(
        None,
        gt=1,
        description="Training micro-batches by a token budget instead of train.per_device_batch_size rows: as many "
        "rows as fit in this many padded tokens (rows x the batch's longest row; packed blocks: their real tokens). "
        "Batches are cut once from the seeded (with data.group_by_length: length-sorted) row order; their order is "
        "shuffled every epoch. With data.streaming: cut from the shuffle buffer's rows as they come (packed blocks: a "
        "fixed number per batch). At least data.max_length.",
    )

    @model_validator(mode="after")
    def _budget_holds_a_row(self) -> DataConfig:
        if self.max_tokens_per_batch is not None and self.max_tokens_per_batch < self.max_length:
            raise ValueError(
                f"data.max_tokens_per_batch={self.max_tokens_per_batch} cannot hold a row of data.max_length="
                f"{self.max_length} tokens: raise it to at least {self.max_length} or lower data.max_length"
            )
        return self

    num_workers: int = Field(0, ge=0, description="DataLoader worker processes; 0 loads batches in the main process.")
    bad_rows: Literal["stop", "skip"] = Field(
        "stop",
        description="A row that cannot be read (a broken JSON line, undecodable bytes, a wrong number of fields) or "
        "has an empty or missing text or label: stop with one line naming the file and line or row (stop), or "
        "skip it, listed in RUN/skipped_rows.jsonl and counted on the start and end lines and in metrics.json (skip).",
    )
    max_bad_row_fraction: float = Field(
        0.01,
        ge=0,
        le=1,
        description="With data.bad_rows=skip: stop anyway when more than this share of a file's rows is bad (a wrong "
        "encoding, separator or column shows as many bad rows, not a few); of a stream's rows read so far, from 1,000 "
        "rows and at the end of its first pass.",
    )

    @model_validator(mode="before")
    @classmethod
    def _empty_texts_is_bad_rows(cls, values):
        """data.empty_texts (error|drop), the older key for empty texts alone, reads as data.bad_rows (stop|skip)."""
        if not isinstance(values, dict) or "empty_texts" not in values:
            return values
        values = dict(values)
        old = values.pop("empty_texts")
        policy = {"error": "stop", "drop": "skip"}.get(old)
        if policy is None:
            raise ValueError(f"data.empty_texts '{old}' is not error or drop; it is now data.bad_rows: stop or skip")
        if values.setdefault("bad_rows", policy) != policy:
            raise ValueError(
                f"data.empty_texts={old} and data.bad_rows={values['bad_rows']} disagree; keep data.bad_rows only"
            )
        return values

    encoding: str = Field("utf-8", description="Text encoding of csv, tsv, text, conll and corpus files.")
    cache_dir: str | None = Field(None, description="Folder of the tokenized-dataset cache; default ~/.cache/ptrain.")
    streaming: bool = Field(
        False,
        description="Train from a stream (ptrain/data/streaming.py): the training rows are read and tokenized as "
        "training goes, with no pass over them first; the length is train.max_steps; evaluation splits are read "
        "whole as usual; data.group_by_length does not apply.",
    )
    shuffle_buffer_size: int = Field(
        1_000,
        ge=0,
        description="With data.streaming: rows (tokenized) held in the seeded shuffle buffer of each process; each "
        "step draws from it at random. 0 or 1: the stream's order. Saved whole in every checkpoint.",
    )
    stream_shards: int = Field(
        64,
        gt=0,
        description="With data.streaming and a save_to_disk folder as data.train_file: the shards it is read as "
        "(the processes share them out; more shards than processes x data.num_workers spreads them evenly).",
    )
