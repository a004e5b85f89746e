"""data.eval_files: named evaluation sets scored at each evaluation, logged, chosen from, recorded."""

from __future__ import annotations

import json

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import CONFIGS, run_cli, train_tiny


@pytest.mark.slow
def test_named_sets_are_scored_logged_recorded_and_may_pick_the_best(tmp_path, cache_dir):
    extra = {
        "data.eval_files": "{held: emotion/test.txt}",
        "train.metric_for_best": "held/weighted_f1",
        "train.max_steps": "8",
        "train.eval_every_steps": "4",
    }
    run_dir = train_tiny(tmp_path, cache_dir, **extra)
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0}).Reload()
    assert [event.step for event in acc.Scalars("eval_held/weighted_f1")] == [4, 7, 8]  # and the epoch end
    assert "eval/weighted_f1" in acc.Tags()["scalars"]  # the validation split as before
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert {"weighted_f1", "held/weighted_f1", "held/loss"} <= set(metrics["final"])
    held = [event.value for event in acc.Scalars("eval_held/weighted_f1")]
    assert metrics["best"]["held/weighted_f1"] == max(held) and metrics["best"]["step"] in (4, 7, 8)
    table = run_cli("runs", str(tmp_path / "runs"), "--format", "json")
    assert json.loads(table.stdout)["runs"][0]["final_held/weighted_f1"] == metrics["final"]["held/weighted_f1"]


@pytest.mark.slow
def test_a_missing_eval_file_or_set_is_one_line(tmp_path, cache_dir):
    bad = run_cli(
        "check", str(CONFIGS / "tiny.yaml"), "data.eval_files={held: x.txt}", "train.metric_for_best=other/loss"
    )
    assert bad.returncode == 2 and "names no evaluation set; data.eval_files has held" in bad.stderr
