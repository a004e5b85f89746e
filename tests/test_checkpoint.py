"""Checkpoint writes: a failed write (full disk) keeps the previous checkpoint; pruning keeps the best."""

from __future__ import annotations

import errno

import pytest

from ptrain.errors import OutputError
from ptrain.training.checkpointing.checkpoint import complete_checkpoints, latest_complete, save_checkpoint
from ptrain.training.checkpointing.resume import resumable


def meta(step: int) -> dict:
    return {"loop": {"global_step": step}, "meter": {}}


def test_a_full_disk_during_a_write_keeps_the_previous_checkpoint(accelerator, tmp_path, monkeypatch):
    save_checkpoint(accelerator, tmp_path, meta(10), keep=2, best_step=None)
    real_save = accelerator.save_state

    def fill_the_disk(folder):
        real_save(folder)  # files are half there when the disk fills up
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(accelerator, "save_state", fill_the_disk)
    with pytest.raises(OutputError) as info:  # exit code 1; the run's stop line adds resumable() and the command
        save_checkpoint(accelerator, tmp_path, meta(20), keep=2, best_step=None)
    message = str(info.value)
    assert "checkpoint at step 20 could not be written" in message and "No space left on device" in message
    assert "intact checkpoint " in resumable(tmp_path) and "step-00000010 (step 10)" in resumable(tmp_path)
    assert latest_complete(tmp_path).step == 10
    assert not list((tmp_path / "checkpoints").glob("*.tmp"))


def test_pruning_keeps_the_newest_and_the_best(accelerator, tmp_path):
    for step in (2, 4, 6, 8, 10):
        save_checkpoint(accelerator, tmp_path, meta(step), keep=2, best_step=4)
    assert [c.step for c in complete_checkpoints(tmp_path)] == [4, 8, 10]
