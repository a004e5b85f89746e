"""Two processes, one folder: a run held at its first checkpoint by a callback refuses a second `ptrain train` into
its folder (the same run_dir, and train.resume=auto) in one line naming it; after a SIGKILL its marker is
taken over. Two sweeps of one grid run each point once; runs started in one second get their own folders."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest

from ptrain.cli import main
from ptrain.errors import RunInUseError
from ptrain.files import lock
from ptrain.outputs import run_dir
from ptrain.runtime import agreement
from tests.conftest import CONFIGS, REPO, run_cli, tiny_overrides

HOST = socket.gethostname()
HOLD = '''
"""Holds the run in its first on_checkpoint until the test creates GATE/release (at most 120 s)."""
import os, pathlib, time

GATE = pathlib.Path({gate!r})


class HoldAtCheckpoint:
    def on_checkpoint(self, view):
        if view.is_main_process and not (GATE / "release").exists():
            (GATE / "held").write_text(str(os.getpid()))
            deadline = time.monotonic() + 120
            while not (GATE / "release").exists() and time.monotonic() < deadline:
                time.sleep(0.1)
'''


def wait_for(path, process: subprocess.Popen, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert process.poll() is None, f"exited with {process.returncode} before {path.name} appeared"
        assert time.monotonic() < deadline, f"no {path.name} after {seconds}s"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def live(tmp_path_factory, cache_dir):
    """`ptrain train` into runs/tiny/shared, held in its step-1 checkpoint's callback."""
    tmp = tmp_path_factory.mktemp("live")
    callback = tmp / "hold.py"
    callback.write_text(HOLD.format(gate=str(tmp)))
    args = [
        "train",
        str(CONFIGS / "tiny.yaml"),
        *tiny_overrides(tmp, cache_dir, rows=64, **{"data.max_eval_rows": "32", "train.epochs": "1"}),
        "train.checkpoint_every_steps=1",
        f"train.callbacks=[{callback}:HoldAtCheckpoint]",
    ]
    shared = tmp / "runs" / "tiny" / "shared"
    log = open(tmp / "first.log", "w")
    first = subprocess.Popen(
        [sys.executable, "-m", "ptrain", *args, f"run_dir={shared}"], cwd=REPO, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        wait_for(tmp / "held", first)
        yield SimpleNamespace(tmp=tmp, args=args, shared=shared, first=first)
    finally:
        first.kill()
        first.wait()
        log.close()


def run_status(folder, capsys) -> str:
    """The status `ptrain runs` gives the folder's run."""
    capsys.readouterr()
    assert main(["runs", str(folder.parent), "--format", "json"]) == 0
    return {row["run"]: row["status"] for row in json.loads(capsys.readouterr().out)["runs"]}[folder.name]


@pytest.mark.slow
@pytest.mark.multiprocess
def test_a_second_training_into_a_live_run_folder_is_refused_naming_it(live, capsys):
    files = {p: p.stat().st_mtime_ns for p in live.shared.rglob("*")}
    with ThreadPoolExecutor(1) as pool:  # the same run_dir, and resume=auto (which finds its checkpoint), at once
        same_folder = pool.submit(run_cli, *live.args, f"run_dir={live.shared}")
        resumed = run_cli(*live.args, "train.resume=auto")
    owner = f"ptrain: error: run folder {live.shared} is in use by process {live.first.pid} on host {HOST}"
    for result in (same_folder.result(), resumed):
        assert result.returncode == 2, result.stderr[-3000:]
        (line,) = [x for x in result.stderr.splitlines() if x.startswith("ptrain: ")]
        assert line.startswith(owner) and "(ptrain train " in line and "wait for it to end" in line
    assert {p: p.stat().st_mtime_ns for p in live.shared.rglob("*")} == files  # nothing written into it
    assert run_status(live.shared, capsys) == "running"


def test_every_launched_process_gets_the_main_process_refusal(tmp_path, monkeypatch):
    """Under `accelerate launch --multi_gpu --num_processes 2` only the main process takes the lock; it sends its
    decision, so the other process raises the same one line (it used to wait in a broadcast the main process never
    reached, and died with a gloo traceback when it exited)."""
    sent = []

    def broadcast(objects):  # rank 0 sends its list; rank 1's is replaced by a copy, as through gloo
        if sent:
            objects[:] = pickle.loads(sent.pop())
        else:
            sent.append(pickle.dumps(objects))

    monkeypatch.setattr(agreement, "broadcast_object_list", broadcast)
    ranks = [SimpleNamespace(is_main_process=rank == 0, num_processes=2) for rank in (0, 1)]
    with lock.acquire(tmp_path / run_dir.RUNNING, "run folder x"):  # held by a live process: this one
        for rank in ranks:
            with pytest.raises(RunInUseError, match=f"in use by process {os.getpid()} on host"):
                run_dir.claim_run_dir(rank, str(tmp_path), "tiny", str(tmp_path))
    main_dir, main_lock = run_dir.claim_run_dir(ranks[0], "", "tiny", str(tmp_path))
    other_dir, other_lock = run_dir.claim_run_dir(ranks[1], "", "tiny", str(tmp_path))
    assert main_dir == other_dir == tmp_path and (tmp_path / run_dir.RUNNING).is_file()
    other_lock.release()  # holds nothing
    assert (tmp_path / run_dir.RUNNING).is_file()
    main_lock.release()
    assert not (tmp_path / run_dir.RUNNING).exists()


@pytest.mark.slow
@pytest.mark.multiprocess
def test_a_killed_runs_marker_is_taken_over_by_resume(live, capsys):
    live.first.send_signal(signal.SIGKILL)
    live.first.wait()
    assert (live.shared / run_dir.RUNNING).is_file()  # SIGKILL leaves it behind: no longer counted as running
    assert run_status(live.shared, capsys) == "resumable"
    (live.tmp / "release").touch()
    result = run_cli(*live.args, f"run_dir={live.shared}", "train.resume=auto")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"process {live.first.pid} on host {HOST} since " in result.stdout
    assert "no longer runs; taking its place" in result.stdout and "resumed from" in result.stdout
    assert (live.shared / "metrics.json").is_file() and not (live.shared / run_dir.RUNNING).exists()


POINT = """
import pathlib, sys, time
run_dir = pathlib.Path(next(a for a in sys.argv if a.startswith("run_dir="))[8:])
starts = pathlib.Path({starts!r})
with open(starts, "a") as log:
    log.write(run_dir.name + "\\n")
deadline = time.monotonic() + 60
while len(starts.read_text().split()) < 2 and time.monotonic() < deadline:  # both points train at once
    time.sleep(0.1)
(run_dir / "config.yaml").write_text("name: fake\\n")
(run_dir / "metrics.json").write_text("{{}}")
"""


@pytest.mark.slow
@pytest.mark.multiprocess
def test_a_sweep_started_twice_runs_each_point_once(tmp_path, capsys):
    """The first sweep holds point 1 until the second, started meanwhile, passes it by and starts point 2."""
    starts = tmp_path / "starts.txt"
    launcher = tmp_path / "point.py"
    launcher.write_text(POINT.format(starts=str(starts)))
    args = ["sweep", str(CONFIGS / "tiny.yaml"), "train.seed=1,2", f"output_dir={tmp_path}", "--id", "s"]
    args += ["--launcher", f"{sys.executable} {launcher}"]
    first = subprocess.Popen(
        [sys.executable, "-m", "ptrain", *args], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    wait_for(starts, first, seconds=120)
    assert main(args) == 0
    second = capsys.readouterr().out
    out, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    assert sorted(starts.read_text().split()) == ["seed-1", "seed-2"]  # each point trained once
    assert f"seed-1: trained by process {first.pid} on host {HOST}" in second
    assert "seed-1: finished by another process" in second and "2 of 2 points finished" in second
    assert "2 of 2 points finished" in out and "seed-2: finished" in out
    assert not list((tmp_path / "tiny" / "s").glob("*.lock"))


def test_runs_started_in_the_same_second_get_different_folders(tmp_path, monkeypatch):
    monkeypatch.setattr(run_dir.time, "strftime", lambda fmt: "20240101-120000")
    main_process = SimpleNamespace(is_main_process=True, num_processes=1)
    start = threading.Barrier(6)
    folders = []

    def start_a_run():
        start.wait()
        folder, held = run_dir.claim_run_dir(main_process, str(tmp_path), "tiny")
        held.release()
        folders.append(folder.name)

    threads = [threading.Thread(target=start_a_run) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(folders) == ["20240101-120000", *(f"20240101-120000-{n}" for n in range(2, 7))]


def test_without_file_locks_the_owner_record_decides(tmp_path, monkeypatch, capsys):
    """On a file system without flock (Lustre without -o flock), filelock's marker of the owner's pid, host and
    process start time decides: a live owner is refused, one on another host cannot be checked (the refusal says
    what to delete), and a marker whose pid now names another process (its start time differs) is taken over."""

    def no_locks(fd, operation):
        raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    record = tmp_path / run_dir.RUNNING
    with lock.acquire(record, "run folder x"):
        with pytest.raises(RunInUseError, match=f"in use by process {os.getpid()} on host {HOST}") as info:
            lock.acquire(record, "run folder x")
        assert "delete" not in str(info.value) and lock.holder(record)["pid"] == os.getpid()
    assert not record.exists() and not lock.lock_file(record).exists()
    soft_marker = "{pid}\n{host}\n123\n"  # filelock's: pid, host, a start-time token that matches no process
    for owner in ({"pid": 1, "host": "node-7"}, {"pid": os.getpid(), "host": HOST}):
        lock.lock_file(record).write_text(soft_marker.format(**owner))
        record.write_text(json.dumps(owner))
        if owner["host"] != HOST:
            with pytest.raises(RunInUseError, match="in use by process 1 on host node-7.*then delete") as info:
                lock.acquire(record, "run folder x")
            assert str(lock.lock_file(record)) in str(info.value)
            continue
        with lock.acquire(record, "run folder x"):  # a reused pid: its start time is not the marker's
            assert json.loads(record.read_text())["pid"] == os.getpid()
    assert f"process {os.getpid()} on host {HOST} no longer runs; taking its place" in capsys.readouterr().out
    assert not record.exists()
