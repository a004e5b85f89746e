"""Dialogue files: one dialogue per line, its utterances separated by a marker (DailyDialog's `__eou__`), the
speakers alternating and unnamed. Read into a `turns` column (a list of utterances per row); the chat task maps the
speakers to roles (chat.speakers)."""

from __future__ import annotations

from pathlib import Path

from datasets import Dataset

from ptrain.errors import DataError


def read_dialogues(path: Path, separator: str, column: str, encoding: str) -> Dataset:
    """Every non-blank line as one row of stripped, non-empty utterances; line numbers of the file are kept in
    `line` so a refused row can be named."""
    try:
        lines = path.read_text(encoding=encoding).splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot read it as {encoding} dialogues ({err}); check data.encoding") from None
    turns, numbers = [], []
    for number, line in enumerate(lines, start=1):
        utterances = [part.strip() for part in line.split(separator)]
        utterances = [part for part in utterances if part]
        if utterances:
            turns.append(utterances)
            numbers.append(number)
    if not turns:
        raise DataError(f"{path}: no dialogue in it (one per line, utterances separated by {separator!r})")
    if all(len(dialogue) == 1 for dialogue in turns):
        raise DataError(
            f"{path}: no line holds two utterances separated by {separator!r}; set data.turn_separator to the "
            "file's marker"
        )
    ds = Dataset.from_dict({column: turns, "line": numbers})
    ds.info.description = str(path)
    return ds
