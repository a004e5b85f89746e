"""`ptrain predict`: the task's prediction for every text of a file, written as CSV, TSV or JSON lines."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

from ptrain.config import DataConfig
from ptrain.data.splits import read_table
from ptrain.errors import DataError
from ptrain.files.atomic import write_text, written_through
from ptrain.inference.exports import load_exported
from ptrain.runtime.precision import autocast, inference_precision

OUTPUT_FORMATS = {".csv": ",", ".tsv": "\t", ".jsonl": None, ".json": None}


def predict_file(
    model_dir: str,
    input_path: str,
    output: str,
    text_column: str | None,
    batch_size: int,
    precision: str = "auto",
    pair_column: str | None = None,
) -> int:
    """The task's prediction for every row (a label and probabilities for classification, entity spans for
    token classification); rows keep the input order. Returns the row count. Texts are cut at the export's
    tokenizer model_max_length, which ptrain's exports set to the data.max_length they were trained with."""
    tokenizer, model, task = load_exported(model_dir)
    text_column, pair_column = text_column or task.predict_columns[0], pair_column or task.predict_columns[1]
    if pair_column and not (task.reads_pairs or task.predict_columns[1]):
        raise DataError(f"--text-pair-column: a {task.name} model reads single texts; leave it out")
    texts, pairs = read_texts(Path(input_path), text_column, pair_column)
    with autocast(inference_precision(precision)):  # on the CPU, in the dtype `auto` picks there by default
        rows = task.predict(model, tokenizer, texts, batch_size, pairs=pairs)
    if pairs is not None and "text" in rows[0]:  # the pair beside its text in every row
        rows = [{"text": row.pop("text"), "text_pair": pair, **row} for row, pair in zip(rows, pairs)]
    write_rows(rows, output)
    return len(rows)


def read_texts(path: Path, column: str, pair_column: str | None = None) -> tuple[list[str], list[str] | None]:
    if not path.is_file():
        raise DataError(f"--input {path} does not exist")
    if path.suffix.lower() == ".txt":
        if pair_column:
            raise DataError(f"--input {path}: a .txt file has one text per line; give a CSV, TSV or JSONL with pairs")
        return [line.rstrip("\n") for line in path.read_text().splitlines() if line.strip()], None
    table = read_table(DataConfig(text_column=column, text_pair_column=pair_column), path)
    for option, name in (("--text-column", column), ("--text-pair-column", pair_column)):
        if name and name not in table.column_names:
            raise DataError(f"{path}: no column '{name}' (columns {table.column_names}); pass {option}")
    return table[column], table[pair_column] if pair_column else None


def write_rows(rows: list[dict], output: str) -> None:
    if output == "-":
        for row in rows:
            sys.stdout.write(json.dumps(row) + "\n")
        return
    path = Path(output)
    suffix = check_output_name(output)
    if OUTPUT_FORMATS[suffix] is None:
        write_text(path, "".join(json.dumps(row) + "\n" for row in rows))
        return
    with written_through(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), delimiter=OUTPUT_FORMATS[suffix])
        writer.writeheader()
        writer.writerows({k: _cell(v) for k, v in row.items()} for row in rows)


def check_output_name(output: str, option: str = "--output") -> str:
    """The format suffix of an output file name; any other name is refused in one line."""
    suffix = Path(output).suffix.lower()
    if suffix not in OUTPUT_FORMATS:
        stdout = " (or - for stdout)" if option == "--output" else ""
        raise DataError(f"{option} {output}: use a .csv, .tsv or .jsonl file name{stdout}")
    return suffix


def _cell(value):
    """A CSV/TSV cell: lists and dicts (a sentence's entities) as JSON text."""
    return json.dumps(value) if isinstance(value, (list, dict)) else value
