"""data.max_tokens_per_batch: batches within the budget that cover every row once per epoch, in a seeded order;
one step over budget batches equals one step over the same rows in one batch; a killed run resumes bitwise; two
processes get the same number of batches."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import torch
from accelerate.data_loader import BatchSamplerShard
from safetensors.torch import load_file

from ptrain.data.token_budget import TokenBudgetBatches, budget_batches, padded_length
from ptrain.errors import ConfigError, DataError
from ptrain.tasks import load_config
from ptrain.training.summary import hparams_of
from tests.conftest import CONFIGS, accelerate_launch, run_cli, scalar_values, tiny_overrides
from tests.test_resume import assert_same_run

LENGTHS = np.random.default_rng(0).integers(3, 65, size=501)  # row lengths up to data.max_length 64


def sampler(seed: int = 1, group_by_length: bool = True, multiple: int | None = None, max_tokens: int = 300):
    shuffle = torch.Generator()
    return TokenBudgetBatches(LENGTHS, max_tokens, seed, shuffle, group_by_length, multiple), shuffle


def epoch(batches: TokenBudgetBatches, shuffle: torch.Generator, seed: int) -> list[list[int]]:
    shuffle.manual_seed(seed)  # as the loop seeds it: train.seed + epoch
    return list(batches)


@pytest.mark.parametrize("group_by_length", [True, False])
@pytest.mark.parametrize("multiple", [None, 8])
def test_batches_stay_within_the_budget_and_cover_every_row_once(group_by_length, multiple):
    batches, shuffle = sampler(group_by_length=group_by_length, multiple=multiple)
    for seed in (42, 43):
        rows = epoch(batches, shuffle, seed)
        assert len(rows) == len(batches)
        for batch in rows:
            assert len(batch) * max(padded_length(int(LENGTHS[row]), multiple) for row in batch) <= 300
        assert sorted(row for batch in rows for row in batch) == list(range(len(LENGTHS)))


def test_the_order_is_seeded_and_each_epoch_shuffles_the_same_batches():
    first, first_shuffle = sampler()
    again, again_shuffle = sampler()
    assert epoch(first, first_shuffle, 42) == epoch(again, again_shuffle, 42)
    one, two = epoch(first, first_shuffle, 42), epoch(first, first_shuffle, 43)
    assert one != two and sorted(one) == sorted(two)  # the same batches, in another order: a fixed step plan
    other, other_shuffle = sampler(seed=2)
    assert sorted(epoch(other, other_shuffle, 42)) != sorted(one)  # train.seed draws which rows go together


def test_length_grouping_cuts_padding_and_fits_more_rows():
    grouped, _ = sampler(group_by_length=True)
    mixed, _ = sampler(group_by_length=False)
    assert len(grouped) < len(mixed)
    assert grouped.summary.padded_tokens < mixed.summary.padded_tokens
    assert grouped.summary.real_tokens == mixed.summary.real_tokens == LENGTHS.sum()


def test_a_row_longer_than_the_budget_is_refused_in_one_line():
    with pytest.raises(DataError, match=r"below training row 1's 40 tokens \(padded to a multiple of 8\)"):
        list(budget_batches([(0, 10), (1, 33)], 32, multiple=8))
    assert list(budget_batches([(0, 10), (1, 16), (2, 16), (3, 5), (4, 32)], 32)) == [[0, 1], [2, 3], [4]]


def test_a_budget_below_the_max_length_is_refused_before_any_work():
    with pytest.raises(ConfigError, match="data.max_tokens_per_batch=32 cannot hold a row of data.max_length=64"):
        load_config(CONFIGS / "tiny.yaml", ["data.max_tokens_per_batch=32"])


@pytest.mark.parametrize("count", [30, 31])
def test_accelerate_gives_every_process_the_same_number_of_whole_batches(count):
    batches, shuffle = sampler()
    batches.bounds = batches.bounds[: count + 1]  # the first `count` batches
    shards = [BatchSamplerShard(batches, num_processes=2, process_index=rank) for rank in (0, 1)]
    per_process = []
    for shard in shards:
        shuffle.manual_seed(42)
        per_process.append(list(shard))
    assert len(per_process[0]) == len(per_process[1]) == len(shards[0]) == math.ceil(count / 2)
    shuffle.manual_seed(42)
    expected = list(batches)
    assert per_process[0] == expected[0::2] and per_process[1][: count // 2] == expected[1::2]


PLAIN_SGD = {  # no dropout, float32, SGD: the step's update is the gradient itself
    "model.scratch_config.hidden_dropout_prob": "0",
    "model.scratch_config.attention_probs_dropout_prob": "0",
    "train.mixed_precision": "no",
    "train.fast_paths": "false",
    "train.optimizer": "sgd",
    "train.learning_rate": "0.5",
    "train.warmup_ratio": "0",
}
SAME_ROWS = {  # 24 rows in one epoch
    **PLAIN_SGD,
    "train.epochs": "1",
    "train.log_every_steps": "1",
    "data.max_eval_rows": "32",
}


def train(out, cache, rows: int, settings: dict, env: dict | None = None, *extra: str):
    return run_cli(
        "train", str(CONFIGS / "tiny.yaml"), *tiny_overrides(out, cache, rows=rows, **settings), *extra, env=env
    )


def run_folder(out):
    (run_dir,) = (out / "runs" / "tiny").iterdir()
    return run_dir


@pytest.mark.slow
def test_one_step_over_budget_batches_equals_one_step_over_the_same_rows_in_one_batch(cache_dir, tmp_path):
    fixed = train(tmp_path / "fixed", cache_dir, 24, {**SAME_ROWS, "train.per_device_batch_size": "24"})
    budget = {**SAME_ROWS, "data.max_tokens_per_batch": "128", "train.gradient_accumulation_steps": "16"}
    budgeted = train(tmp_path / "budget", cache_dir, 24, budget)
    for result in (fixed, budgeted):
        assert result.returncode == 0, result.stderr[-3000:]
        assert "ptrain: 1 optimizer steps per epoch, 1 in total" in result.stdout
    micro_batches = int(re.search(r"up to 128 padded tokens \((\d+) batches", budgeted.stdout).group(1))
    assert 2 < micro_batches <= 16  # one window of several budget batches
    assert "x accumulation 16 x 1 = a step of up to 2,048 padded tokens" in budgeted.stdout
    fixed_dir, budget_dir = run_folder(tmp_path / "fixed"), run_folder(tmp_path / "budget")
    assert scalar_values(budget_dir, "train/loss") == pytest.approx(scalar_values(fixed_dir, "train/loss"), rel=1e-6)
    weights, expected = (load_file(run / "final" / "model.safetensors") for run in (budget_dir, fixed_dir))
    assert weights.keys() == expected.keys()
    for name, tensor in expected.items():
        torch.testing.assert_close(weights[name], tensor, rtol=1e-5, atol=1e-6)


RESUME = {
    "data.max_tokens_per_batch": "256",
    "train.epochs": "2",
    "train.gradient_accumulation_steps": "2",
    "train.checkpoint_every_steps": "2",
    "train.log_every_steps": "1",
    "train.eval_every_steps": "100",
    "data.max_eval_rows": "32",
    "train.callbacks": "[tests/kill_at_step.py:KillAtStep]",
}


@pytest.mark.slow
def test_a_budget_run_killed_mid_epoch_resumes_to_the_uninterrupted_weights(cache_dir, tmp_path):
    reference = train(tmp_path / "uninterrupted", cache_dir, 160, RESUME)
    assert reference.returncode == 0, reference.stderr[-3000:]
    steps_per_epoch = int(re.search(r"ptrain: (\d+) optimizer steps per epoch", reference.stdout).group(1))
    assert steps_per_epoch > 4  # the kill after step 5 (checkpoint at 4) lands inside the first epoch
    killed = train(tmp_path / "resumed", cache_dir, 160, RESUME, {"PTRAIN_TEST_KILL_AT_STEP": "5"})
    assert killed.returncode == -9, killed.stderr[-3000:]
    resumed = train(tmp_path / "resumed", cache_dir, 160, RESUME, None, "train.resume=auto")
    assert resumed.returncode == 0 and "ptrain: resumed from" in resumed.stdout, resumed.stderr[-3000:]
    assert_same_run(tmp_path / "resumed", tmp_path / "uninterrupted")


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_processes_split_the_budget_batches_evenly(cache_dir, tmp_path):
    settings = {"data.max_tokens_per_batch": "256", "train.epochs": "2", "data.max_eval_rows": "32"}
    args = tiny_overrides(tmp_path, cache_dir, rows=200, **settings)
    result = accelerate_launch(
        ["--multi_gpu", "--num_processes", "2"], "ptrain", "train", str(CONFIGS / "tiny.yaml"), *args
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "ptrain: 2 process(es) on cpu" in result.stdout
    batches = int(re.search(r"up to 256 padded tokens \((\d+) batches", result.stdout).group(1))
    assert batches % 2 == 1  # so Accelerate repeats the first batch on process 1
    steps = math.ceil(batches / 2)  # each process runs half the batches, the first ones again when odd
    assert f"ptrain: {steps} optimizer steps per epoch, {2 * steps} in total" in result.stdout
    metrics = json.loads((run_folder(tmp_path) / "metrics.json").read_text())
    assert metrics["train"]["optimizer_steps"] == 2 * steps


def test_the_hparams_tab_shows_a_budget_in_tokens_not_the_unused_row_count():
    rows = load_config(CONFIGS / "tiny.yaml", ["train.gradient_accumulation_steps=2"])
    budget = load_config(
        CONFIGS / "tiny.yaml", ["train.gradient_accumulation_steps=2", "data.max_tokens_per_batch=512"]
    )
    assert hparams_of(rows)["batch"] == 2 * rows.train.per_device_batch_size and "batch_tokens" not in hparams_of(rows)
    assert hparams_of(budget)["batch_tokens"] == 1024 and "batch" not in hparams_of(budget)
