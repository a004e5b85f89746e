"""train.ema_decay: the average's arithmetic, the swap in and out, its checkpoint, and a run's records."""

from __future__ import annotations

import json

import pytest
import torch
from accelerate import Accelerator

from ptrain.training.ema import WeightAverage
from tests.conftest import train_tiny


def test_the_average_follows_each_step_and_swaps_in_and_out_bitwise():
    model = torch.nn.Linear(3, 2)
    start = [p.detach().clone() for p in model.parameters()]
    ema = WeightAverage(model, decay=0.75)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(1.0)
    ema.update()
    trained = [p.detach().clone() for p in model.parameters()]
    for shadow, before, after in zip(ema.shadow, start, trained):
        torch.testing.assert_close(shadow, 0.75 * before + 0.25 * after)
    with ema.applied():
        assert all(torch.equal(p, s) for p, s in zip(model.parameters(), ema.shadow))
    assert all(torch.equal(p, t) for p, t in zip(model.parameters(), trained))  # the trained weights are back


def test_the_average_is_checkpointed_with_the_run(tmp_path):
    accelerator = Accelerator(cpu=True)
    model = accelerator.prepare(torch.nn.Linear(4, 4))
    ema = WeightAverage(model, decay=0.9)
    ema.checkpoint_with(accelerator)
    with torch.no_grad():
        model.weight.mul_(3.0)
    ema.update()
    saved = [s.clone() for s in ema.shadow]
    accelerator.save_state(str(tmp_path / "checkpoint"))
    assert (tmp_path / "checkpoint" / "ema.safetensors").is_file()
    assert not list((tmp_path / "checkpoint").glob("custom_checkpoint_*"))  # no pickle to unpickle on resume
    ema.update()
    accelerator.load_state(str(tmp_path / "checkpoint"))
    assert all(torch.equal(s, v) for s, v in zip(ema.shadow, saved))


@pytest.mark.slow
def test_a_run_scores_the_average_and_keeps_the_raw_weights_final_score(tmp_path, cache_dir):
    extra = {"train.ema_decay": "0.5", "train.max_steps": "6", "train.eval_every_steps": "6"}
    run_dir = train_tiny(tmp_path, cache_dir, **extra)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["final"]["step"] == metrics["final_raw"]["step"] == 6
    assert metrics["final"]["loss"] != metrics["final_raw"]["loss"]  # two different sets of weights scored
    assert (run_dir / "final" / "model.safetensors").is_file() and (run_dir / "best").is_dir()


def test_a_checkpoint_from_before_ema_safetensors_still_resumes_without_unpickling_code(tmp_path):
    ema = WeightAverage(torch.nn.Linear(2, 2), decay=0.9)
    torch.save({"decay": 0.9, "shadow": [s + 1.0 for s in ema.shadow]}, tmp_path / "custom_checkpoint_0.pkl")
    expected = [s + 1.0 for s in ema.shadow]
    ema.load(tmp_path)  # torch.load(weights_only=True): tensors and a float only
    assert all(torch.equal(s, e) for s, e in zip(ema.shadow, expected))
