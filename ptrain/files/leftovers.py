"""What an interrupted write leaves in a run folder: NAME.tmp files and folders (a write that never finished) and
NAME.old folders (a swap cut between its two renames). A resume clears them; `ptrain check-run` lists them."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def leftovers(run_dir: Path) -> list[Path]:
    """NAME.tmp and NAME.old in the run folder and in its subfolders (checkpoints/, the exports)."""
    return sorted(path for pattern in ("*.tmp", "*.old", "*/*.tmp", "*/*.old") for path in run_dir.glob(pattern))


def remove_leftovers(run_dir: Path) -> list[Path]:
    """Remove every leftover; a NAME.old whose NAME is missing is the last complete version: it is put back."""
    removed = []
    for path in leftovers(run_dir):
        original = path.with_suffix("")
        if path.suffix == ".old" and not original.exists():
            os.replace(path, original)
        elif path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed
