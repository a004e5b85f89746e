"""data.bad_rows through `ptrain train`: each kind of bad row (a broken JSON line, a missing field, undecodable
bytes, an empty text, a row with too many fields) stops the run in one line naming the file and line or row, or is
skipped, listed in RUN/skipped_rows.jsonl and counted on the start and end lines and in metrics.json, until more than
data.max_bad_row_fraction of a file is bad."""

from __future__ import annotations

import json

import pytest

from ptrain.errors import ConfigError
from ptrain.tasks import load_config
from tests.conftest import CONFIGS, run_cli, tiny_overrides
from tests.test_bad_inputs import assert_refused

LABELS = ("joy", "sadness")
GOOD = [json.dumps({"text": f"sample text number {i}", "label": LABELS[i % 2]}).encode() for i in range(500)]
# kind -> the bad line, and what the one-line error of data.bad_rows=stop says when it is line 5 (data row 4)
BAD_JSON_LINES = {
    "broken_json": (b'{"text": "a broken line", label: "joy"}', ["line 5 is not valid JSON"]),
    "missing_value": (b'{"label": "joy"}', ["1 row has an empty text or label", "data row 4", "missing field"]),
    "undecodable": (b'{"text": "caf\xe9 au lait", "label": "joy"}', ["line 5 is not valid utf-8", "byte 0xe9"]),
    "empty_text": (b'{"text": "   ", "label": "sadness"}', ["1 row has an empty text or label", "data row 4"]),
    "not_text": (b'{"text": 12345, "label": "joy"}', ["line 5 has 12345 in text column 'text', not a string"]),
}
CSV_HEADER = b"text,label\n"
GOOD_CSV = [f"sample text number {i},{LABELS[i % 2]}".encode() for i in range(500)]
BAD_CSV_LINES = {  # kind -> the bad line
    "undecodable": b"caf\xe9 au lait,joy",
    "wrong_field_count": b"one field too many,joy,extra",
    "missing_value": b",sadness",  # no text
}


def with_bad_lines(good: list[bytes], bad: list[bytes], every: int = 4) -> bytes:
    """`good` lines with the `bad` ones put at lines 5, 9, 13, ... (1-based, without a header)."""
    lines = list(good)
    for number, line in enumerate(bad):
        lines.insert(every * (number + 1), line)
    return b"\n".join(lines) + b"\n"


def train_on(tmp_path, cache_dir, name: str, content: bytes, *extra: str):
    (tmp_path / name).write_bytes(content)
    (tmp_path / "val.jsonl").write_bytes(b"\n".join(GOOD[:40]) + b"\n")
    data = [f"data.data_dir={tmp_path}", f"data.train_file={name}", "data.validation_file=val.jsonl"]
    data += ["data.format=auto", "data.separator=null", "data.column_names=null", "train.max_steps=2"]
    return run_cli("train", str(CONFIGS / "tiny.yaml"), *tiny_overrides(tmp_path, cache_dir), *data, *extra)


@pytest.mark.parametrize("kind", list(BAD_JSON_LINES))
def test_stop_names_the_file_line_and_problem(tmp_path, cache_dir, kind):
    line, needles = BAD_JSON_LINES[kind]
    result = train_on(tmp_path, cache_dir, "train.jsonl", with_bad_lines(GOOD[:40], [line]))
    assert_refused(result, tmp_path, "train.jsonl", *needles, "data.bad_rows=skip")


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, content, kinds",
    [
        (
            "train.jsonl",
            with_bad_lines(GOOD, [line for line, _ in BAD_JSON_LINES.values()]),
            {5: "broken_json", 9: "missing_value", 13: "undecodable", 17: "empty_text", 21: "not_text"},
        ),
        (
            "train.csv",
            CSV_HEADER + with_bad_lines(GOOD_CSV, list(BAD_CSV_LINES.values())),
            {6: "undecodable", 10: "wrong_field_count", None: "missing_value"},  # the csv row's line is not known
        ),
    ],
    ids=["jsonl", "csv"],
)
def test_skip_lists_and_counts_every_skipped_row(tmp_path, cache_dir, name, content, kinds):
    result = train_on(tmp_path, cache_dir, name, content, "data.bad_rows=skip")
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (tmp_path / "runs").glob("*/*")
    skipped = [json.loads(line) for line in (run_dir / "skipped_rows.jsonl").read_text().splitlines()]
    assert {row.get("line"): row["kind"] for row in skipped} == kinds
    assert all(row["source"] == str(tmp_path / name) and row["reason"] for row in skipped)
    count = f"skipped {len(kinds)} bad rows (data.bad_rows=skip): {tmp_path / name} {len(kinds)} of {500 + len(kinds)}"
    start, end = result.stdout.split("ptrain: best ")
    assert count in start and count in end and str(run_dir / "skipped_rows.jsonl") in end, result.stdout
    record = json.loads((run_dir / "metrics.json").read_text())["skipped_rows"]
    assert record["total"] == len(kinds) and record["by_source"][str(tmp_path / name)]["rows_read"] == 500 + len(kinds)


def test_skip_stops_past_the_bad_row_fraction(tmp_path, cache_dir):
    bad = [line for line, _ in BAD_JSON_LINES.values()]
    result = train_on(tmp_path, cache_dir, "train.jsonl", with_bad_lines(GOOD[:50], bad), "data.bad_rows=skip")
    assert_refused(
        result, tmp_path, "train.jsonl: 5 of 55 rows are bad (9.1%", "data.max_bad_row_fraction=0.01", "first: line 5"
    )


def test_empty_texts_reads_as_bad_rows(tmp_path):
    path = CONFIGS / "tiny.yaml"
    assert load_config(path, ["data.empty_texts=drop"]).data.bad_rows == "skip"
    assert load_config(path, ["data.empty_texts=error"]).data.bad_rows == "stop"
    with pytest.raises(ConfigError, match="data.empty_texts=drop and data.bad_rows=stop disagree"):
        load_config(path, ["data.empty_texts=drop", "data.bad_rows=stop"])


def test_a_broken_json_document_names_its_line_under_either_policy(tmp_path, cache_dir):
    lines = [line.decode() for line in GOOD[:40]]
    lines[3] = lines[3].replace('"label"', "label")
    document = ("[\n" + ",\n".join(lines) + "\n]\n").encode()  # one array: line 5 holds the broken row
    for policy in ("stop", "skip"):
        result = train_on(tmp_path, cache_dir, "train.json", document, f"data.bad_rows={policy}")
        assert_refused(result, tmp_path, "train.json: line 5 column", "is not valid JSON", "JSON Lines")
