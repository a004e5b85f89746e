"""data.bad_rows=skip on a streamed training split: the rows stream_rows.py marks bad pass the encoder by
(`SkippingEncoder`) and are dropped by the shuffle buffer (`FirstPass`), which counts the rows of its first pass
(epoch 0) and checks data.max_bad_row_fraction. What it dropped travels with the next row it hands on, and so with the
batch that holds it (`PassCollator`), into this process's `StreamLedger`: the ledger holds exactly the rows of the
batches trained on, is saved in each checkpoint (skipped_rows_<rank>.json) and restored with the stream, so a resumed
run lists each row once. At the end every process's ledger is gathered into RUN/skipped_rows.jsonl and metrics.json."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from accelerate.utils import gather_object

from ptrain.data.bad_rows import SKIPPED_ROWS_FILE, BadRows, Ledger
from ptrain.data.mixtures import SOURCE_COLUMN
from ptrain.data.stream_rows import BAD_ROW_COLUMN
from ptrain.errors import DataError
from ptrain.files.atomic import write_text

PASS_KEY = "ptrain_first_pass"  # on a row handed on, then on its batch: {"read": [per source], "skipped": [...]}
LEDGER_FILE = "skipped_rows_{rank}.json"  # in each checkpoint folder, one per process
FRACTION_MIN_ROWS = 1_000  # rows read before the share of bad ones is checked (and at the end of the first pass)


class SkippingEncoder:
    """The task's batched encoder given the good rows of each batch only. A bad row comes out with None in every
    output column and its problem in BAD_ROW_COLUMN: in its place when the encoder makes one row of each, else after
    the good rows' outputs (an encoder that packs rows into blocks, or makes several of one)."""

    def __init__(self, encode: Callable, sample: dict) -> None:
        self.encode = encode
        self.columns = list(encode(sample, list(range(len(next(iter(sample.values())))))))

    def __call__(self, batch: dict, indices: list[int]) -> dict:
        marks = batch.get(BAD_ROW_COLUMN) or [None] * len(indices)
        good = [i for i, mark in enumerate(marks) if mark is None]
        rows = {column: values for column, values in batch.items() if column != BAD_ROW_COLUMN}
        if len(good) < len(marks):
            rows = {column: [values[i] for i in good] for column, values in rows.items()}
        outputs = self.encode(rows, [indices[i] for i in good]) if good else dict.fromkeys(self.columns, [])
        outputs = {column: list(values) for column, values in outputs.items()}
        if len(good) == len(marks):
            return {**outputs, BAD_ROW_COLUMN: [None] * len(marks)}
        made = len(next(iter(outputs.values()))) if outputs else 0
        if made == len(good):  # row for row: each bad row in its place
            places = {row: position for position, row in enumerate(good)}
            spread = range(len(marks))
            outputs = {c: [v[places[i]] if i in places else None for i in spread] for c, v in outputs.items()}
            return {**outputs, BAD_ROW_COLUMN: marks}
        bad = [mark for mark in marks if mark is not None]
        for values in outputs.values():
            values.extend([None] * len(bad))
        return {**outputs, BAD_ROW_COLUMN: [None] * made + bad}


class FirstPass:
    """In the shuffle buffer (streaming.ShuffleBuffer): the rows read in the first pass by source (a data.mixture
    source, else one), the bad ones dropped, and what to hand on with the next row. Its state is whole between
    rows (state / load), saved with the buffer's."""

    def __init__(self, sources: list[str], max_fraction: float, rank: int) -> None:
        self.sources, self.max_fraction, self.rank = sources, max_fraction, rank
        self.read, self.bad = [0] * len(sources), [0] * len(sources)
        self.first: list[dict | None] = [None] * len(sources)  # the first bad row of each source
        self.pending: dict = {"read": [0] * len(sources), "skipped": []}

    def take(self, row: dict, epoch: int) -> dict | None:
        """The row without its mark, or None for a bad one (counted and kept to hand on in the first pass)."""
        mark = row.pop(BAD_ROW_COLUMN)
        if epoch == 0:  # later passes read the same rows again: each is counted and listed once
            source = row.get(SOURCE_COLUMN, 0)
            self.read[source] += 1
            self.pending["read"][source] += 1
            if mark is not None:
                self.bad[source] += 1
                self.first[source] = self.first[source] or mark
                self.pending["skipped"].append({**mark, "stream": source})
                self.check(source, FRACTION_MIN_ROWS)
        return None if mark is not None else row

    def end_of_pass(self, epoch: int) -> None:
        """The first pass read every row of this process's part: the shares are exact, whatever the count."""
        if epoch == 0:
            for source in range(len(self.sources)):
                self.check(source, 1)

    def check(self, source: int, min_rows: int) -> None:
        bad, read = self.bad[source], self.read[source]
        if read >= min_rows and bad / read > self.max_fraction:
            first = self.first[source]
            raise DataError(
                f"{self.sources[source]}: {bad:,} of the {read:,} rows process {self.rank} has read are bad "
                f"({bad / read:.1%}, over data.max_bad_row_fraction={self.max_fraction}; first: {first['source']} line "
                f"{first['line']} {first['reason']}); fix the data or its reading settings, or raise "
                "data.max_bad_row_fraction"
            )

    def attach(self, row: dict) -> dict:
        """The row handed on, carrying what was read and dropped since the last one."""
        if not any(self.pending["read"]):
            return row
        passed, self.pending = self.pending, {"read": [0] * len(self.sources), "skipped": []}
        return {**row, PASS_KEY: passed}

    def state(self) -> dict:
        pending = {"read_pending": self.pending["read"], "skipped": self.pending["skipped"]}
        return json.loads(json.dumps({"read": self.read, "bad": self.bad, "first": self.first, **pending}))

    def load(self, state: dict) -> None:
        self.read, self.bad, self.first = state["read"], state["bad"], state["first"]
        self.pending = {"read": state["read_pending"], "skipped": state["skipped"]}


class PassCollator:
    """The loader's collator: what the rows carry from the first pass taken off (summed over the batch) before the
    task's collator pads them, and put on the batch for TrainStream to hand to the ledger."""

    def __init__(self, collator: Callable) -> None:
        self.collator = collator

    def __call__(self, rows: list[dict]):
        passed = [row.pop(PASS_KEY) for row in rows if PASS_KEY in row]
        batch = self.collator(rows)
        if passed:
            batch[PASS_KEY] = {
                "read": [sum(counts) for counts in zip(*(p["read"] for p in passed), strict=True)],
                "skipped": [row for p in passed for row in p["skipped"]],
            }
        return batch


class StreamLedger:
    """This process's first-pass rows read and bad rows skipped, as of the batches trained on."""

    def __init__(self, sources: list[str]) -> None:
        self.sources, self.read, self.skipped = sources, [0] * len(sources), []

    def add(self, passed: dict | None) -> None:
        if passed:
            self.read = [mine + more for mine, more in zip(self.read, passed["read"], strict=True)]
            self.skipped += passed["skipped"]

    def save(self, folder: Path, rank: int) -> None:
        (folder / LEDGER_FILE.format(rank=rank)).write_text(json.dumps({"read": self.read, "skipped": self.skipped}))

    def load(self, folder: Path, rank: int) -> str:
        path = folder / LEDGER_FILE.format(rank=rank)
        if not path.is_file():  # a checkpoint of a run with data.bad_rows=stop: nothing was skipped
            return ""
        state = json.loads(path.read_text())
        self.read, self.skipped = state["read"], state["skipped"]
        return f", {len(self.skipped):,} bad rows skipped so far"

    def fold(self, bad_rows: BadRows, run_dir: Path | None) -> None:
        """Every process's ledger (a collective: all call it) added to `bad_rows`; the main process (`run_dir`
        given) rewrites RUN/skipped_rows.jsonl with them."""
        self.merge(gather_object([{"read": self.read, "skipped": self.skipped}]), bad_rows)
        if run_dir is not None:
            write_text(run_dir / SKIPPED_ROWS_FILE, bad_rows.jsonl())

    def merge(self, every: list[dict], bad_rows: BadRows) -> None:
        """The processes' ledgers (`every`) added to `bad_rows` as one Ledger per stream source: its rows read
        summed, each skipped row once (a data.mixture source drawn past its end is read again in the same pass), in
        file and line order."""
        rows = {(row["source"], row["line"]): row for ledger in every for row in ledger["skipped"]}
        for source, name in enumerate(self.sources):
            skipped = [
                {key: value for key, value in row.items() if key != "stream"}
                for _, row in sorted(rows.items())
                if row["stream"] == source
            ]
            read = sum(ledger["read"][source] for ledger in every)
            bad_rows.ledgers.append(Ledger(name, bad_rows.policy, rows_read=read, skipped=skipped))
