"""One process per run folder (or sweep point): a marker file held with flock(2) for the owner's life, naming it
(pid, host, start time, command). The kernel drops the lock when the owner dies, even by SIGKILL, so a marker
left behind is taken over; a second live process is refused in one line naming the owner."""

from __future__ import annotations

import atexit
import errno
import fcntl
import functools
import json
import os
import shlex
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from ptrain.errors import ConfigError, RunInUseError

# flock(2) fails with these where the file system has no locks (NFS mounted `nolock`, Lustre without `-o flock`):
# then the marker's pid decides, which only works for an owner on this host.
NO_LOCKS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}
BUSY_RETRIES, BUSY_WAIT_SECONDS = 10, 0.1  # a reader (`ptrain runs`) may hold the lock shared for a moment
COMMAND_CHARS = 200  # of the owner's command line, in refusals
_HELD: dict[int, RunLock] = {}  # this process's locks by file descriptor, dropped in forked children


class RunLock:
    """A held marker; release() (or leaving the `with` block, or the process's normal exit) removes it. A lock
    with no file descriptor is a placeholder for processes that do not own the folder."""

    def __init__(self, path: Path, fd: int | None = None):
        self.path, self._fd, self._pid = path, fd, os.getpid()
        if fd is not None:
            _HELD[fd] = self
            atexit.register(self.release)

    def release(self) -> None:
        if self._fd is None or os.getpid() != self._pid:
            return
        try:
            if _same_file(self._fd, self.path):
                self.path.unlink()  # before unlocking: a newcomer then finds no file, or a file of its own
        finally:
            _HELD.pop(self._fd, None)
            os.close(self._fd)
            self._fd = None
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
    """Hold `path` (created when missing) for this process, or raise RunInUseError naming the live owner of
    `what` (the run folder, the sweep point). A marker whose owner is gone is taken over with one line."""
    _drop_locks_in_forked_children()
    for _ in range(BUSY_RETRIES):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as err:
            raise ConfigError(f"cannot create {path} ({err.strerror}); check the folder's permissions") from None
        try:
            lock = _take(fd, path, what)
        except BaseException:
            os.close(fd)
            raise
        if lock is not None:
            return lock
        os.close(fd)  # its owner removed the file between our open and our lock: open the new one
    raise RunInUseError(f"{what}: {path} keeps being replaced by other processes; try again")


def _take(fd: int, path: Path, what: str) -> RunLock | None:
    """The lock on the open marker `fd`, or None when `path` no longer names that file."""
    locked = _try_lock(fd)
    if locked and not _same_file(fd, path):
        return None
    previous = _read(fd)
    if locked is False or (locked is None and previous and _alive(previous)):
        owner = previous or _wait_for_marker(path)
        raise RunInUseError(f"{what} is in use by {describe(owner)}; {_advice(owner, locked, path)}", owner)
    if previous:
        print(f"ptrain: {what}: {describe(previous)} no longer runs; taking its place", flush=True)
    _write(fd, marker())
    return RunLock(path, fd)


def holder(path: Path) -> dict | None:
    """The marker of the live process that holds `path`, or None (no marker, or its owner is gone). Takes the lock
    shared for an instant when the file system has locks; otherwise checks the pid (live when on another host)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        owner = _read(fd)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return owner or {}
        except OSError as err:
            if err.errno not in NO_LOCKS:
                raise
            return owner if owner and _alive(owner) else None
        return None
    finally:
        os.close(fd)


def marker() -> dict:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": shlex.join(["ptrain", *sys.argv[1:]]),
    }


def describe(owner: dict) -> str:
    """`process 123 on host h since 2024-01-01 10:00:00 (ptrain train ...)`, with what the marker tells."""
    if not owner:
        return "another process (its marker is not written yet)"
    text = f"process {owner.get('pid')} on host {owner.get('host')}"
    if owner.get("started"):
        text += f" since {owner['started']}"
    command = str(owner.get("command", "")).replace("\n", " ")  # the refusal stays one line
    if command:
        text += f" ({command if len(command) <= COMMAND_CHARS else command[:COMMAND_CHARS] + '...'})"
    return text


def _advice(owner: dict, locked: bool | None, path: Path) -> str:
    if locked is None and owner.get("host") != socket.gethostname():
        return f"this file system has no locks to check a process on another host: once it has ended, delete {path}"
    return "wait for it to end or stop it, or train into another folder"


def _try_lock(fd: int) -> bool | None:
    """True: locked; False: another process holds it; None: the file system has no locks."""
    for attempt in range(BUSY_RETRIES):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if attempt + 1 < BUSY_RETRIES:
                time.sleep(BUSY_WAIT_SECONDS)
        except OSError as err:
            if err.errno in NO_LOCKS:
                return None
            raise
    return False


def _alive(owner: dict) -> bool:
    """Whether the marker's process runs; one on another host cannot be checked from here and counts as running."""
    if owner.get("host") != socket.gethostname():
        return True
    try:
        os.kill(int(owner["pid"]), 0)
    except (ProcessLookupError, KeyError, ValueError, TypeError):
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


def _read(fd: int) -> dict | None:
    """The marker's JSON; None when empty or half-written (its owner writes it right after locking)."""
    try:
        data = json.loads(os.pread(fd, 1 << 16, 0) or b"null")
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _wait_for_marker(path: Path) -> dict:
    """The marker of an owner that has locked the file but maybe not written it yet (a few milliseconds)."""
    for _ in range(BUSY_RETRIES):
        try:
            owner = json.loads(path.read_text() or "null")
        except (OSError, ValueError):
            owner = None
        if isinstance(owner, dict):
            return owner
        time.sleep(BUSY_WAIT_SECONDS)
    return {}


def _write(fd: int, data: dict) -> None:
    """In place (a rename would swap the locked file for an unlocked one), flushed to disk."""
    payload = json.dumps(data, indent=2).encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, payload, 0)
    os.fsync(fd)


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


def _drop_in_child() -> None:
    """A forked child (a data-loader worker) must not keep a dead owner's lock, nor remove its marker on exit."""
    for fd, lock in list(_HELD.items()):
        os.close(fd)
        lock._fd = None
    _HELD.clear()


@functools.cache  # once per process, at the first lock
def _drop_locks_in_forked_children() -> None:
    os.register_at_fork(after_in_child=_drop_in_child)
