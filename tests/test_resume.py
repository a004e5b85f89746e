"""Killed, preempted and resumed runs end exactly where the uninterrupted run ends (bitwise on CPU)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ptrain.files.integrity import manifest
from tests.conftest import CONFIGS, REPO, run_cli, tiny_overrides

# 300 rows, batch 32, accumulation 2: 10 micro-batches = 5 optimizer steps per epoch, 15 in all.
SETTINGS = {
    "train.epochs": "3",
    "train.gradient_accumulation_steps": "2",
    "train.checkpoint_every_steps": "2",
    "train.log_every_steps": "1",
    "train.eval_every_steps": "3",
    "data.max_eval_rows": "100",
}


def overrides(out: Path, cache: Path) -> list[str]:
    return [str(CONFIGS / "tiny.yaml"), *tiny_overrides(out, cache, rows=300, **SETTINGS)]


def final_state(out: Path) -> tuple[dict, dict]:
    (run_dir,) = (out / "runs" / "tiny").iterdir()
    weights = load_file(run_dir / "final" / "model.safetensors")
    return weights, json.loads((run_dir / "metrics.json").read_text())["final"]


def assert_same_run(resumed: Path, reference: Path) -> None:
    (weights, metrics), (expected, expected_metrics) = final_state(resumed), final_state(reference)
    assert weights.keys() == expected.keys()
    for name, tensor in weights.items():
        assert torch.equal(tensor, expected[name]), name
    assert metrics == expected_metrics


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, cache_dir) -> Path:
    out = tmp_path_factory.mktemp("uninterrupted")
    result = run_cli("train", *overrides(out, cache_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def start(out: Path, cache: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "ptrain", "train", *overrides(out, cache)],
        cwd=REPO,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )


def wait_for(predicate, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert process.poll() is None, "the run ended before the interruption point"
        assert time.monotonic() < deadline, "timed out waiting for the interruption point"
        time.sleep(0.0005)


def resume(out: Path, cache: Path) -> subprocess.CompletedProcess:
    result = run_cli("train", *overrides(out, cache), "train.resume=auto")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ptrain: resumed from" in result.stdout
    return result


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_gives_identical_weights(uninterrupted, cache_dir, tmp_path):
    step = random.Random().choice([3, 4, 6, 7, 8, 11, 12])  # mid-epoch steps, between checkpoints or on one
    log = tmp_path / "log.txt"
    process = start(tmp_path, cache_dir, log)
    wait_for(lambda: f"step {step}/15" in log.read_text(), process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    resume(tmp_path, cache_dir)
    assert_same_run(tmp_path, uninterrupted)


@pytest.mark.slow
def test_sigkill_during_a_checkpoint_write_then_resume(uninterrupted, cache_dir, tmp_path):
    for attempt in range(6):
        out = tmp_path / f"attempt{attempt}"
        process = start(out, cache_dir, tmp_path / f"log{attempt}.txt")
        checkpoints = lambda: list((out / "runs" / "tiny").glob("*/checkpoints/*.tmp"))  # noqa: E731
        complete = lambda: list((out / "runs" / "tiny").glob("*/checkpoints/*/complete"))  # noqa: E731
        wait_for(lambda: bool(checkpoints()) and bool(complete()), process)  # a write after a complete one
        process.send_signal(signal.SIGKILL)
        process.wait()
        if checkpoints():  # the kill landed inside the write: the half-written folder is still there
            break
    else:
        pytest.fail("no kill landed inside a checkpoint write in 6 attempts")
    resume(out, cache_dir)
    assert not checkpoints()  # the stale temporary folder was cleaned up by the next write
    assert_same_run(out, uninterrupted)


@pytest.mark.slow
def test_sigterm_finishes_the_step_checkpoints_and_says_how_to_resume(uninterrupted, cache_dir, tmp_path):
    log = tmp_path / "log.txt"
    process = start(tmp_path, cache_dir, log)
    wait_for(lambda: "step 7/15" in log.read_text(), process)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) == 143
    text = log.read_text()
    assert "ptrain: stopped by SIGTERM after step" in text and "train.resume=auto" in text
    assert "Traceback" not in text
    resume(tmp_path, cache_dir)
    assert_same_run(tmp_path, uninterrupted)


@pytest.mark.slow
def test_resume_auto_without_checkpoints_starts_a_new_run(cache_dir, tmp_path):
    result = run_cli(
        "train",
        str(CONFIGS / "tiny.yaml"),
        *tiny_overrides(tmp_path, cache_dir, rows=64),
        "train.max_steps=1",
        "train.resume=auto",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "no checkpoint of 'tiny'" in result.stdout


@pytest.mark.slow
def test_damaged_or_unsafe_checkpoints_are_refused_in_one_line(uninterrupted, cache_dir, tmp_path):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(uninterrupted, out)
    (run_dir,) = (out / "runs" / "tiny").iterdir()
    newest = sorted((run_dir / "checkpoints").iterdir())[-1]
    (newest / "optimizer.bin").unlink()
    result = run_cli("train", *overrides(out, cache_dir), f"train.resume={newest}")  # auto would take an older one
    assert result.returncode == 2 and "is damaged (missing optimizer.bin)" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1

    class Exploit:  # unpickling this would run a command
        def __reduce__(self):
            return os.system, (f"touch {tmp_path / 'pwned'}",)

    torch.save(Exploit(), newest / "optimizer.bin")
    meta = json.loads((newest / "meta.json").read_text())
    meta["files"] = manifest(newest, exclude=["meta.json", "complete"])  # who plants a file can rewrite this too
    (newest / "meta.json").write_text(json.dumps(meta))
    result = run_cli("train", *overrides(out, cache_dir), f"train.resume={newest}")
    assert result.returncode == 2 and "could not be loaded" in result.stderr
    assert not (tmp_path / "pwned").exists()


@pytest.mark.slow
def test_resume_refuses_a_different_config(uninterrupted, cache_dir, tmp_path):
    import shutil

    shutil.copytree(uninterrupted, tmp_path / "copy")
    result = run_cli("train", *overrides(tmp_path / "copy", cache_dir), "train.learning_rate=0.5", "train.resume=auto")
    assert result.returncode == 2 and "differs from the run being resumed" in result.stderr
    assert "train.learning_rate" in result.stderr
