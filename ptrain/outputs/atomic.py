"""Atomic writes: a file or folder is written under a temporary name, then renamed into place, so a reader never
sees it half-written. Imports nothing else from ptrain: model/, training/ and experiments/ all use it."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def written_through(path: Path, tmp: Path | None = None) -> Iterator[Path]:
    """Yield a temporary path (NAME.tmp unless given) for a writer such as torch.save or csv; when the block
    finishes without an error, rename it to `path`."""
    tmp = tmp or path.with_name(path.name + ".tmp")
    yield tmp
    os.replace(tmp, path)


def write_text(path: Path, text: str, fsync: bool = False) -> None:
    """`text` into `path` through NAME.tmp; with `fsync`, on disk before the rename."""
    with written_through(path) as tmp, open(tmp, "w") as handle:
        handle.write(text)
        if fsync:
            handle.flush()
            os.fsync(handle.fileno())


def write_json(path: Path, payload: dict) -> None:
    """Indented JSON through NAME.tmp, on disk before the rename (metrics and markers survive a crash)."""
    write_text(path, json.dumps(payload, indent=2), fsync=True)


def swap_folder(tmp: Path, final: Path) -> None:
    """Swap a finished folder in; the old one (moved to NAME.old) goes only after the new one is in place."""
    old = final.with_name(final.name + ".old")
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def move_folder(tmp: Path, final: Path) -> None:
    """Put a finished folder in place of whatever is at `final` (a cache entry or checkpoint that can be
    rewritten from scratch, so nothing is kept aside)."""
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
