"""train.compile: torch.compile (inductor, dynamic lengths) of the model, for training and evaluation, trains to the
loss of the eager model (dropout off: compiled dropout draws other masks than eager's)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import CONFIGS, run_cli, scalar_values, tiny_overrides

SETTINGS = {
    "model.scratch_config.hidden_dropout_prob": "0",
    "model.scratch_config.attention_probs_dropout_prob": "0",
    "train.epochs": "1",
    "train.per_device_batch_size": "16",
    "train.log_every_steps": "1",
    "train.fast_paths": "false",  # the eager side as compiled runs it (train.compile turns them off)
}


@pytest.mark.slow
def test_the_compiled_model_trains_and_scores_as_the_eager_one(tmp_path, cache_dir):
    runs = {}
    for compiled in (False, True):
        out = tmp_path / f"compile_{compiled}"
        args = tiny_overrides(out, cache_dir, rows=128, **SETTINGS, **{"train.compile": str(compiled).lower()})
        result = run_cli("train", str(CONFIGS / "tiny.yaml"), *args)
        assert result.returncode == 0, result.stderr[-3000:]
        assert ("torch.compile (dynamic lengths, fast paths off)" in result.stdout) == compiled
        (runs[compiled],) = (out / "runs" / "tiny").iterdir()
    eager, compiled = (scalar_values(runs[flag], "train/loss") for flag in (False, True))
    assert len(compiled) == len(eager) == 8 and compiled == pytest.approx(eager, rel=2e-3)
    final = [json.loads((runs[flag] / "metrics.json").read_text())["final"] for flag in (False, True)]
    assert final[1]["loss"] == pytest.approx(final[0]["loss"], rel=2e-3)  # evaluation ran the compiled model too
