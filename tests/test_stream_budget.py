"""data.max_tokens_per_batch with data.streaming: streamed batches within the budget that cover an epoch's rows once;
the row that overflowed a batch saved with the stream's state; one step over streamed budget batches equals one step
over the same rows in one batch; a killed streamed budget run resumes bitwise; packed blocks: a fixed number per
micro-batch, so train.max_tokens stays exact."""

from __future__ import annotations

import itertools
import json
import re
from collections import Counter
from pathlib import Path

import datasets
import pytest
import torch
from safetensors.torch import load_file

from ptrain.data.stream_budget import PENDING, StreamBudgetBatches, packed_rows_per_batch
from ptrain.data.streaming import EpochStream, ShuffleBuffer, train_stream
from ptrain.data.token_budget import padded_length
from ptrain.errors import CheckpointError, ConfigError, DataError
from ptrain.model.loading import load_tokenizer
from ptrain.tasks import get_task, load_config
from ptrain.training.streamed_data import open_streams
from tests.conftest import CONFIGS, run_cli, scalar_values, tiny_overrides
from tests.test_mixtures import STREAMED, write_streamed_sources
from tests.test_resume import assert_same_run
from tests.test_streaming import stream_overrides, train_packed_masked_lm_stream, write_corpus
from tests.test_token_budget import PLAIN_SGD

BUDGET = 120


def numbered_rows(files: list[Path], seed: int = 0) -> ShuffleBuffer:
    """The corpus through a shuffle buffer, each row's input_ids its row number repeated 1 + number % 23 times."""
    stream = datasets.load_dataset("json", data_files=[str(f) for f in files], split="train", streaming=True)

    def encode(batch: dict, indices: list[int]) -> dict:
        numbers = [int(re.match(r"row (\d+)", text).group(1)) for text in batch["text"]]
        return {"input_ids": [[n] * (1 + n % 23) for n in numbers], "idx": indices}

    sample = {"text": ["row 0"], "label": ["joy"]}
    return ShuffleBuffer(EpochStream(lambda epoch: stream, encode, sample, 0, 1), 16, seed, 0)


def numbers(batch: list[dict]) -> list[int]:
    return [row["input_ids"][0] for row in batch]


@pytest.mark.parametrize("multiple", [None, 8])
def test_streamed_batches_stay_within_the_budget_and_cover_an_epoch_once(tmp_path, multiple):
    files = write_corpus(tmp_path, (120, 100, 80))
    rows = numbered_rows(files)
    epoch = [row["input_ids"][0] for row in numbered_rows(files).epoch_rows()]
    batches = list(itertools.islice(StreamBudgetBatches(rows, BUDGET, multiple), 80))
    flat = [number for batch in batches for number in numbers(batch)]
    assert len(flat) > 300 and flat[:300] == epoch  # the stream's own order, cut: the epoch's rows once each
    assert Counter(flat[:300]) == Counter(range(300))
    for batch, after in itertools.pairwise(batches):
        padded = [padded_length(1 + n % 23, multiple) for n in numbers(batch)]
        assert len(batch) * max(padded) <= BUDGET
        longest = max(*padded, padded_length(1 + numbers(after)[0] % 23, multiple))
        assert (len(batch) + 1) * longest > BUDGET  # greedy: the next row did not fit


def test_the_state_keeps_the_row_that_overflowed_and_resumes_at_it(tmp_path):
    files = write_corpus(tmp_path, (120, 100, 80))
    expected = list(itertools.islice(StreamBudgetBatches(numbered_rows(files), BUDGET, None), 80))
    first = StreamBudgetBatches(numbered_rows(files), BUDGET, None)
    taken = list(itertools.islice(iter(first), 65))
    assert sum(len(batch) for batch in taken) > 300  # into the second epoch
    state = json.loads(json.dumps(first.state_dict()))  # as the checkpoint holds it
    assert numbers(state[PENDING]) == numbers(expected[65])[:1]  # read, in no batch yet: the next batch's first
    assert state["epoch"] == 1 and state["buffer"]
    second = StreamBudgetBatches(numbered_rows(files), BUDGET, None)
    second.load_state_dict(state)
    assert taken + list(itertools.islice(iter(second), 15)) == expected


def worker_batches(folder: Path, shard_rows: tuple[int, ...], workers: str = "2", budget: str = "64"):
    """A function giving a fresh training stream of the corpus with data.num_workers=2 and a budget of 64 tokens
    (torchdata snapshots the workers' states every 6 batches), its batches as row numbers."""
    files = write_corpus(folder, shard_rows)
    extra = {"data.num_workers": workers, "data.max_tokens_per_batch": budget}
    cfg = load_config(CONFIGS / "tiny.yaml", stream_overrides(folder, folder, folder, **extra)[1:])
    stream = datasets.load_dataset("json", data_files=[str(f) for f in files], split="train", streaming=True)

    def encode(batch: dict, indices: list[int]) -> dict:
        numbers = [int(re.match(r"row (\d+)", text).group(1)) for text in batch["text"]]
        return {"input_ids": [[n] * (1 + n % 23) for n in numbers], "idx": indices}

    sample = {"text": ["row 0"]}
    return lambda: train_stream(cfg, lambda epoch: stream, encode, sample, numbers, torch.device("cpu"), 0, 1)


def resumes_at_the_next_batch(loader, folder: Path, taken: int, after: int) -> None:
    expected = list(itertools.islice(loader().batches(), taken + after))
    assert all(len(batch) * max(1 + n % 23 for n in batch) <= 64 for batch in expected)
    assert len({len(batch) for batch in expected}) > 1  # rows vary with their lengths
    first = loader()
    before = list(itertools.islice(first.batches(), taken))
    first.save(folder, 0)
    second = loader()
    second.load(folder, 0)
    assert before + list(itertools.islice(second.batches(), after)) == expected


def test_a_loader_with_workers_resumes_budget_batches_at_the_next_batch(tmp_path):
    """data.num_workers=2: torchdata saves each worker's budget batches (buffer, pending row); shards of 10 rows,
    each worker's read whole into its buffer at its first batch, so the snapshot holds no position inside a shard."""
    resumes_at_the_next_batch(worker_batches(tmp_path, (10, 10, 10, 10)), tmp_path, 11, 19)


def test_a_loader_with_workers_resumes_inside_a_shard(tmp_path):
    """Shards of 40 rows: the snapshot at batch 6 falls inside each worker's shard (datasets 5.2's own worker split
    failed to resume there with an IndexError; streaming.EpochStream reads a worker's shards itself)."""
    resumes_at_the_next_batch(worker_batches(tmp_path, (40, 40, 40, 40)), tmp_path, 11, 19)


SAME_ROWS = {  # one step of plain SGD over the stream's own order
    **PLAIN_SGD,
    "train.max_steps": "1",
    "train.eval_every_steps": "1",
    "train.checkpoint_every_steps": "null",
    "data.shuffle_buffer_size": "0",
}


def rows_in_budget_batches(args: list[str], count: int) -> int:
    """Rows in the first `count` budget batches of the stream a run with `args` reads (the task's real encoder)."""
    cfg = load_config(Path(args[0]), args[1:])
    task = get_task(cfg.task)
    configs, openers, heads = open_streams(cfg, task)
    encode = task.encoder(
        configs[None], load_tokenizer(cfg, task, heads[None]), cfg.data.label_names, heads[None], "train"
    )
    stream = train_stream(cfg, openers[None], encode, heads[None][:8], list, torch.device("cpu"), 0, 1)
    return sum(len(batch) for batch in itertools.islice(stream.loader, count))


@pytest.mark.slow
def test_one_step_over_streamed_budget_batches_equals_one_step_over_the_same_rows_in_one_batch(tmp_path, cache_dir):
    corpus = tmp_path / "corpus"
    write_corpus(corpus, (120,))
    budget = {**SAME_ROWS, "data.max_tokens_per_batch": "160", "train.gradient_accumulation_steps": "6"}
    budget_args = stream_overrides(tmp_path / "budget", cache_dir, corpus, **budget)
    rows = rows_in_budget_batches(budget_args, 6)
    assert 12 < rows < 120  # several rows a batch, within the first epoch
    fixed = {**SAME_ROWS, "train.per_device_batch_size": str(rows)}
    fixed_args = stream_overrides(tmp_path / "fixed", cache_dir, corpus, **fixed)
    budgeted, rowed = run_cli("train", *budget_args), run_cli("train", *fixed_args)
    for result in (budgeted, rowed):
        assert result.returncode == 0, result.stderr[-3000:]
        assert "ptrain: 1 optimizer steps in total (train.max_steps" in result.stdout
    assert (
        "per-device batch up to 160 padded tokens (rows vary: cut from the stream as read, not grouped by length) "
        "x accumulation 6 x 1 = a step of up to 960 padded tokens" in budgeted.stdout
    )
    (budget_dir,), (fixed_dir,) = ((tmp_path / name / "runs" / "tiny").iterdir() for name in ("budget", "fixed"))
    assert scalar_values(budget_dir, "train/loss") == pytest.approx(scalar_values(fixed_dir, "train/loss"), rel=1e-6)
    weights, expected = (load_file(run / "final" / "model.safetensors") for run in (budget_dir, fixed_dir))
    assert weights.keys() == expected.keys()
    for name, tensor in expected.items():
        torch.testing.assert_close(weights[name], tensor, rtol=1e-5, atol=1e-6)


RESUME = {"data.max_tokens_per_batch": "256", "train.gradient_accumulation_steps": "2"}


def budget_run_args(kind: str, folder: Path, cache: Path) -> list[str]:
    """A streamed budget run of 30 steps of 2 micro-batches, checkpointed every 6, killable (KillAtStep), into the
    stream's second epoch: on the test_streaming corpus (300 rows in 3 shards), or a streamed data.mixture of two
    sources (test_mixtures)."""
    kill = {**RESUME, "train.callbacks": "[tests/kill_at_step.py:KillAtStep]"}
    if kind == "corpus":
        write_corpus(folder / "corpus")
        return stream_overrides(folder / "runs", cache, folder / "corpus", **kill)
    # a mixture epoch holds about 400 rows: a larger budget reaches the second one
    mixture = {
        **STREAMED,
        **kill,
        "data.max_tokens_per_batch": "512",
        "data.mixture": write_streamed_sources(folder / "sources"),
    }
    return [str(CONFIGS / "tiny.yaml"), *tiny_overrides(folder / "runs", cache, **mixture)]


@pytest.mark.slow
@pytest.mark.end_to_end
@pytest.mark.parametrize("kind", ["corpus", "mixture"])
def test_sigkill_while_streaming_budget_batches_then_resume_gives_identical_weights(tmp_path, cache_dir, kind):
    """Killed after step 20 (of 30): resumed from step 18's checkpoint, with the row that overflowed its last batch
    restored, on into the stream's second epoch."""
    reference = run_cli("train", *budget_run_args(kind, tmp_path / "reference", cache_dir))
    assert reference.returncode == 0, reference.stderr[-3000:]
    (run_dir,) = (tmp_path / "reference" / "runs" / "runs" / "tiny").iterdir()
    state = json.loads((run_dir / "checkpoints" / "step-00000030" / "stream_state_0.json").read_text())
    assert state["dataset_state"]["epoch"] >= 1 and len(state["dataset_state"][PENDING]) == 1
    args = budget_run_args(kind, tmp_path / "resumed", cache_dir)
    killed = run_cli("train", *args, env={"PTRAIN_TEST_KILL_AT_STEP": "20"})
    assert killed.returncode == -9, killed.stderr[-3000:]
    resumed = run_cli("train", *args, "train.resume=auto")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "step-00000018" in resumed.stdout and "1 waiting for its budget batch, restored" in resumed.stdout
    assert_same_run(tmp_path / "resumed" / "runs", tmp_path / "reference" / "runs")


def test_a_streamed_row_over_the_budget_is_refused_in_one_line():
    rows = [{"input_ids": [1] * 10, "idx": 0}, {"input_ids": [1] * 17, "idx": 1}]
    with pytest.raises(DataError, match=r"max_tokens_per_batch=20 is below training row 1's 24 tokens \(padded"):
        list(StreamBudgetBatches(rows, 20, 8))


def test_packed_blocks_fill_a_budget_with_a_fixed_number_or_are_refused():
    assert packed_rows_per_batch(200, 64, None, "masked_lm.block_size") == 3
    blocks = [{"input_ids": [1] * 64, "idx": i} for i in range(20)]  # a finite stream: its last batch is short
    assert [len(batch) for batch in StreamBudgetBatches(blocks, 200, None)] == [3] * 6 + [2]
    assert packed_rows_per_batch(200, 60, 8, "masked_lm.block_size") == 3  # 60 padded to 64
    with pytest.raises(ConfigError, match=r"holds no packed block of masked_lm.block_size=130 tokens \(padded to 136"):
        packed_rows_per_batch(132, 130, 8, "masked_lm.block_size")


@pytest.mark.slow
@pytest.mark.end_to_end
def test_packed_masked_lm_streams_budget_batches_for_max_tokens(tmp_path, cache_dir):
    """Packed blocks of 64 tokens, a budget of 200: 3 blocks (192 tokens) a micro-batch, so train.max_tokens=3000 is
    16 steps (15.6 rounded up)."""
    result, run_dir = train_packed_masked_lm_stream(
        tmp_path, cache_dir, **{"data.max_tokens_per_batch": "200", "train.max_tokens": "3000"}
    )
    assert "per-device batch up to 200 padded tokens (3 packed blocks of 64 tokens)" in result.stdout
    assert "16 optimizer steps in total (train.max_tokens 3,000 at 192 per step" in result.stdout
    assert json.loads((run_dir / "metrics.json").read_text())["train"]["optimizer_steps"] == 16


def test_a_budget_checkpoint_resumed_without_the_budget_is_refused_in_one_line(tmp_path):
    """Its stream holds a row read for the next budget batch, which a run without the budget would drop."""
    budgeted = worker_batches(tmp_path, (40, 40), workers="0")()
    list(itertools.islice(budgeted.batches(), 3))
    budgeted.save(tmp_path, 0)
    with pytest.raises(CheckpointError, match="resume it with data.max_tokens_per_batch set"):
        worker_batches(tmp_path, (40, 40), workers="0", budget="null")().load(tmp_path, 0)
