"""`ptrain tune`: a real study of the tiny config (a good trial, then a bad one the median pruner stops, then the
study restarted to a third trial), two processes sharing one SQLite study, and the refusals of bad ranges."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from tests.conftest import CONFIGS, REPO, run_cli, tiny_overrides


def tune_args(tmp: Path, cache: Path, *extra: str) -> list[str]:
    tiny = tiny_overrides(
        tmp,
        cache,
        rows=64,
        **{
            "data.max_eval_rows": "48",
            "train.max_steps": "4",
            "train.per_device_batch_size": "16",
            "train.eval_every_steps": "2",
            "train.metric_for_best": "loss",
            "train.highest_loss_examples": "0",
        },
    )
    return ["tune", str(CONFIGS / "tiny.yaml"), *tiny, *extra]


def trials_of(study_dir: Path, name: str):
    storage = optuna.storages.RDBStorage(f"sqlite:///{study_dir / 'study.db'}")
    return optuna.load_study(study_name=name, storage=storage).get_trials()


@pytest.fixture(scope="module")
def tuned(tmp_path_factory, cache_dir):
    """lr 1e-2 first (completes), then lr 1e-8 (its loss stays above the median: pruned), by --enqueue."""
    tmp = tmp_path_factory.mktemp("tune")
    space = ["--param", "train.learning_rate=choice:1e-2,1e-8", "--study", "lr", "--startup-trials", "1"]
    enqueue = ["--enqueue", "train.learning_rate=1e-2", "--enqueue", "train.learning_rate=1e-8"]
    result = run_cli(*tune_args(tmp, cache_dir, *space, *enqueue, "--trials", "2"))
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    return tmp / "runs" / "tiny" / "lr", result, tmp, space


def test_a_bad_trial_is_pruned_in_the_storage_and_its_run_folder(tuned):
    study_dir, result, _, _ = tuned
    first, second = trials_of(study_dir, "lr")
    assert (first.state, first.params) == (TrialState.COMPLETE, {"train.learning_rate": "1e-2"})
    assert (second.state, second.params) == (TrialState.PRUNED, {"train.learning_rate": "1e-8"})
    assert max(second.intermediate_values) < 4  # stopped before its last step
    pruned = json.loads((study_dir / "trial-0001" / "pruned.json").read_text())
    assert pruned["metric"] == "loss" and not (study_dir / "trial-0000" / "pruned.json").exists()
    table = run_cli("runs", str(study_dir), "--format", "json")
    rows = {row["run"]: row for row in json.loads(table.stdout)["runs"]}
    assert rows["trial-0001"]["status"] == "pruned" and rows["trial-0000"]["status"] == "finished"
    assert rows["trial-0001"]["train.learning_rate"] == 1e-8
    assert "trial 1 (1e-8): pruned" in result.stdout


def test_the_best_config_is_the_best_trial_and_validates(tuned):
    study_dir, _, _, _ = tuned
    best = study_dir / "best_config.yaml"
    assert yaml.safe_load(best.read_text())["train"]["learning_rate"] == 1e-2
    checked = run_cli("check", str(best))
    assert checked.returncode == 0, checked.stderr
    assert "callbacks: []" in checked.stdout or "tune_pruning" not in checked.stdout


def test_a_restarted_study_continues(tuned, cache_dir):
    study_dir, _, tmp, space = tuned
    result = run_cli(*tune_args(tmp, cache_dir, *space, "--trials", "3", "--sampler", "random"))
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    trials = trials_of(study_dir, "lr")
    assert [t.number for t in trials] == [0, 1, 2] and trials[2].state != TrialState.RUNNING
    assert "this process ran 1 trial(s)" in result.stdout
    again = run_cli(*tune_args(tmp, cache_dir, *space, "--trials", "3"))
    assert "this process ran 0 trial(s)" in again.stdout and len(trials_of(study_dir, "lr")) == 3


def test_two_processes_share_one_sqlite_study(tmp_path, cache_dir):
    """Started at once with --trials 3 in all: three trials, numbered 0-2, each in its own folder, none twice."""
    args = tune_args(tmp_path, cache_dir, "--param", "train.learning_rate=loguniform:1e-3:1e-2", "--study", "both")
    args += ["--trials", "3", "--pruner", "none"]
    command = [sys.executable, "-m", "ptrain", *args]
    processes = [subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=600)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs
    study_dir = tmp_path / "runs" / "tiny" / "both"
    trials = trials_of(study_dir, "both")
    assert sorted(t.number for t in trials) == [0, 1, 2]
    assert {t.state for t in trials} == {TrialState.COMPLETE}
    assert sorted(p.name for p in study_dir.glob("trial-*")) == ["trial-0000", "trial-0001", "trial-0002"]
    ran = sorted(int(o.split("this process ran ")[1].split()[0]) for o in outputs)
    assert sum(ran) == 3 and ran[0] >= 1, outputs  # both took part
    assert len({t.params["train.learning_rate"] for t in trials}) == 3


@pytest.mark.parametrize(
    ("param", "message"),
    [
        ("train.learning_rate=loguniform:0:1e-2", "loguniform needs LOW > 0"),
        ("train.learning_rate=uniform:1e-2:1e-4", "LOW must be below HIGH"),
        ("train.learning_rate=normal:1:2", "is not key=KIND:RANGE"),
        ("train.per_device_batch_size=int:8:x", "write int:LOW:HIGH[:STEP]"),
        ("train.per_device_batch_size=choice:16", "two or more distinct values"),
        ("train.learning_rat=loguniform:1e-4:1e-2", "learning_rat"),
        ("train.per_device_batch_size=choice:16,-1", "per_device_batch_size"),
        ("run_dir=choice:a,b", "sets run_dir itself"),
    ],
)
def test_bad_ranges_are_refused_in_one_line(tmp_path, cache_dir, param, message):
    result = run_cli(*tune_args(tmp_path, cache_dir, "--param", param, "--trials", "1"))
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not list(tmp_path.glob("runs/tiny/*/trial-*"))


def test_grid_refuses_a_continuous_range(tmp_path, cache_dir):
    param = ["--param", "train.learning_rate=loguniform:1e-4:1e-2", "--sampler", "grid"]
    result = run_cli(*tune_args(tmp_path, cache_dir, *param))
    assert result.returncode == 2 and "--sampler grid needs choice: or int:" in result.stderr
