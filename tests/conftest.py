"""Shared fixtures: offline Hub, the shared data folder, a private tokenization cache, CLI runners."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
DATA_DIR = Path(os.environ.get("PTRAIN_DATA_DIR", REPO.parent / "shared" / "data"))

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tokenized")


@pytest.fixture
def accelerator():
    """A fresh one-process CPU Accelerator holding a small model, its AdamW and a constant schedule: enough for
    save_state / load_state (checkpoint tests call checkpoint.py's functions with it)."""
    import torch
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    accelerator = Accelerator(cpu=True)
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    accelerator.prepare(model, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0))
    return accelerator


def run_cli(*args: str, cwd: Path = REPO, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """`python -m ptrain ARGS` as a user runs it; returns the finished process (never raises on failure)."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "ptrain", *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout
    )


def accelerate_launch(
    launch_args: list[str], module: str, *args: str, timeout: int = 600
) -> subprocess.CompletedProcess:
    """`accelerate launch LAUNCH_ARGS -m MODULE ARGS` from the repository, on a free port (runs beside it may
    launch too); returns the finished launcher (never raises on failure)."""
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--main_process_port",
        str(free_port()),
        *launch_args,
        "-m",
        module,
        *args,
    ]
    return subprocess.run(
        command, cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, timeout=timeout
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def tiny_overrides(tmp_path: Path, cache: Path, rows: int = 400, **extra: str) -> list[str]:
    """configs/tiny.yaml on `rows` emotion rows, writing into tmp_path."""
    values = {
        "output_dir": str(tmp_path / "runs"),
        "data.cache_dir": str(cache),
        "data.max_train_rows": str(rows),
        "data.max_eval_rows": "200",
        **extra,
    }
    return [f"{k}={v}" for k, v in values.items()]


def train_tiny(
    tmp_path: Path, cache: Path, rows: int = 200, config: Path = CONFIGS / "tiny.yaml", **extra: str
) -> Path:
    """`ptrain train CONFIG` (configs/tiny.yaml or one based on it) through the CLI on `rows` rows with `extra`
    overrides; its run folder."""
    result = run_cli("train", str(config), *tiny_overrides(tmp_path, cache, rows=rows, **extra))
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (tmp_path / "runs").glob("*/*")
    return run_dir


def scalar_values(run_dir: Path, tag: str) -> list[float]:
    """The values a run logged to TensorBoard under `tag`, in step order."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    return [event.value for event in EventAccumulator(str(run_dir), {"scalars": 0}).Reload().Scalars(tag)]


@pytest.fixture(scope="session", autouse=True)
def standins() -> Path:
    """The CoNLL-2003 entity-type stand-in that configs/multilabel_conll.yaml reads, derived into runs/ by
    ptrain.data.standins when missing (about a second), so every shipped config validates."""
    from ptrain.data.standins import DEFAULT_OUT, SPLITS, derive

    out = REPO / DEFAULT_OUT
    if not all((out / f"{split}.jsonl").is_file() for split in SPLITS):
        derive(DATA_DIR / "conll2003", out)
    return out
