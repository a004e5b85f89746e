"""A task from outside the package, registered through the public registry: its section is validated like any
other, its check runs in load_config, and the recipe trains, evaluates and exports it unchanged."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ptrain.errors import ConfigError
from ptrain.tasks import TASKS, load_config, register_task
from tests.conftest import CONFIGS, REPO, tiny_overrides
from tests.example_task import KeywordSpotting


@pytest.fixture
def keyword_task():
    task = register_task(KeywordSpotting())
    yield task
    TASKS.pop(task.name)


# A user's own script: register the task, then load and train a config through ptrain's public functions. It runs
# in a process of its own, as a user's would (Accelerate's state is per process).
SCRIPT = """
import sys
from ptrain.tasks import load_config, register_task
from ptrain.training.recipe import train
from tests.example_task import KeywordSpotting

register_task(KeywordSpotting())
sys.exit(train(load_config(sys.argv[1], sys.argv[2:])))
"""


@pytest.mark.slow
def test_a_registered_task_trains_with_its_own_section(tmp_path, cache_dir):
    overrides = [
        *tiny_overrides(tmp_path, cache_dir, rows=200),
        "task=keyword_spotting",
        "data.label_names=null",
        "keyword_spotting.keyword=happy",
        "train.epochs=1",
        "train.eval_every_steps=null",
    ]
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(CONFIGS / "tiny.yaml"), *overrides],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "task keyword_spotting, 2 labels" in result.stdout
    (run_dir,) = (tmp_path / "runs" / "tiny").iterdir()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0 <= metrics["final"]["weighted_f1"] <= 1 and metrics["train"]["optimizer_steps"] == 7
    assert (run_dir / "final" / "config.json").is_file() and "keyword_spotting:\n  keyword: happy" in (
        run_dir / "config.yaml"
    ).read_text()


def test_its_section_and_check_are_enforced(keyword_task):
    assert load_config(CONFIGS / "tiny.yaml", ["task=keyword_spotting"]).keyword_spotting.keyword == "feel"
    with pytest.raises(ConfigError, match="unknown key 'keyword_spotting.keywrd' \\(did you mean"):
        load_config(CONFIGS / "tiny.yaml", ["task=keyword_spotting", "keyword_spotting.keywrd=x"])
    with pytest.raises(ConfigError, match="keyword_spotting.keyword is empty"):
        load_config(CONFIGS / "tiny.yaml", ["task=keyword_spotting", "keyword_spotting.keyword=' '"])
