"""A streamed split's JSON Lines files read line by line (datasets' json builder fails a whole block on one broken
line, and names no line): a generator-based stream with one shard per file. Under data.bad_rows=stop the first line
that cannot be a row (broken JSON, bytes that are not utf-8, a text that is not a string) or has no or an empty text
or label stops the run in one line naming its file and line; under skip it travels on as a marked row (BAD_ROW_COLUMN:
its source, line, kind and reason) so positions stay those of the files, and is dropped and recorded as the stream
is read (stream_bad_rows.py)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from datasets import IterableDataset

from ptrain.data.bad_rows import SKIP_HINT
from ptrain.data.line_reader import parse_json_line
from ptrain.errors import DataError

BAD_ROW_COLUMN = "ptrain_bad_row"  # skip only: None on a good row, the problem of a bad one (a dict)
KEY_LINES = 1_000  # lines of the first file read for the stream's columns (the keys of its first object)


def json_lines_stream(files: Sequence[Path], columns: Sequence[tuple[str, str]], word_column: str, policy: str):
    """The files' rows as one stream (a shard per file), each with the columns of the first file's first row plus the
    task's `columns` ((key, column) pairs, checked on every row; empty to check none), a key missing from a line
    being None there. A task column other than the label that holds a string in that first row holds text: a
    number, a boolean or an object there is a bad row (a QA answers column holds objects, its answer_start numbers).
    `word_column`: data.text_column, which may hold a list of words (not empty)."""
    first = _first_row(files[0])
    keys = list(dict.fromkeys([*first, *(column for _, column in columns)]))
    texts = [column for key, column in columns if key != "data.label_column" and isinstance(first.get(column), str)]
    # tuples: a list in gen_kwargs is what datasets shares out (the files, one shard each)
    checks = {"keys": tuple(keys), "columns": tuple(map(tuple, columns)), "text_columns": tuple(texts)}
    checks |= {"word_column": word_column, "policy": policy}
    return IterableDataset.from_generator(_rows, gen_kwargs={"files": [str(file) for file in files], **checks})


def _first_row(path: Path) -> dict:
    with path.open("rb") as file:
        for number, raw in enumerate(file):
            row, _ = parse_json_line(raw)
            if row is not None or number >= KEY_LINES:
                return row or {}
    return {}


def _rows(
    files: list[str], keys: tuple, columns: tuple, text_columns: tuple, word_column: str, policy: str
) -> Iterator[dict]:
    """One row per non-blank line of each file (the generator of json_lines_stream)."""
    for path in files:
        with open(path, "rb") as file:
            for number, raw in enumerate(file, 1):
                if not raw.strip():
                    continue
                row, problem = parse_json_line(raw, text_columns)
                if problem is None:
                    problem = value_problem(row, columns, word_column)
                values = {key: (row or {}).get(key) for key in keys}
                if problem is None:
                    yield values if policy == "stop" else {**values, BAD_ROW_COLUMN: None}
                    continue
                kind, reason, *fix = problem
                if policy == "stop":
                    fix = fix[0] if fix else "fix that line"
                    raise DataError(f"{path}: line {number} {reason}; {fix}, {SKIP_HINT}")
                bad = {"source": path, "line": number, "kind": kind, "reason": reason}
                yield {**dict.fromkeys(keys), BAD_ROW_COLUMN: bad}


def value_problem(row: dict, columns: Sequence[Sequence[str]], word_column: str) -> tuple[str, str] | None:
    """A text or label that is missing or null, a blank text, an empty list of words: (kind, reason) as
    bad_rows.drop_bad_values words them for map-style splits; None for a good row."""
    for key, column in columns:
        value = row.get(column)
        if value is None:
            return "missing_value", f"has no value for {key} '{column}' (a missing field or null)"
        if isinstance(value, str) and not value.strip():
            return "empty_text", f"has an empty text in {key} '{column}'"
        if column == word_column and isinstance(value, list) and not value:
            return "empty_text", f"has no words in {key} '{column}'"
    return None


def without_bad_rows(rows: list[dict], source: str) -> list[dict]:
    """The stream's first rows for the encoder's checks and the columns (stream_source.read_head): its good rows
    without the mark (the bad ones are recorded when training reads them)."""
    kept = [{k: v for k, v in row.items() if k != BAD_ROW_COLUMN} for row in rows if row.get(BAD_ROW_COLUMN) is None]
    if rows and not kept:
        first = rows[0][BAD_ROW_COLUMN]
        raise DataError(
            f"{source}: the first {len(rows):,} rows of the training stream are all bad (first: {first['source']} "
            f"line {first['line']} {first['reason']}); fix the data or its reading settings"
        )
    return kept
