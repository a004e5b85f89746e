"""data.streaming: training from a sharded JSONL corpus read as it goes; each row to one process per epoch; a
killed streamed run resumed with train.resume=auto ends bitwise where the uninterrupted one ends (CPU)."""

from __future__ import annotations

import itertools
import json
import re
import shutil
from collections import Counter
from pathlib import Path

import datasets
import pytest
import torch

from ptrain.data.mixtures import SOURCE_COLUMN
from ptrain.data.stream_source import load_eval_splits, open_train_stream
from ptrain.data.streaming import EpochStream, ShuffleBuffer, train_stream
from ptrain.errors import ConfigError, DataError
from ptrain.tasks import get_task, load_config
from tests.conftest import CONFIGS, DATA_DIR, accelerate_launch, run_cli
from tests.test_resume import assert_same_run

SHARD_ROWS = (120, 100, 80)  # uneven shards: 300 rows, not a multiple of 2 processes' share of 3 shards


def write_corpus(folder: Path, shard_rows=SHARD_ROWS) -> list[Path]:
    """Emotion rows as JSONL shards, each text starting "row N" (N: the row's number in the corpus)."""
    lines = (DATA_DIR / "emotion" / "train.txt").read_text().splitlines()
    folder.mkdir(parents=True, exist_ok=True)
    files, row = [], 0
    for shard, count in enumerate(shard_rows):
        rows = []
        for _ in range(count):
            text, label = lines[row].rsplit(";", 1)
            rows.append(json.dumps({"text": f"row {row} {text}", "label": label}))
            row += 1
        files.append(folder / f"part-{shard:02d}.jsonl")
        files[-1].write_text("\n".join(rows) + "\n")
    return files


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("corpus")
    write_corpus(folder)
    return folder


def stream_overrides(out: Path, cache: Path, corpus: Path, **extra: str) -> list[str]:
    """configs/tiny.yaml (emotion, labels named in the config) streaming the corpus: 300 rows of batch 16 make 19
    batches an epoch; 30 steps cross into the second epoch."""
    values = {
        "output_dir": str(out / "runs"),
        "data.cache_dir": str(cache),
        "data.train_file": str(corpus / "part-*.jsonl"),
        "data.streaming": "true",
        "data.max_train_rows": "null",  # tiny.yaml's 2,000 would take() the stream, which keeps the shard order
        "data.shuffle_buffer_size": "50",
        "data.max_eval_rows": "50",
        "train.max_steps": "30",
        "train.per_device_batch_size": "16",
        "train.log_every_steps": "1",
        "train.eval_every_steps": "15",
        "train.checkpoint_every_steps": "6",
        **extra,
    }
    return [str(CONFIGS / "tiny.yaml"), *[f"{k}={v}" for k, v in values.items()]]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, cache_dir, corpus) -> Path:
    out = tmp_path_factory.mktemp("streamed")
    result = run_cli("train", *stream_overrides(out, cache_dir, corpus))
    assert result.returncode == 0, result.stderr[-3000:]
    return out


@pytest.mark.slow
@pytest.mark.end_to_end
def test_a_streamed_run_trains_for_max_steps_and_checkpoints_the_stream(uninterrupted):
    (run_dir,) = (uninterrupted / "runs" / "tiny").iterdir()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["train"]["optimizer_steps"] == 30
    log = (run_dir / "config.yaml").read_text()
    assert "streaming: true" in log
    for checkpoint in (run_dir / "checkpoints").iterdir():
        state = json.loads((checkpoint / "stream_state_0.json").read_text())["dataset_state"]
        assert len(state["buffer"]) <= 50 and state["epoch"] in (0, 1)
    assert (run_dir / "final" / "model.safetensors").is_file()


@pytest.mark.slow
@pytest.mark.end_to_end
def test_sigkill_while_streaming_then_resume_gives_identical_weights(uninterrupted, cache_dir, corpus, tmp_path):
    """Killed after step 20 (of 30): resumed from step 18's checkpoint, where the first epoch's stream is read and
    its buffer drains, then on into the second epoch."""
    args = stream_overrides(tmp_path, cache_dir, corpus, **{"train.callbacks": "[tests/kill_at_step.py:KillAtStep]"})
    killed = run_cli("train", *args, env={"PTRAIN_TEST_KILL_AT_STEP": "20"})
    assert killed.returncode == -9, killed.stderr[-3000:]
    resumed = run_cli("train", *args, "train.resume=auto")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout and "step-00000018" in resumed.stdout
    assert "the training stream continues" in resumed.stdout
    assert_same_run(tmp_path, uninterrupted)


def epoch_rows(files: list[Path], rank: int, world: int) -> list[int]:
    """One epoch of process `rank`'s part of the files, through the shuffle buffer, as row numbers."""
    stream = datasets.load_dataset("json", data_files=[str(f) for f in files], split="train", streaming=True)

    def encode(batch: dict, indices: list[int]) -> dict:
        return {"input_ids": [[int(re.match(r"row (\d+)", t).group(1))] for t in batch["text"]], "idx": indices}

    sample = {"text": ["row 0"], "label": ["joy"]}
    rows = ShuffleBuffer(EpochStream(lambda epoch: stream, encode, sample, rank, world), 16, 0, rank)
    return [row["input_ids"][0] for row in rows.epoch_rows()]


@pytest.mark.parametrize("shards", [(120, 100, 80), (120, 100, 80, 50)], ids=["3 shards", "4 shards"])
def test_each_row_goes_to_one_process_per_epoch(tmp_path, shards):
    """3 shards on 2 processes: every other row of each shard; 4: two whole shards each (uneven counts)."""
    files = write_corpus(tmp_path, shards)
    parts = [epoch_rows(files, rank, 2) for rank in range(2)]
    assert Counter(parts[0] + parts[1]) == Counter(range(sum(shards)))
    assert parts[0] != sorted(parts[0])  # shuffled by the buffer


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_processes_read_disjoint_parts_that_cover_the_corpus(tmp_path, cache_dir, corpus):
    cpu_config = ["--config_file", str(CONFIGS / "accelerate" / "cpu_2proc.yaml")]
    args = stream_overrides(tmp_path, cache_dir, corpus)
    result = accelerate_launch(cpu_config, "tests.stream_probe", *args)
    assert result.returncode == 0, result.stderr[-3000:]
    parts = dict(re.findall(r"process (\d) rows (\[.*\])", result.stdout))
    rows = [json.loads(parts["0"]), json.loads(parts["1"])]
    assert Counter(rows[0] + rows[1]) == Counter(range(sum(SHARD_ROWS)))
    assert abs(len(rows[0]) - len(rows[1])) <= len(SHARD_ROWS)


def train_packed_masked_lm_stream(tmp_path: Path, cache_dir: Path, **settings: str):
    """configs/tiny_masked_lm.yaml streaming two JSONL shards of tiny-shakespeare paragraphs, packed into blocks of
    64 tokens, with `settings`; (the CLI's result, the run folder)."""
    paragraphs = [p for p in (DATA_DIR / "tiny_shakespeare" / "input.txt").read_text().split("\n\n") if p.strip()]
    for name, part in {
        "part-0": paragraphs[:60],
        "part-1": paragraphs[60:120],
        "validation": paragraphs[120:150],
    }.items():
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps({"text": text}) + "\n" for text in part))
    values = {
        "output_dir": tmp_path / "runs",
        "data.cache_dir": cache_dir,
        "data.train_file": tmp_path / "part-*.jsonl",
        "data.validation_file": tmp_path / "validation.jsonl",
        "data.format": "auto",
        "data.streaming": "true",
        "masked_lm.packing": "true",
        **settings,
    }
    result = run_cli("train", str(CONFIGS / "tiny_masked_lm.yaml"), *[f"{k}={v}" for k, v in values.items()])
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (tmp_path / "runs" / "tiny_masked_lm").iterdir()
    return result, run_dir


@pytest.mark.slow
@pytest.mark.end_to_end
def test_packed_masked_lm_streams_for_max_tokens(tmp_path, cache_dir):
    """Packed blocks of 64 tokens, batch 8: 512 tokens a step, so train.max_tokens=5000 is 10 steps."""
    result, run_dir = train_packed_masked_lm_stream(tmp_path, cache_dir, **{"train.max_tokens": "5000"})
    assert "10 optimizer steps in total (train.max_tokens 5,000 at 512 per step" in result.stdout
    assert json.loads((run_dir / "metrics.json").read_text())["train"]["optimizer_steps"] == 10


@pytest.mark.parametrize("taken", [5, 11], ids=["before the first snapshot", "inside a shard"])
def test_a_loader_with_workers_resumes_at_the_next_batch(tmp_path, taken):
    """data.num_workers=2: each worker's buffer and position are in the loader's state (torchdata), snapshotted
    every 6 batches: after 11 batches the state is the snapshot at batch 6, inside each worker's second shard."""
    files = write_corpus(tmp_path, (40, 40, 40, 40))
    cfg = load_config(
        CONFIGS / "tiny.yaml", stream_overrides(tmp_path, tmp_path, tmp_path, **{"data.num_workers": "2"})[1:]
    )
    stream = datasets.load_dataset("json", data_files=[str(f) for f in files], split="train", streaming=True)

    def encode(batch: dict, indices: list[int]) -> dict:
        return {"input_ids": [[int(re.match(r"row (\d+)", t).group(1))] for t in batch["text"]], "idx": indices}

    def loader():
        sample = {"text": ["row 0"], "label": ["joy"]}
        rows = lambda batch: [row["input_ids"][0] for row in batch]  # noqa: E731
        return train_stream(cfg, lambda epoch: stream, encode, sample, rows, torch.device("cpu"), 0, 1)

    expected = list(itertools.islice(loader().batches(), taken + 9))
    first = loader()
    before = list(itertools.islice(first.batches(), taken))
    first.save(tmp_path, 0)
    second = loader()
    second.load(tmp_path, 0)
    assert before + list(itertools.islice(second.batches(), 9)) == expected


def test_a_streamed_mixture_with_workers_resumes_at_the_next_batch(tmp_path):
    """data.num_workers=2 with a 70/30 streamed mixture of two sources of 4 shards: each worker mixes its own shards
    of both, and the loader's state (each worker's draws, positions and buffer) resumes at the next batch; a source
    with fewer shards than workers is refused in one line."""
    first, second = write_corpus(tmp_path / "first", (30,) * 4), write_corpus(tmp_path / "second", (30,) * 4)
    sources = {"first": 7, "second": 3}
    mixture = "{" + ", ".join(f"{n}: {{file: {tmp_path}/{n}/*.jsonl, weight: {w}}}" for n, w in sources.items()) + "}"
    overrides = stream_overrides(tmp_path, tmp_path, tmp_path, **{"data.num_workers": "2"})[1:]
    cfg = load_config(CONFIGS / "tiny.yaml", [*overrides, "data.train_file=null", f"data.mixture={mixture}"])

    def encode(batch: dict, indices: list[int]) -> dict:
        return {"input_ids": [[int(re.match(r"row (\d+)", t).group(1))] for t in batch["text"]], "idx": indices}

    def loader(second_files: list[Path]):
        openers = {
            name: lambda epoch, files=files: datasets.load_dataset(
                "json", data_files=[str(f) for f in files], split="train", streaming=True
            )
            for name, files in {"first": first, "second": second_files}.items()
        }
        sample = {"text": ["row 0"], "label": ["joy"]}
        rows = lambda batch: [(row["input_ids"][0], row[SOURCE_COLUMN]) for row in batch]  # noqa: E731
        return train_stream(
            cfg,
            openers,
            {"first": encode, "second": encode},
            {"first": sample, "second": sample},
            rows,
            torch.device("cpu"),
            0,
            1,
        )

    expected = list(itertools.islice(loader(second).batches(), 14))
    drawn = Counter(source for batch in expected for _, source in batch)
    assert drawn[1] > 0 and 0.55 < drawn[0] / sum(drawn.values()) < 0.85  # 70/30 (224 draws)
    before = loader(second)
    taken = list(itertools.islice(before.batches(), 5))
    before.save(tmp_path, 0)
    after = loader(second)
    after.load(tmp_path, 0)
    assert taken + list(itertools.islice(after.batches(), 9)) == expected
    with pytest.raises(DataError, match=r"data.mixture.second: .* has 1 shard\(s\) for data.num_workers=2"):
        loader(second[:1])


def test_a_process_without_rows_stops_in_one_line(tmp_path):
    files = write_corpus(tmp_path, (1,))
    stream = datasets.load_dataset("json", data_files=[str(f) for f in files], split="train", streaming=True)
    encode = lambda batch, indices: {"input_ids": [[1]] * len(indices), "idx": indices}  # noqa: E731
    rows = ShuffleBuffer(EpochStream(lambda epoch: stream, encode, {"text": ["row 0"]}, 1, 2), 16, 0, 1)
    with pytest.raises(DataError, match="process 1's part of the stream has no rows"):
        next(iter(rows))


def test_a_save_to_disk_folder_streams_as_shards(tmp_path):
    datasets.Dataset.from_dict({"text": [f"row {i}" for i in range(50)]}).save_to_disk(str(tmp_path / "saved"))
    cfg = load_config(
        CONFIGS / "tiny.yaml",
        ["data.streaming=true", "train.max_steps=2", f"data.train_file={tmp_path / 'saved'}", "data.stream_shards=4"],
    )
    stream = open_train_stream(cfg)
    assert stream.n_shards == 4 and [row["text"] for row in stream] == [f"row {i}" for i in range(50)]


def row_numbers(stream) -> list[int]:
    return [int(re.match(r"row (\d+)", row["text"]).group(1)) for row in stream]


def test_each_epoch_reads_the_files_and_saved_shards_in_its_own_seeded_order(tmp_path):
    """Files (and a save_to_disk folder's shards) in an order drawn from (train.seed, epoch): the same for every
    process and every resume of that epoch, another for the next epoch; each row once an epoch; None: file order."""
    files = write_corpus(tmp_path / "shards", (5, 5, 5, 5, 5, 5))
    datasets.Dataset.from_dict({"text": [f"row {i}" for i in range(30)]}).save_to_disk(str(tmp_path / "saved"))
    for source in [str(tmp_path / "shards" / "part-*.jsonl"), str(tmp_path / "saved")]:
        overrides = ["data.streaming=true", "train.max_steps=2", "data.max_train_rows=null", "data.stream_shards=6"]
        cfg = load_config(CONFIGS / "tiny.yaml", [*overrides, f"data.train_file={source}"])
        order = {epoch: row_numbers(open_train_stream(cfg, epoch)) for epoch in (None, 0, 1)}
        assert order[None] == list(range(30)) and sorted(order[0]) == sorted(order[1]) == list(range(30))
        first_rows = {epoch: rows[::5] for epoch, rows in order.items()}  # each shard's first row: the shard order
        assert first_rows[0] != first_rows[1] and first_rows[0] != first_rows[None]
        assert order[0] == [row for start in first_rows[0] for row in range(start, start + 5)]  # whole shards
        assert row_numbers(open_train_stream(cfg, 1)) == order[1]  # seeded
    assert len(files) == 6


@pytest.mark.slow
def test_a_dataset_folder_given_as_hub_dataset_streams_its_train_split(tmp_path):
    """data.hub_dataset read as the Hub reads it (a local folder here: offline): train streamed, validation whole."""
    for split, count in {"train": 30, "validation": 10}.items():
        rows = [json.dumps({"text": f"row {i}", "label": "joy"}) for i in range(count)]
        (tmp_path / f"{split}.jsonl").write_text("\n".join(rows) + "\n")
    cfg = load_config(
        CONFIGS / "tiny.yaml",
        ["data.streaming=true", "train.max_steps=2", "data.train_file=null", f"data.hub_dataset={tmp_path}"],
    )
    assert isinstance(open_train_stream(cfg), datasets.IterableDataset)
    assert len(list(open_train_stream(cfg))) == 30
    raw, _ = load_eval_splits(cfg, get_task(cfg.task))
    assert list(raw) == ["validation"] and len(raw["validation"]) == 10


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_processes_stream_and_resume_exactly(tmp_path, cache_dir, corpus):
    """2 processes, each one row in 2 of every shard (uneven parts: neither waits for the other's epoch end); the
    run resumed from its step-6 checkpoint in a copy of its folder ends with the same weights."""
    cpu_config = ["--config_file", str(CONFIGS / "accelerate" / "cpu_2proc.yaml")]
    steps = {"train.max_steps": "12", "train.eval_every_steps": "12", "train.checkpoint_every_steps": "6"}
    first = stream_overrides(tmp_path / "a", cache_dir, corpus, **steps)
    result = accelerate_launch(cpu_config, "ptrain", "train", *first)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "this process reads one row in 2 of each shard" in result.stdout
    (run_dir,) = (tmp_path / "a" / "runs" / "tiny").iterdir()
    for checkpoint in (run_dir / "checkpoints").iterdir():
        states = [json.loads((checkpoint / f"stream_state_{rank}.json").read_text()) for rank in (0, 1)]
        assert states[0]["dataset_state"]["buffer"] != states[1]["dataset_state"]["buffer"]
    copy = tmp_path / "b" / "runs" / "tiny" / run_dir.name
    shutil.copytree(run_dir, copy)
    for later in ["final", "best", "metrics.json", "checkpoints/step-00000012"]:
        shutil.rmtree(copy / later) if (copy / later).is_dir() else (copy / later).unlink()
    args = [*stream_overrides(tmp_path / "b", cache_dir, corpus, **steps), f"train.resume={copy}"]
    resumed = accelerate_launch(cpu_config, "ptrain", "train", *args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "step-00000006" in resumed.stdout
    assert_same_run(tmp_path / "b", tmp_path / "a")


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["data.streaming=true"], "set train.max_steps"),
        (["data.streaming=true", "train.max_steps=5", "train.max_tokens=5"], "not both"),
        (["data.streaming=true", "train.max_tokens=5000"], "needs rows of a fixed number of tokens"),
        (["train.max_tokens=5000"], "set data.streaming=true"),
        (["data.train_file=[a.jsonl, b.jsonl]"], "set data.streaming=true"),
        (["data.streaming=true", "train.max_steps=5", "data.validation_file=null"], "set data.validation_file"),
        (["data.streaming=true", "train.max_steps=5", "train.class_weights=balanced"], "give the weights"),
        (["data.streaming=true", "train.max_steps=5", "data.train_file=nowhere/*.jsonl"], "matches no file"),
    ],
)
def test_what_a_stream_cannot_do_is_refused_in_one_line(overrides, message):
    with pytest.raises(ConfigError) as info:
        load_config(CONFIGS / "tiny.yaml", overrides)
    assert message in str(info.value) and "\n" not in str(info.value)
