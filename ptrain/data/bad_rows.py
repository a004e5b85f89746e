"""data.bad_rows: rows that cannot be read or have an empty or missing text or label stop the run in one line
naming the file and line or row (stop), or are skipped and listed (skip: RUN/skipped_rows.jsonl, counted on the start
and end lines and in metrics.json) until more than data.max_bad_row_fraction of a file is bad."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
from datasets import Dataset

from ptrain.errors import DataError

SKIPPED_ROWS_FILE = "skipped_rows.jsonl"  # in the run folder, one skipped row per line
SKIP_HINT = "or set data.bad_rows=skip to skip such rows"


@dataclass
class Ledger:
    """The bad rows of one source (a file, a saved split, a Hub split). `lines`: the file line of each row read,
    when the reader knows it (the line-by-line readers), so a row's problem names its line too."""

    source: str
    policy: str = "stop"  # data.bad_rows
    rows_read: int = 0  # rows parsed plus lines that could not be
    skipped: list[dict] = field(default_factory=list)
    lines: list[int] | None = None

    def unreadable(self, line: int, kind: str, reason: str, fix: str = "fix that line") -> None:
        """A line that cannot be read as a row: the run stops here (stop) or the line is recorded (skip)."""
        if self.policy == "stop":
            raise DataError(f"{self.source}: line {line} {reason}; {fix}, {SKIP_HINT}")
        self.skipped.append({"source": self.source, "line": line, "kind": kind, "reason": reason})

    def position(self, row: int) -> dict:
        """Where data row `row` (0-based, of the rows read) is: its row, and its line when known."""
        return {"row": row, **({"line": self.lines[row]} if self.lines is not None else {})}


def drop_bad_values(ds: Dataset, ledger: Ledger, columns: list[tuple[str, str]], word_column: str) -> Dataset:
    """Rows whose text or label (`columns`: (key, column) pairs) is null or blank, or whose list of words in
    `word_column` is empty: one line naming the first (stop), or dropped and recorded (skip)."""
    bad: dict[int, str] = {}
    for key, column in columns:
        values = ds.data.column(column)
        for row in _indices(pc.is_null(values)):
            bad.setdefault(row, f"no value for {key} '{column}' (a missing field or null)")
        blank = None
        if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
            blank, what = pc.equal(pc.utf8_trim_whitespace(values), ""), "an empty text"
        elif column == word_column and (pa.types.is_list(values.type) or pa.types.is_large_list(values.type)):
            blank, what = pc.equal(pc.list_value_length(values), 0), "no words"  # an empty label list: "no labels"
        for row in _indices(blank) if blank is not None else ():
            bad.setdefault(row, f"{what} in {key} '{column}'")
    if not bad:
        return ds
    if ledger.policy == "stop":
        first = min(bad)
        where = ", ".join(f"{name} {value}" for name, value in ledger.position(first).items())
        raise DataError(
            f"{ledger.source}: {len(bad)} {'rows have' if len(bad) > 1 else 'row has'} an empty text or label "
            f"(first: data {where}: {bad[first]}); "
            f"fix them, {SKIP_HINT}"
        )
    for row in sorted(bad):
        kind = "missing_value" if bad[row].startswith("no value") else "empty_text"
        ledger.skipped.append({"source": ledger.source, **ledger.position(row), "kind": kind, "reason": bad[row]})
    if ledger.lines is not None:  # unreadable lines and rows in one file order
        ledger.skipped.sort(key=lambda skipped: skipped["line"])
    return ds.select([row for row in range(len(ds)) if row not in bad])


def _indices(mask) -> list[int]:
    return pc.indices_nonzero(pc.fill_null(mask, False)).to_pylist()


def check_fraction(ledger: Ledger, max_fraction: float) -> None:
    """Skipping stops at data.max_bad_row_fraction of a source's rows: so many bad rows mean a wrong setting
    (encoding, separator, column) or broken data, and training on the rest would quietly change the data."""
    bad, read = len(ledger.skipped), max(ledger.rows_read, 1)
    if bad / read > max_fraction:
        first = ledger.skipped[0]
        where = f"line {first['line']}" if "line" in first else f"data row {first['row']}"
        raise DataError(
            f"{ledger.source}: {bad} of {ledger.rows_read} rows are bad ({bad / read:.1%}, over "
            f"data.max_bad_row_fraction={max_fraction}; first: {where}: {first['reason']}); fix the data or its "
            "reading settings, or raise data.max_bad_row_fraction"
        )


@dataclass
class BadRows:
    """Every source's ledger, for the run's files and lines."""

    policy: str = "stop"
    ledgers: list[Ledger] = field(default_factory=list)

    @property
    def skipped(self) -> list[dict]:
        return [row for ledger in self.ledgers for row in ledger.skipped]

    def jsonl(self) -> str:
        """RUN/skipped_rows.jsonl: {source, line and/or row, kind, reason} per skipped row; per source, in file
        order where the lines of rows are known, else unreadable lines first."""
        return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in self.skipped)

    def record(self) -> dict:
        """metrics.json's `skipped_rows`: the policy, the total, and per source its rows read and skips by kind."""
        by_source = {
            ledger.source: {
                "rows_read": ledger.rows_read,
                "skipped": len(ledger.skipped),
                "kinds": dict(Counter(row["kind"] for row in ledger.skipped)),
            }
            for ledger in self.ledgers
            if ledger.skipped
        }
        return {"policy": self.policy, "total": len(self.skipped), "by_source": by_source}

    def summary(self, listing: str | None = SKIPPED_ROWS_FILE) -> str:
        """The start and end lines' count: '' under stop (a bad row has stopped the run); under skip, what was
        skipped, by source and kind, and where it is listed."""
        if self.policy != "skip":
            return ""
        parts = [
            f"{ledger.source} {len(ledger.skipped):,} of {ledger.rows_read:,} "
            f"({', '.join(f'{n} {kind}' for kind, n in Counter(r['kind'] for r in ledger.skipped).items())})"
            for ledger in self.ledgers
            if ledger.skipped
        ]
        listed = f": {'; '.join(parts)}{f'; listed in {listing}' if listing else ''}" if parts else ""
        return f"skipped {len(self.skipped):,} bad rows (data.bad_rows=skip){listed}"
