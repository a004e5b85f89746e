"""data.bad_rows on a streamed training split (data.streaming): each kind of bad line in a JSONL shard (broken JSON,
a missing field, undecodable bytes, an empty text, a number as text) stops the run in one line naming its file and
line, or is skipped, listed once in RUN/skipped_rows.jsonl and counted in metrics.json and on the end line, until
more than data.max_bad_row_fraction of the rows read is bad; a killed run resumed with train.resume=auto ends with the
same weights and the same list of skipped rows."""

from __future__ import annotations

import itertools
import json
import re
from functools import partial
from pathlib import Path

import pytest
import torch

from ptrain.data.bad_rows import BadRows
from ptrain.data.stream_bad_rows import SkippingEncoder, StreamLedger
from ptrain.data.stream_rows import BAD_ROW_COLUMN, json_lines_stream
from ptrain.data.stream_source import open_train_stream
from ptrain.data.streaming import train_stream
from ptrain.errors import ConfigError, DataError
from ptrain.tasks import get_task, load_config
from tests.conftest import CONFIGS, run_cli, tiny_overrides
from tests.test_mixtures import STREAMED, write_streamed_sources
from tests.test_resume import assert_same_run
from tests.test_streaming import stream_overrides, write_corpus

COLUMNS = [("data.text_column", "text"), ("data.label_column", "label")]
# kind -> the bad line, and what data.bad_rows=stop says of it
BAD_LINES = {
    "broken_json": (b'{"text": "a broken line", label: "joy"}', "is not valid JSON"),
    "missing_value": (b'{"label": "joy"}', "has no value for data.text_column 'text' (a missing field or null)"),
    "undecodable": (b'{"text": "caf\xe9 au lait", "label": "joy"}', "is not valid utf-8 (byte 0xe9)"),
    "empty_text": (b'{"text": "   ", "label": "sadness"}', "has an empty text in data.text_column 'text'"),
    "not_text": (b'{"text": 12345, "label": "joy"}', "has 12345 in text column 'text', not a string"),
}
# (shard, line) of each bad line in the corpus: before and after the step-18 checkpoint of a resumed run
PLACES = {"broken_json": (0, 3), "missing_value": (0, 90), "undecodable": (1, 40), "empty_text": (2, 7)}
PLACES["not_text"] = (2, 70)


def bad_corpus(folder: Path, places: dict[str, tuple[int, int]] = PLACES) -> dict[str, tuple[str, int]]:
    """tests/test_streaming.py's 300-row corpus in 3 shards, with the bad lines inserted at `places` (1-based
    lines); returns kind -> (file, line)."""
    files = write_corpus(folder)
    where = {}
    for shard, file in enumerate(files):
        lines = file.read_bytes().splitlines()
        for kind, (at_shard, line) in sorted(places.items(), key=lambda item: item[1][1]):
            if at_shard == shard:
                lines.insert(line - 1, BAD_LINES[kind][0])
                where[kind] = (str(file), line)
        file.write_bytes(b"\n".join(lines) + b"\n")
    (folder / "validation.jsonl").write_bytes(b"".join(line + b"\n" for line in lines[-60:-20]))
    return where


def skip_overrides(out: Path, cache: Path, corpus: Path, **extra: str) -> list[str]:
    """test_streaming's run (30 steps of 16 rows: the first pass of ~300 rows ends near step 19) with skip."""
    values = {
        "data.validation_file": str(corpus / "validation.jsonl"),
        "data.format": "auto",  # the validation file is JSONL too
        "data.bad_rows": "skip",
        "data.max_bad_row_fraction": "0.05",
        **extra,
    }
    return stream_overrides(out, cache, corpus, **values)


@pytest.mark.parametrize("kind", list(BAD_LINES))
def test_stop_names_the_file_line_and_problem(tmp_path, kind):
    where = bad_corpus(tmp_path, {kind: (1, 57)})
    overrides = skip_overrides(tmp_path, tmp_path, tmp_path, **{"data.bad_rows": "stop"})
    cfg = load_config(CONFIGS / "tiny.yaml", overrides[1:])
    with pytest.raises(DataError) as info:
        list(open_train_stream(cfg, columns=COLUMNS))
    message = str(info.value)
    assert message.startswith(f"{where[kind][0]}: line 57 {BAD_LINES[kind][1]}"), message
    assert "data.bad_rows=skip" in message and "\n" not in message


def test_stop_through_the_cli_is_one_line(tmp_path, cache_dir):
    bad_corpus(tmp_path, {"broken_json": (2, 12)})
    result = run_cli("train", *skip_overrides(tmp_path, cache_dir, tmp_path, **{"data.bad_rows": "stop"}))
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-3000:]
    assert "part-02.jsonl: line 12 is not valid JSON" in lines[0]


def test_skip_marks_each_bad_line_where_it_is(tmp_path):
    where = bad_corpus(tmp_path)
    cfg = load_config(CONFIGS / "tiny.yaml", skip_overrides(tmp_path, tmp_path, tmp_path)[1:])
    rows = list(open_train_stream(cfg, columns=COLUMNS))
    marks = [row[BAD_ROW_COLUMN] for row in rows if row[BAD_ROW_COLUMN] is not None]
    assert len(rows) == 300 + len(BAD_LINES)
    assert {mark["kind"]: (mark["source"], mark["line"]) for mark in marks} == where


@pytest.fixture(scope="module")
def skipped_run(tmp_path_factory, cache_dir) -> tuple[Path, Path, dict]:
    corpus = tmp_path_factory.mktemp("bad_corpus")
    where = bad_corpus(corpus)
    out = tmp_path_factory.mktemp("skipped")
    result = run_cli("train", *skip_overrides(out, cache_dir, corpus))
    assert result.returncode == 0, result.stderr[-3000:]
    return out, corpus, where, result.stdout


def skipped_rows(out: Path) -> list[dict]:
    (run_dir,) = (out / "runs" / "tiny").iterdir()
    return [json.loads(line) for line in (run_dir / "skipped_rows.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_skip_lists_and_counts_every_bad_row_once(skipped_run):
    out, corpus, where, stdout = skipped_run
    listed = skipped_rows(out)
    assert {row["kind"]: (row["source"], row["line"]) for row in listed} == where
    assert len(listed) == len(where) and all(row["reason"] for row in listed)
    (run_dir,) = (out / "runs" / "tiny").iterdir()
    record = json.loads((run_dir / "metrics.json").read_text())["skipped_rows"]
    assert record["policy"] == "skip" and record["total"] == len(where)
    (source,) = record["by_source"].values()
    assert source == {"rows_read": 300 + len(where), "skipped": len(where), "kinds": dict.fromkeys(where, 1)}
    assert "its bad rows skipped as read, counted at the end" in stdout  # the start line
    assert f"skipped {len(where)} bad rows (data.bad_rows=skip): 3 files under {corpus} 5 of 305" in stdout


@pytest.mark.slow
def test_sigkill_then_resume_gives_the_same_weights_and_list(skipped_run, cache_dir, tmp_path):
    """Killed after step 10: its step-6 checkpoint lists some of the bad rows; resumed from it, the run reads again
    the rows read after it (more bad ones among them) and ends with the same weights, each row listed once."""
    out, corpus, where, _ = skipped_run
    args = skip_overrides(tmp_path, cache_dir, corpus, **{"train.callbacks": "[tests/kill_at_step.py:KillAtStep]"})
    killed = run_cli("train", *args, env={"PTRAIN_TEST_KILL_AT_STEP": "10"})
    assert killed.returncode == -9, killed.stderr[-3000:]
    (run_dir,) = (tmp_path / "runs" / "tiny").iterdir()
    saved = json.loads((run_dir / "checkpoints" / "step-00000006" / "skipped_rows_0.json").read_text())["skipped"]
    assert 0 < len(saved) < len(where)
    resumed = run_cli("train", *args, "train.resume=auto")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "step-00000006" in resumed.stdout and f"{len(saved)} bad rows skipped so far" in resumed.stdout
    assert_same_run(tmp_path, out)
    assert skipped_rows(tmp_path) == skipped_rows(out)
    (reference,) = (out / "runs" / "tiny").iterdir()
    metrics = [json.loads((d / "metrics.json").read_text())["skipped_rows"] for d in (run_dir, reference)]
    assert metrics[0] == metrics[1]


@pytest.mark.slow
def test_skip_stops_past_the_bad_row_fraction(tmp_path, cache_dir):
    """5 bad rows in 305 (1.6%) over the default 1%: stopped at the end of the first pass (under 1,000 rows read)."""
    bad_corpus(tmp_path)
    result = run_cli("train", *skip_overrides(tmp_path, cache_dir, tmp_path, **{"data.max_bad_row_fraction": "0.01"}))
    errors = [line for line in result.stderr.splitlines() if line.startswith("ptrain: error: ")]  # after the bar
    assert result.returncode == 2 and len(errors) == 1, result.stderr[-3000:]
    lines = errors
    assert f"3 files under {tmp_path}: 5 of the 305 rows process 0 has read are bad (1.6%" in lines[0]
    assert "data.max_bad_row_fraction=0.01" in lines[0] and "first: " in lines[0]


def test_every_process_ledger_is_listed_once_in_line_order():
    """Two processes' ledgers (one row read twice: a mixture source drawn past its end) folded into the run's."""
    a = {"source": "a.jsonl", "kind": "empty_text", "reason": "has an empty text", "stream": 0}
    rows = [{**a, "line": 9}, {**a, "line": 2}], [{**a, "line": 5}, {**a, "line": 9}]
    bad_rows, ledger = BadRows("skip"), StreamLedger(["the stream"])
    ledger.merge([{"read": [150], "skipped": rows[0]}, {"read": [155], "skipped": rows[1]}], bad_rows)
    assert [row["line"] for row in bad_rows.skipped] == [2, 5, 9]
    by_source = {"the stream": {"rows_read": 305, "skipped": 3, "kinds": {"empty_text": 3}}}
    assert bad_rows.record()["by_source"] == by_source
    assert "stream" not in bad_rows.skipped[0]


def test_skip_reads_json_lines_streams_only(tmp_path):
    with pytest.raises(ConfigError, match="reads JSON Lines files only, not data.hub_dataset"):
        load_config(
            CONFIGS / "tiny.yaml",
            [
                "data.streaming=true",
                "train.max_steps=2",
                "data.train_file=null",
                "data.hub_dataset=emotion",
                "data.bad_rows=skip",
            ],
        )
    import datasets

    datasets.Dataset.from_dict({"text": ["a", "b"], "label": ["joy", "joy"]}).to_parquet(str(tmp_path / "a.parquet"))
    cfg = load_config(
        CONFIGS / "tiny.yaml",
        ["data.streaming=true", "train.max_steps=2", f"data.train_file={tmp_path / 'a.parquet'}", "data.bad_rows=skip"],
    )
    with pytest.raises(DataError, match="convert it to JSON Lines"):
        open_train_stream(cfg, columns=get_task(cfg.task).columns(cfg))


@pytest.mark.parametrize("packs", [False, True], ids=["row for row", "packed"])
def test_the_encoder_sees_good_rows_only_and_bad_ones_keep_their_mark(packs):
    """A bad row in its place when the encoder makes a row of each, after the outputs when it packs rows."""

    def encode(batch: dict, indices: list[int]) -> dict:
        lengths = [len(text) for text in batch["text"]]
        return {"input_ids": [lengths] if packs else [[n] for n in lengths]}

    mark = {"source": "a.jsonl", "line": 2, "kind": "empty_text", "reason": "has an empty text"}
    encoder = SkippingEncoder(encode, {"text": ["ab"]})
    out = encoder({"text": ["ab", None, "abc"], BAD_ROW_COLUMN: [None, mark, None]}, [0, 1, 2])
    if packs:
        assert out == {"input_ids": [[2, 3], None], BAD_ROW_COLUMN: [None, mark]}
    else:
        assert out == {"input_ids": [[2], None, [3]], BAD_ROW_COLUMN: [None, mark, None]}


@pytest.mark.slow
def test_workers_hand_on_what_they_skipped(cache_dir, tmp_path):
    """data.num_workers=2: each worker drops and counts the bad rows of its shards; the batches bring them to the
    main process (30 steps: both workers end their first pass)."""
    where = bad_corpus(tmp_path / "corpus")
    result = run_cli("train", *skip_overrides(tmp_path, cache_dir, tmp_path / "corpus", **{"data.num_workers": "2"}))
    assert result.returncode == 0, result.stderr[-3000:]
    assert {row["kind"]: (row["source"], row["line"]) for row in skipped_rows(tmp_path)} == where
    (run_dir,) = (tmp_path / "runs" / "tiny").iterdir()
    (source,) = json.loads((run_dir / "metrics.json").read_text())["skipped_rows"]["by_source"].values()
    assert source["rows_read"] == 300 + len(where) and source["skipped"] == len(where)


@pytest.mark.slow
def test_a_streamed_mixture_lists_each_source_skips_once(cache_dir, tmp_path):
    """all_exhausted draws the smaller source past its end within the first pass: its bad row is read twice, listed
    once; each source counted apart."""
    sources = write_streamed_sources(tmp_path / "sources")
    for name, line in (("web-1.jsonl", 5), ("code-0.jsonl", 3)):
        file = tmp_path / "sources" / name
        lines = file.read_text().splitlines()
        lines.insert(line - 1, json.dumps({"text": "", "label": "joy"}))
        file.write_text("\n".join(lines) + "\n")
    values = {**STREAMED, "train.callbacks": "[]", "data.mixture": sources, "data.bad_rows": "skip"}
    values["data.max_bad_row_fraction"] = "0.05"  # code: its bad line read twice in 133 reads
    result = run_cli("train", str(CONFIGS / "tiny.yaml"), *tiny_overrides(tmp_path, cache_dir, **values))
    assert result.returncode == 0, result.stderr[-3000:]
    listed = [(Path(row["source"]).name, row["line"], row["kind"]) for row in skipped_rows(tmp_path)]
    assert listed == [("web-1.jsonl", 5, "empty_text"), ("code-0.jsonl", 3, "empty_text")]  # by source
    (run_dir,) = (tmp_path / "runs" / "tiny").iterdir()
    by_source = json.loads((run_dir / "metrics.json").read_text())["skipped_rows"]["by_source"]
    assert [name.split(":")[0] for name in by_source] == ["web", "code"]
    assert all(source["skipped"] == 1 for source in by_source.values())
    assert list(by_source.values())[1]["rows_read"] > 121  # code's lines, some read twice


def test_only_columns_that_hold_text_must_be_strings(tmp_path):
    """A QA stream: its answers column holds objects (not a bad row); a number as a question is one."""
    row = {"question": "Who?", "context": "Ada wrote it.", "answers": {"text": ["Ada"], "answer_start": [0]}}
    lines = [row, {**row, "question": 7}]
    (tmp_path / "qa.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    key = "question_answering."
    columns = [(key + "question_column", "question"), (key + "context_column", "context")]
    columns.append((key + "answers_column", "answers"))
    rows = list(json_lines_stream([tmp_path / "qa.jsonl"], columns, "text", "skip"))
    assert rows[0][BAD_ROW_COLUMN] is None and rows[0]["answers"] == row["answers"]
    assert rows[1][BAD_ROW_COLUMN]["kind"] == "not_text" and rows[1][BAD_ROW_COLUMN]["line"] == 2


@pytest.mark.parametrize("workers", ["0", "2"])
def test_a_resumed_loader_hands_on_each_skipped_row_once(tmp_path, workers):
    """Batches 1-3, a save, a new loader restored from it, batches 4-14: the same batches and the same ledger as 14
    batches straight (with data.num_workers=2 torchdata replays from a snapshot: the replayed rows are not handed on
    again)."""
    bad_corpus(tmp_path)
    overrides = skip_overrides(tmp_path, tmp_path, tmp_path, **{"data.num_workers": workers})
    cfg = load_config(CONFIGS / "tiny.yaml", overrides[1:])

    def encode(batch: dict, indices: list[int]) -> dict:
        return {"input_ids": [[int(re.match(r"row (\d+)", t).group(1))] for t in batch["text"]], "idx": indices}

    def loader():
        opener = partial(open_train_stream, cfg, columns=COLUMNS)
        sample = {"text": ["row 0"], "label": ["joy"]}
        rows = lambda batch: {"rows": [row["input_ids"][0] for row in batch]}  # noqa: E731
        return train_stream(cfg, opener, encode, sample, rows, torch.device("cpu"), 0, 1)

    straight = loader()
    expected = [batch["rows"] for batch in itertools.islice(straight.batches(), 14)]
    first = loader()
    taken = [batch["rows"] for batch in itertools.islice(first.batches(), 3)]
    first.save(tmp_path, 0)
    second = loader()
    second.load(tmp_path, 0)
    assert taken + [batch["rows"] for batch in itertools.islice(second.batches(), 11)] == expected
    assert second.ledger.skipped == straight.ledger.skipped and second.ledger.read == straight.ledger.read
    assert 0 < len(first.ledger.skipped) < len(straight.ledger.skipped)  # some read after the save
