"""data.mixture: the realized shares of a seeded mixture within a binomial tolerance of the weights, the same for a
seed; each source's trained tokens in TensorBoard and metrics.json (exact where rows are packed blocks); a killed run
resumes to the same weights and counts; streams mix and resume with the same function; one-line config errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from datasets import Dataset

from ptrain.data.mixtures import SOURCE_COLUMN, mix_sources
from tests.conftest import CONFIGS, DATA_DIR, accelerate_launch, run_cli, scalar_values, tiny_overrides
from tests.test_resume import assert_same_run


def within_binomial(count: int, total: int, weight: float, sigmas: float = 4.0) -> bool:
    """A share of `total` independent draws lies within `sigmas` binomial standard deviations of `weight` (4 sigma:
    a seeded test fails by chance for about 1 seed in 16,000)."""
    return abs(count / total - weight) <= sigmas * math.sqrt(weight * (1 - weight) / total)


def rows(count: int, start: int = 0) -> Dataset:
    return Dataset.from_dict({"input_ids": [[i] for i in range(start, start + count)]})


@pytest.mark.parametrize("strategy", ["first_exhausted", "all_exhausted"])
def test_a_70_30_mixture_draws_each_source_within_tolerance_and_the_same_for_a_seed(strategy):
    sources = {"web": rows(7_000), "code": rows(3_000, start=10_000)}
    mixed = mix_sources(sources, [7, 3], seed=5, stopping_strategy=strategy)
    drawn = np.bincount(mixed[SOURCE_COLUMN], minlength=2)
    assert within_binomial(int(drawn[0]), len(mixed), 0.7)
    first = np.array(mixed["input_ids"])[:, 0]
    assert ((first >= 10_000) == (np.array(mixed[SOURCE_COLUMN]) == 1)).all()  # each row tagged with its source
    if strategy == "all_exhausted":  # every row of every source is in the epoch
        assert set(range(7_000)) <= set(first) and set(range(10_000, 13_000)) <= set(first)
    else:  # no row twice
        assert len(set(first)) == len(first)
    assert mixed["input_ids"] == mix_sources(sources, [7, 3], seed=5, stopping_strategy=strategy)["input_ids"]
    assert mixed["input_ids"] != mix_sources(sources, [7, 3], seed=6, stopping_strategy=strategy)["input_ids"]


def streamed(row):
    return (row[SOURCE_COLUMN], row["input_ids"][0])


@pytest.mark.parametrize("encoded", [False, True])
@pytest.mark.parametrize(("strategy", "stops"), [("first_exhausted", (1, 101, 400)), ("all_exhausted", (57, 800))])
def test_streams_mix_with_the_same_function_and_resume_at_the_next_row(strategy, stops, encoded):
    def mixture():  # as a process opens it: new streams, not yet read
        sources = {"web": rows(700).to_iterable_dataset(num_shards=2), "code": rows(300, 1_000).to_iterable_dataset()}
        if encoded:  # tokenized as they are read, as data.streaming does (a batched map)
            sources = {
                name: ds.map(lambda batch: {"input_ids": batch["input_ids"]}, batched=True, batch_size=16)
                for name, ds in sources.items()
            }
        return mix_sources(sources, [0.7, 0.3], seed=3, stopping_strategy=strategy)

    stream = mixture()
    whole = [streamed(row) for row in stream]
    assert within_binomial(sum(source == 0 for source, _ in whole), len(whole), 0.7)
    if strategy == "all_exhausted":
        assert {x for _, x in whole} == set(range(700)) | set(range(1_000, 1_300))
    read = []
    for stop in stops:  # read to `stop`, keep the state as a checkpoint does, resume from it (again and again)
        reading = iter(stream)
        read += [streamed(next(reading)) for _ in range(stop - len(read))]
        state = json.loads(json.dumps(stream.state_dict()))  # what a checkpoint keeps of it
        stream = mixture()
        stream.load_state_dict(state)
    assert read + [streamed(row) for row in stream] == whole
    stream.set_epoch(1)
    assert [streamed(row) for row in stream] != whole  # another epoch draws again


def write_sources(folder: Path) -> tuple[Path, Path]:
    """Two emotion sources of 200 and 100 rows (different parts of the training file)."""
    lines = (DATA_DIR / "emotion" / "train.txt").read_text().splitlines(keepends=True)
    folder.mkdir(parents=True, exist_ok=True)
    first, second = folder / "first.txt", folder / "second.txt"
    first.write_text("".join(lines[:200]))
    second.write_text("".join(lines[2000:2100]))
    return first, second


def mixture(first: Path, second: Path, weights=(7, 3)) -> str:
    return f"{{first: {{file: {first}, weight: {weights[0]}}}, second: {{file: {second}, weight: {weights[1]}}}}}"


def train_mixture(out: Path, cache: Path, env: dict | None = None, *extra: str, **settings: str):
    first, second = write_sources(out.parent)
    values = {"data.train_file": "null", "data.mixture": mixture(first, second), "data.max_eval_rows": "64"}
    args = tiny_overrides(out, cache, rows=200, **values, **settings)
    return run_cli("train", str(CONFIGS / "tiny.yaml"), *args, *extra, env=env)


def run_folder(out: Path) -> Path:
    (folder,) = (out / "runs" / "tiny").iterdir()
    return folder


@pytest.mark.slow
def test_a_mixture_run_logs_each_sources_share_of_the_trained_tokens(cache_dir, tmp_path):
    result = train_mixture(tmp_path / "out", cache_dir, None, **{"train.epochs": "1", "train.log_every_steps": "2"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ptrain: mixture of 2 sources" in result.stdout
    record = json.loads((run_folder(tmp_path / "out") / "metrics.json").read_text())["mixture"]
    first, second = record["sources"]["first"], record["sources"]["second"]
    assert (first["weight"], second["weight"]) == (0.7, 0.3)
    assert (first["rows"], second["rows"]) == (200, 100)
    epoch_rows = first["epoch_rows"] + second["epoch_rows"]
    assert within_binomial(first["epoch_rows"], epoch_rows, 0.7)
    assert first["epoch_rows"] >= 200 and second["epoch_rows"] >= 100  # all_exhausted: every row in the epoch
    assert f"rows train {epoch_rows}," in result.stdout
    folder = run_folder(tmp_path / "out")
    shares = [scalar_values(folder, f"train/source_share/{name}") for name in ("first", "second")]
    assert len(shares[0]) == 5 and all(a + b == pytest.approx(1) for a, b in zip(*shares))
    tokens = [scalar_values(folder, f"train/source_tokens/{name}")[-1] for name in ("first", "second")]
    assert tokens == [first["trained_tokens"], second["trained_tokens"]]  # the last step was logged
    assert first["trained_token_share"] == pytest.approx(tokens[0] / sum(tokens))


@pytest.mark.slow
def test_packed_sources_give_exactly_their_blocks_tokens(cache_dir, tmp_path):
    paragraphs = (DATA_DIR / "tiny_shakespeare" / "input.txt").read_text().split("\n\n")
    first, second = tmp_path / "first.txt", tmp_path / "second.txt"
    first.write_text("\n\n".join(paragraphs[:150]))
    second.write_text("\n\n".join(paragraphs[3000:3150]))
    values = {"data.train_file": "null", "data.mixture": mixture(first, second), "train.epochs": "2"}
    args = tiny_overrides(tmp_path, cache_dir, rows=200, **values, **{"data.max_eval_rows": "20"})
    result = run_cli("train", str(CONFIGS / "tiny_causal_lm.yaml"), *args)
    assert result.returncode == 0, result.stderr[-3000:]
    (folder,) = (tmp_path / "runs" / "tiny_causal_lm").iterdir()
    record = json.loads((folder / "metrics.json").read_text())["mixture"]["sources"]
    for source in record.values():  # blocks of 64 tokens, each epoch's rows twice
        assert source["trained_tokens"] == source["epoch_rows"] * 64 * 2
        assert source["epoch_rows"] >= source["rows"]


RESUME = {
    "train.epochs": "2",
    "train.checkpoint_every_steps": "4",
    "train.log_every_steps": "1",
    "train.eval_every_steps": "100",
    "train.callbacks": "[tests/kill_at_step.py:KillAtStep]",
}


@pytest.mark.slow
def test_a_killed_mixture_run_resumes_to_the_same_weights_and_source_counts(cache_dir, tmp_path):
    reference = train_mixture(tmp_path / "uninterrupted" / "out", cache_dir, None, **RESUME)
    assert reference.returncode == 0, reference.stderr[-3000:]
    resumed_out = tmp_path / "resumed" / "out"
    killed = train_mixture(resumed_out, cache_dir, {"PTRAIN_TEST_KILL_AT_STEP": "6"}, **RESUME)
    assert killed.returncode == -9, killed.stderr[-3000:]
    resumed = train_mixture(resumed_out, cache_dir, None, "train.resume=auto", **RESUME)
    assert resumed.returncode == 0 and "ptrain: resumed from" in resumed.stdout, resumed.stderr[-3000:]
    assert_same_run(resumed_out, tmp_path / "uninterrupted" / "out")
    folders = [run_folder(tmp_path / "uninterrupted" / "out"), run_folder(resumed_out)]
    records = [json.loads((folder / "metrics.json").read_text())["mixture"] for folder in folders]
    assert records[0] == records[1]
    for name in ("first", "second"):
        reference_shares, resumed_shares = (scalar_values(f, f"train/source_share/{name}") for f in folders)
        assert resumed_shares == reference_shares


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.mixture.first.weight=0", "'data.mixture.first.weight' input should be greater than 0"),
        (
            "data.mixture.first.wieght=2",
            "unknown key 'data.mixture.first.wieght' (did you mean 'data.mixture.first.weight'",
        ),
        ("data.mixture.second.weight=-1", "'data.mixture.second.weight' input should be greater than 0"),
        ("data.train_file=emotion/train.txt", "data.mixture names the training rows and data.train_file does too"),
        ("data.hub_dataset=emotion", "data.mixture names the training rows and data.hub_dataset does too"),
        ("data.streaming=true|data.validation_file=null", "a streamed data.mixture holds out no validation rows"),
        ("data.mixture.second.file=/no/such.txt", "data.mixture.second.file /no/such.txt does not exist"),
        ("data.mixture={one: {file: x.txt, weight: 1}}", "data.mixture has one source; give at least two"),
        ("data.mixture={a.b: {file: x.txt, weight: 1}, c: {file: y.txt, weight: 1}}", "source name 'a.b'"),
    ],
)
def test_mixture_config_errors_are_one_line(tmp_path, override, message):
    first, second = write_sources(tmp_path)
    stream = ["data.max_train_rows=null", "train.max_steps=4"] if "streaming" in override else []
    args = [
        "data.train_file=null",
        f"data.mixture={mixture(first, second)}",
        *stream,
        *override.split("|"),
    ]  # | joins two overrides
    result = run_cli("check", str(CONFIGS / "tiny.yaml"), *args)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr[-2000:]


def test_sources_whose_columns_differ_in_type_are_refused_in_one_line(cache_dir, tmp_path):
    first, _ = write_sources(tmp_path)
    numbers = tmp_path / "numbers.jsonl"
    numbers.write_text("".join(json.dumps({"text": f"row {i}", "label": i % 6}) + "\n" for i in range(50)))
    args = tiny_overrides(tmp_path, cache_dir, **{"data.train_file": "null"})
    source = f"{{first: {{file: {first}, weight: 1}}, numbers: {{file: {numbers}, weight: 1, format: jsonl}}}}"
    result = run_cli("train", str(CONFIGS / "tiny.yaml"), *args, f"data.mixture={source}")
    assert result.returncode != 0
    assert "ptrain: error: data.mixture: column 'label' of source 'numbers' holds" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_processes_count_every_sources_tokens_once_and_resume_the_counts(cache_dir, tmp_path):
    settings = {**RESUME, "train.log_every_steps": "3"}  # logs and checkpoints (every 4 steps) apart
    single = train_mixture(tmp_path / "single" / "out", cache_dir, None, **settings)
    assert single.returncode == 0, single.stderr[-3000:]
    first, second = write_sources(tmp_path / "two")
    values = {"data.train_file": "null", "data.mixture": mixture(first, second), "data.max_eval_rows": "64"}

    def launch(out: Path, env: dict | None = None, *extra: str):
        args = tiny_overrides(out, cache_dir, rows=200, **values, **settings)
        launch_args = ["--multi_gpu", "--num_processes", "2"]
        return accelerate_launch(launch_args, "ptrain", "train", str(CONFIGS / "tiny.yaml"), *args, *extra, env=env)

    uninterrupted = launch(tmp_path / "two" / "out")
    assert uninterrupted.returncode == 0, uninterrupted.stderr[-4000:]
    assert "ptrain: 2 process(es) on cpu" in uninterrupted.stdout
    killed = launch(tmp_path / "two" / "killed", {"PTRAIN_TEST_KILL_AT_STEP": "7"})  # 5 steps an epoch: in the 2nd
    assert killed.returncode != 0
    resumed = launch(tmp_path / "two" / "killed", None, "train.resume=auto")
    assert resumed.returncode == 0 and "ptrain: resumed from" in resumed.stdout, resumed.stderr[-4000:]
    outs = (tmp_path / "single" / "out", tmp_path / "two" / "out", tmp_path / "two" / "killed")
    records = [json.loads((run_folder(out) / "metrics.json").read_text())["mixture"]["sources"] for out in outs]
    assert records[2] == records[1]  # the counts of a killed two-process run resume exactly
    # Each process trains every other batch of an epoch, and Accelerate completes a last short batch with the
    # epoch's first rows (even_batches), which are trained, so counted: at most one batch of 32 rows of 64 tokens
    # more an epoch than one process trains.
    extra = [records[1][name]["trained_tokens"] - records[0][name]["trained_tokens"] for name in ("first", "second")]
    assert all(count >= 0 for count in extra) and sum(extra) <= 2 * 32 * 64


def write_streamed_sources(folder: Path) -> str:
    """Two JSONL sources of emotion rows, `web` in two shards of 120 and `code` in one of 120, as a data.mixture."""
    lines = (DATA_DIR / "emotion" / "train.txt").read_text().splitlines()
    folder.mkdir(parents=True, exist_ok=True)
    for name, start, shards in (("web", 0, 2), ("code", 1_000, 1)):
        for shard in range(shards):
            rows = [line.rsplit(";", 1) for line in lines[start + 120 * shard : start + 120 * (shard + 1)]]
            text = "".join(json.dumps({"text": text, "label": label}) + "\n" for text, label in rows)
            (folder / f"{name}-{shard}.jsonl").write_text(text)
    return f"{{web: {{file: '{folder}/web-*.jsonl', weight: 7}}, code: {{file: {folder}/code-0.jsonl, weight: 3}}}}"


STREAMED = {
    "data.train_file": "null",
    "data.streaming": "true",
    "data.max_train_rows": "null",
    "data.shuffle_buffer_size": "50",
    "data.max_eval_rows": "50",
    "train.max_steps": "30",  # 480 rows: past the first epoch of the mixture (about 400 rows, all_exhausted)
    "train.per_device_batch_size": "16",
    "train.log_every_steps": "1",
    "train.eval_every_steps": "15",
    "train.checkpoint_every_steps": "6",
    "train.callbacks": "[tests/kill_at_step.py:KillAtStep]",
}


@pytest.mark.slow
def test_a_streamed_mixture_logs_its_shares_and_resumes_bitwise_after_sigkill(cache_dir, tmp_path):
    sources = write_streamed_sources(tmp_path / "sources")

    def train(out: Path, env: dict | None = None, *extra: str):
        args = tiny_overrides(out, cache_dir, **STREAMED, **{"data.mixture": sources})
        return run_cli("train", str(CONFIGS / "tiny.yaml"), *args, *extra, env=env)

    reference = train(tmp_path / "uninterrupted")
    assert reference.returncode == 0, reference.stderr[-3000:]
    assert "ptrain: mixture of 2 streams drawn as read (all_exhausted, seed 0): web 70%, code 30%" in reference.stdout
    killed = train(tmp_path / "resumed", {"PTRAIN_TEST_KILL_AT_STEP": "20"})
    assert killed.returncode == -9, killed.stderr[-3000:]
    resumed = train(tmp_path / "resumed", None, "train.resume=auto")
    assert resumed.returncode == 0 and "the training stream continues" in resumed.stdout, resumed.stderr[-3000:]
    assert_same_run(tmp_path / "resumed", tmp_path / "uninterrupted")
    folders = [run_folder(tmp_path / "uninterrupted"), run_folder(tmp_path / "resumed")]
    records = [json.loads((folder / "metrics.json").read_text())["mixture"]["sources"] for folder in folders]
    assert records[0] == records[1]
    tokens = [records[0][name]["trained_tokens"] for name in ("web", "code")]
    assert tokens[0] > tokens[1] > 0 and records[0]["web"]["trained_token_share"] == tokens[0] / sum(tokens)
    for name in ("web", "code"):
        assert scalar_values(folders[1], f"train/source_share/{name}") == scalar_values(
            folders[0], f"train/source_share/{name}"
        )
