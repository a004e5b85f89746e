"""Non-finite losses: skipped and counted (train.nonfinite=skip) or a one-line stop naming the step."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import CONFIGS, REPO, tiny_overrides

# Runs the real CLI with the loss of chosen micro-batches (1-based) turned into NaN.
POISONED_CLI = """
import sys
import ptrain.tasks.loss as loss
bad = {int(n) for n in sys.argv[1].split(",")}
original, calls = loss.ClassificationLoss.__call__, [0]
def poisoned(self, logits, labels):
    calls[0] += 1
    value = original(self, logits, labels)
    return value * float("nan") if calls[0] in bad else value
loss.ClassificationLoss.__call__ = poisoned
from ptrain.cli import main
sys.exit(main(sys.argv[2:]))
"""


def run_poisoned(tmp_path, cache_dir, bad: str, *extra: str) -> subprocess.CompletedProcess:
    args = [
        "train",
        str(CONFIGS / "tiny.yaml"),
        *tiny_overrides(tmp_path, cache_dir, rows=200),
        "train.max_steps=6",
        "train.log_every_steps=1",
        *extra,
    ]
    return subprocess.run(
        [sys.executable, "-c", POISONED_CLI, bad, *args], cwd=REPO, capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow
def test_skip_drops_the_step_and_counts_it(tmp_path, cache_dir):
    result = run_poisoned(tmp_path, cache_dir, "3")
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (tmp_path / "runs" / "tiny").iterdir()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["train"]["nonfinite_skips"] == 1 and metrics["train"]["optimizer_steps"] == 6
    assert "nan" not in result.stdout.lower()  # the skipped window is left out of the logged loss


@pytest.mark.slow
def test_stop_policy_names_the_step(tmp_path, cache_dir):
    result = run_poisoned(tmp_path, cache_dir, "3", "train.nonfinite=stop")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "ptrain: error: non-finite loss or gradient norm at optimizer step 3 (epoch 0); lower train.learning_rate, "
        "keep train.max_grad_norm set, or use train.nonfinite=skip"
    )


@pytest.mark.slow
def test_too_many_consecutive_skips_stop_the_run(tmp_path, cache_dir):
    result = run_poisoned(tmp_path, cache_dir, "2,3,4", "train.max_consecutive_nonfinite=3")
    assert result.returncode == 2
    assert "3 non-finite steps in a row, the last at optimizer step 4" in result.stderr
