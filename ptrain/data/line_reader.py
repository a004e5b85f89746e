"""Reading a file line by line after datasets' builder failed on it (data.bad_rows): JSON Lines, and delimited text
(csv, tsv, text) under skip. Each line that cannot be a row goes to the source's Ledger, which stops the run at the
first (stop) or records it (skip). Only the failed files pay for this slower, in-memory pass."""

from __future__ import annotations

import io
import json
import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import pyarrow as pa
from datasets import Dataset

from ptrain.data.bad_rows import Ledger
from ptrain.errors import DataError, first_line

FIELD_COUNT = re.compile(r"Skipping line (\d+): expected (\d+) fields, saw (\d+)")  # pandas' on_bad_lines="warn"


def reread(path: Path, fmt: str, csv_options: dict, ledger: Ledger, text_columns: Sequence[str]) -> Dataset | None:
    """The file's rows without its unreadable lines, or None where this reader does not apply (the caller then
    reports the builder's own error): JSON Lines under either policy (stop names the first bad line), csv, tsv and
    text files under skip (stop keeps the builder's error, which names the line)."""
    if fmt in ("json", "jsonl") and (fmt == "jsonl" or path.suffix.lower() == ".jsonl" or starts_with_object(path)):
        return read_json_lines(path, ledger, text_columns)
    if fmt == "json":
        _refuse_broken_document(path)
    if fmt in ("csv", "tsv", "text") and ledger.policy == "skip":
        return read_delimited(path, csv_options, ledger)
    return None


def starts_with_object(path: Path) -> bool:
    """A .json file whose first line is a whole JSON object holds JSON Lines (not one array or object)."""
    with path.open("rb") as file:
        first = next((line for line in file if line.strip()), b"")
    try:
        return isinstance(json.loads(first), dict)
    except ValueError:
        return False


def _refuse_broken_document(path: Path) -> None:
    """A .json file that is one document (an array of rows) has no row to skip: where it breaks, in one line."""
    try:
        json.loads(path.read_bytes())
    except UnicodeDecodeError as bad:
        raise DataError(f"{path}: byte {bad.start} is not valid utf-8; convert the file to utf-8") from None
    except json.JSONDecodeError as err:
        raise DataError(
            f"{path}: line {err.lineno} column {err.colno} is not valid JSON ({err.msg}); fix it (one JSON document "
            "has no rows to skip; JSON Lines, one row per line, has)"
        ) from None


def read_json_lines(path: Path, ledger: Ledger, text_columns: Sequence[str] = ()) -> Dataset:
    """One row per non-blank line; a key missing from a line is null there (as datasets reads it). A line whose
    value in one of `text_columns` is a number, a boolean or an object cannot be tokenized: a bad row too (a list
    may be a list of words)."""
    rows, lines = [], []
    with path.open("rb") as file:
        for number, raw in enumerate(file, 1):
            if not raw.strip():
                continue
            row, problem = parse_json_line(raw, text_columns)
            if problem is not None:
                ledger.unreadable(number, *problem)
                continue
            rows.append(row)
            lines.append(number)
    columns = dict.fromkeys(key for row in rows for key in row)  # every key, in first-seen order
    try:
        ds = Dataset.from_dict({key: [row.get(key) for row in rows] for key in columns})
    except (pa.ArrowException, ValueError, TypeError) as err:
        raise DataError(
            f"{path}: a column holds values of different types ({first_line(err)}); make each column one type"
        ) from None
    ledger.lines = lines
    return ds


def parse_json_line(raw: bytes, text_columns: Sequence[str] = ()) -> tuple[dict | None, tuple[str, ...] | None]:
    """One JSON Lines line as a row, or None and its problem: (kind, reason[, fix]) as Ledger.unreadable takes them.
    A value in one of `text_columns` that is a number, a boolean or an object cannot be tokenized: a problem too (a
    list may be a list of words)."""
    try:
        row = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as bad:
        return None, ("undecodable", f"is not valid utf-8 (byte 0x{raw[bad.start]:02x})", "convert it to utf-8")
    except json.JSONDecodeError as err:
        return None, ("broken_json", f"is not valid JSON ({err.msg} at column {err.colno})")
    if not isinstance(row, dict):
        return None, ("broken_json", f"is a JSON {type(row).__name__}, not an object of columns")
    not_text = next((c for c in text_columns if isinstance(row.get(c), int | float | bool | dict)), None)
    if not_text is not None:
        value = json.dumps(row[not_text])[:40]
        return None, ("not_text", f"has {value} in text column '{not_text}', not a string")
    return row, None


def read_delimited(path: Path, csv_options: dict, ledger: Ledger) -> Dataset:
    """Lines in data.encoding, parsed by pandas as datasets' csv builder does; lines that do not decode, and rows
    with too many fields, are left out."""
    encoding = csv_options["encoding"]
    kept, lines = [], []  # decoded lines, and their line numbers in the file
    with path.open("rb") as file:
        for number, raw in enumerate(file, 1):
            try:
                kept.append(raw.decode(encoding))
            except UnicodeDecodeError as bad:
                reason = f"is not valid {encoding} (byte 0x{raw[bad.start]:02x})"
                ledger.unreadable(number, "undecodable", reason, "convert the file or set data.encoding")
                continue
            lines.append(number)
    options = {key: value for key, value in csv_options.items() if key != "encoding"}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            frame = pd.read_csv(io.StringIO("".join(kept)), on_bad_lines="warn", **options)
        except (ValueError, pd.errors.ParserError) as err:
            raise DataError(f"{path}: could not be read ({first_line(err)})") from None
    for warning in caught:
        for line, expected, saw in FIELD_COUNT.findall(str(warning.message)):
            reason = f"has {saw} fields where {expected} were expected"
            ledger.unreadable(lines[int(line) - 1], "wrong_field_count", reason)
    ledger.skipped.sort(key=lambda row: row["line"])
    return Dataset.from_pandas(frame, preserve_index=False)
