"""Shared fixtures: offline Hub, the shared data folder, a private tokenization cache, CLI runners."""

from __future__ import annotations

import atexit
import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
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


def run_cli(
    *args: str, cwd: Path = REPO, env: dict | None = None, timeout: int = 600, input: str | None = None
) -> subprocess.CompletedProcess:
    """`python -m ptrain ARGS` as a user runs it; returns the finished process (never raises on failure). Forked
    from this worker's cli_server (ptrain and its libraries imported once, in the call's environment), or with
    PTRAIN_TEST_FORK=0 a fresh interpreter. `input` is piped to its stdin (without it: the server's child reads
    /dev/null, a fresh interpreter inherits pytest's stdin, as before)."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    command = [sys.executable, "-m", "ptrain", *args]
    if os.environ.get("PTRAIN_TEST_FORK", "1") != "0" and CliServer.lock.acquire(blocking=False):
        try:  # a call made while another thread's runs (tests that start two at once) takes a fresh interpreter
            return CliServer.for_env(full_env).run(command, cwd, full_env, timeout, input)
        finally:
            CliServer.lock.release()
    return subprocess.run(command, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout, input=input)


def same_environment(first: dict, second: dict) -> bool:
    """Equal but for pytest's PYTEST_CURRENT_TEST, which names the test running, and the PTRAIN_TEST_* variables,
    which only the tests' own hooks read, at run time (tests/kill_at_step.py, disk_filler.py...): the child gets the
    call's own values of both. A killed run and its resume then share the worker's server instead of each paying
    for a new one (its preload took 16 s on the shared 2-core machine)."""
    return import_time_environment(first) == import_time_environment(second)


def import_time_environment(env: dict) -> dict:
    """`env` without the variables a server's imports cannot have read."""
    return {key: value for key, value in env.items() if key != "PYTEST_CURRENT_TEST" and key[:12] != "PTRAIN_TEST_"}


class CliServer:
    """Client of tests/cli_server.py: one server per worker process, started at the first call."""

    running: CliServer | None = None
    lock = threading.Lock()

    def __init__(self, env: dict):
        self.env = env
        self.process = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("cli_server.py"))],
            cwd=REPO,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self.replies = b""  # read from the pipe unbuffered, so select sees every reply still to come
        atexit.register(self.process.kill)

    @classmethod
    def for_env(cls, env: dict) -> CliServer:
        """The worker's server, started anew when none runs in `env` (libraries read some variables at import;
        a test may set one, and importing torch's inductor sets TORCHINDUCTOR_CACHE_DIR in this process)."""
        running = cls.running
        if running is None or running.process.poll() is not None or not same_environment(running.env, env):
            if running is not None:
                running.process.kill()
                running.process.wait()
            cls.running = cls(env)
        return cls.running

    def run(
        self, command: list[str], cwd: Path, env: dict, timeout: float, input: str | None = None
    ) -> subprocess.CompletedProcess:
        with tempfile.TemporaryDirectory() as outputs:
            out, err = Path(outputs, "stdout"), Path(outputs, "stderr")
            request = {"args": command[3:], "cwd": str(cwd), "env": env, "stdout": str(out), "stderr": str(err)}
            if input is not None:  # the child reads it from a file as from a pipe: to its end, then EOF
                Path(outputs, "stdin").write_text(input)
                request["stdin"] = str(Path(outputs, "stdin"))
            request["main"] = str(REPO / "ptrain" / "__main__.py")
            self.process.stdin.write(json.dumps(request).encode() + b"\n")
            self.process.stdin.flush()
            pid = self.reply(None)["pid"]
            finished = self.reply(timeout)
            if finished is None:
                os.kill(pid, signal.SIGKILL)
            status = (finished or self.reply(None))["status"]
            stdout, stderr = out.read_text(), err.read_text()
        if finished is None:
            raise subprocess.TimeoutExpired(command, timeout, stdout, stderr)
        return subprocess.CompletedProcess(command, os.waitstatus_to_exitcode(status), stdout, stderr)

    def reply(self, timeout: float | None) -> dict | None:
        """The server's next reply, or None when `timeout` seconds pass first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self.replies:
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not select.select([self.process.stdout], [], [], wait)[0]:
                return None
            chunk = os.read(self.process.stdout.fileno(), 4096)
            if not chunk:
                raise RuntimeError("tests/cli_server.py exited; its errors are in the test's stderr")
            self.replies += chunk
        line, self.replies = self.replies.split(b"\n", 1)
        return json.loads(line)


def accelerate_launch(
    launch_args: list[str], module: str, *args: str, timeout: int = 600, env: dict | None = None
) -> subprocess.CompletedProcess:
    """`accelerate launch LAUNCH_ARGS -m MODULE ARGS` from the repository, on a free port (runs beside it may
    launch too), with `env` added to the environment; returns the finished launcher (never raises on failure)."""
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
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run(command, cwd=REPO, env=full_env, capture_output=True, text=True, timeout=timeout)


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
