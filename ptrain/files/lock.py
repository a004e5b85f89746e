"""One process per run folder (or sweep point): a lock held with the `filelock` package for the owner's life, and
beside it a small JSON record naming the owner (pid, host, start time, command) for refusals and `ptrain runs`.

filelock holds NAME.lock with flock(2), which the kernel drops when the owner dies (even by SIGKILL), so a lock
left behind is taken over; on a file system without flock it falls back to a marker of the owner's pid, host and
process start time, so a reused pid is not taken for a live owner. A second live process is refused in one line
naming the owner from NAME.json."""

from __future__ import annotations

import atexit
import json
import os
import shlex
import socket
import sys
import time
from contextlib import contextmanager, suppress
from pathlib import Path

from filelock import FileLock, Timeout

from ptrain.errors import ConfigError, RunInUseError

# How long an acquire waits for a lock held for a moment (`ptrain runs` probing it), and for a new owner's record.
BUSY_SECONDS, POLL_SECONDS = 1.0, 0.05
COMMAND_CHARS = 200  # of the owner's command line, in refusals


def lock_file(record: Path) -> Path:
    """The file filelock holds beside an owner record: running.json -> running.lock."""
    return record.with_suffix(".lock")


class RunLock:
    """A held lock and its owner record; release() (or leaving the `with` block, or the process's normal exit)
    removes both. A lock without a FileLock is a placeholder for processes that do not own the folder."""

    def __init__(self, path: Path, held: FileLock | None = None):
        self.path, self._held, self._pid = path, held, os.getpid()
        if held is not None:
            atexit.register(self.release)

    def release(self) -> None:
        if self._held is None or os.getpid() != self._pid:  # a forked child (a data-loader worker) owns nothing
            return
        try:
            with suppress(FileNotFoundError):
                self.path.unlink()
            with suppress(FileNotFoundError):
                lock_file(self.path).unlink()  # while held: filelock's waiters retry on a removed file
        finally:
            self._held.release()
            self._held = None
            atexit.unregister(self.release)

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    @contextmanager
    def released_on_error(self):
        """For the setup between taking the lock and the block that releases it."""
        try:
            yield
        except BaseException:
            self.release()
            raise


def acquire(path: Path, what: str) -> RunLock:
    """Hold the lock of the owner record `path` for this process and write the record, or raise RunInUseError
    naming the live owner of `what` (the run folder, the sweep point). A record whose owner is gone is taken over
    with one line."""
    held = FileLock(lock_file(path), timeout=BUSY_SECONDS, poll_interval=POLL_SECONDS, thread_local=False)
    try:
        held.acquire()
    except Timeout:
        owner = _wait_for_record(path)
        raise RunInUseError(f"{what} is in use by {describe(owner)}; {_advice(owner, path)}", owner) from None
    except OSError as err:
        raise ConfigError(f"cannot create {lock_file(path)} ({err.strerror}); check the folder's permissions") from None
    try:
        previous = _read(path)
        if previous:
            print(f"ptrain: {what}: {describe(previous)} no longer runs; taking its place", flush=True)
        _write(path, record())
    except BaseException:
        held.release()
        raise
    return RunLock(path, held)


def holder(path: Path) -> dict | None:
    """The record of the live process that holds the lock of `path`, or None (no lock, or its owner is gone).
    Takes the lock for an instant when it is free; an acquire meanwhile waits BUSY_SECONDS for it."""
    if not lock_file(path).exists():
        return None
    probe = FileLock(lock_file(path), timeout=0, thread_local=False)
    try:
        probe.acquire()
    except Timeout:
        return _read(path) or {}
    except OSError:  # a folder this user cannot write: a lock it cannot take is held by someone
        return _read(path) or {}
    probe.release()
    return None


def record() -> dict:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": shlex.join(["ptrain", *sys.argv[1:]]),
    }


def describe(owner: dict) -> str:
    """`process 123 on host h since 2024-01-01 10:00:00 (ptrain train ...)`, with what the record tells."""
    if not owner:
        return "another process (its record is not written yet)"
    text = f"process {owner.get('pid')} on host {owner.get('host')}"
    if owner.get("started"):
        text += f" since {owner['started']}"
    command = str(owner.get("command", "")).replace("\n", " ")  # the refusal stays one line
    if command:
        text += f" ({command if len(command) <= COMMAND_CHARS else command[:COMMAND_CHARS] + '...'})"
    return text


def _advice(owner: dict, path: Path) -> str:
    if owner.get("host") not in (None, socket.gethostname()):
        return (
            "wait for it to end or stop it, or train into another folder (a file system without locks cannot "
            f"tell from here when a process on another host has ended: then delete {lock_file(path)})"
        )
    return "wait for it to end or stop it, or train into another folder"


def _read(path: Path) -> dict | None:
    """The record's JSON; None when missing or unreadable."""
    try:
        data = json.loads(path.read_text() or "null")
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _wait_for_record(path: Path) -> dict:
    """The record of an owner that holds the lock but maybe has not written it yet (a few milliseconds)."""
    deadline = time.monotonic() + BUSY_SECONDS
    while (owner := _read(path)) is None and time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)
    return owner or {}


def _write(path: Path, data: dict) -> None:
    """Whole or not at all (a reader never sees half a record): a temporary file renamed over it."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(data, indent=2))
    os.replace(temporary, path)
