"""Atomic writes: a file or folder is written under a temporary name, then renamed into place, so a reader never
sees it half-written; a failed write (a full disk) removes its temporary copy and is reported in one line naming the
file. Imports nothing from ptrain but its errors: model/, training/ and experiments/ all use it."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from safetensors import SafetensorError

from ptrain.errors import OutputError, first_line

# How a failed write shows: an OSError (ENOSPC, EIO, EROFS...), torch's serializer's RuntimeError ("unexpected pos"
# on a full disk) or safetensors' own error.
WRITE_ERRORS = (OSError, RuntimeError, SafetensorError)


def write_failed(path: Path, err: BaseException) -> OutputError:
    """The one-line error for a write to `path` that raised `err`."""
    return OutputError(f"cannot write {path} ({write_reason(path, err)})")


def write_reason(path: Path, err: BaseException) -> str:
    """Why a write to `path` failed: the system's reason, and the free space left where a library's message hides
    it (torch says "unexpected pos" when the disk is full)."""
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    free = free_bytes(path)
    return first_line(err) + (f"; {free // 1024} KiB free there" if free is not None else "")


def free_bytes(path: Path) -> int | None:
    """Free bytes on the filesystem holding `path` (its nearest existing parent); None if that cannot be read."""
    for folder in (path, *path.parents):
        if folder.exists():
            try:
                return shutil.disk_usage(folder).free
            except OSError:
                return None
    return None


@contextmanager
def written_through(path: Path, tmp: Path | None = None) -> Iterator[Path]:
    """Yield a temporary path (NAME.tmp unless given) for a writer such as torch.save or csv; when the block
    finishes without an error, rename it to `path`; when it fails, remove the temporary file."""
    tmp = tmp or path.with_name(path.name + ".tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str, fsync: bool = False) -> None:
    """`text` into `path` through NAME.tmp; with `fsync`, on disk before the rename. A failure is an OutputError."""
    try:
        with written_through(path) as tmp, open(tmp, "w") as handle:
            handle.write(text)
            if fsync:
                handle.flush()
                os.fsync(handle.fileno())
    except OSError as err:
        raise write_failed(path, err) from None


def write_json(path: Path, payload: dict) -> None:
    """Indented JSON through NAME.tmp, on disk before the rename (metrics and markers survive a crash)."""
    write_text(path, json.dumps(payload, indent=2), fsync=True)


def swap_folder(tmp: Path, final: Path) -> None:
    """Swap a finished folder in; the old one (moved to NAME.old) goes only after the new one is in place, and
    comes back if the new one cannot be put there."""
    old = final.with_name(final.name + ".old")
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)  # a leftover of an interrupted swap; `final` is the newer one
        os.replace(final, old)
    try:
        os.replace(tmp, final)
    except OSError:
        if old.exists():
            os.replace(old, final)
        raise
    shutil.rmtree(old, ignore_errors=True)


def move_folder(tmp: Path, final: Path) -> None:
    """Put a finished folder in place of whatever is at `final` (a cache entry or checkpoint that can be
    rewritten from scratch, so nothing is kept aside)."""
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
