"""File manifests: the size and sha256 of every file of a folder, recorded when the folder is written (checkpoints,
exports) and checked before it is trusted, so a truncated or bit-flipped file is found before anything loads it."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path

from ptrain.files.atomic import write_text

EXPORT_MANIFEST = "ptrain-manifest.json"  # in an export folder; pipeline() and the Hub ignore the extra file


def file_sha256(path: Path, fsync: bool = False) -> str:
    """The file's sha256 (hex), read in chunks (checkpoints can be many GB); with `fsync`, the file is also
    flushed to disk."""
    with open(path, "rb") as handle:
        digest = hashlib.file_digest(handle, "sha256")
        if fsync:
            os.fsync(handle.fileno())
    return digest.hexdigest()


def manifest(folder: Path, exclude: Iterable[str] = (), fsync: bool = False) -> dict[str, dict]:
    """{relative path: {"bytes", "sha256"}} for every file under `folder` (recursively) but the `exclude`d names."""
    skipped = set(exclude)
    entries = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        name = path.relative_to(folder).as_posix()
        if name not in skipped:
            entries[name] = {"bytes": path.stat().st_size, "sha256": file_sha256(path, fsync)}
    return entries


def problems(folder: Path, entries: dict[str, dict], hash_files: bool = True) -> list[str]:
    """What differs between `folder` and its manifest: missing files, sizes, then (with `hash_files`) the sha256
    of the files whose size is right. Files the manifest does not list are not checked."""
    found = []
    for name, expected in entries.items():
        path = folder / name
        if not path.is_file():
            found.append(f"missing {name}")
        elif (size := path.stat().st_size) != expected["bytes"]:
            found.append(f"{name}: {size} bytes, expected {expected['bytes']}")
        elif hash_files and file_sha256(path) != expected["sha256"]:
            found.append(f"{name}: sha256 differs")
    return found


def write_export_manifest(folder: Path) -> None:
    """The manifest of an export folder being written (its temporary copy), as its own file, written last."""
    (folder / EXPORT_MANIFEST).write_text(json.dumps({"files": manifest(folder, [EXPORT_MANIFEST])}, indent=2))


def add_to_export_manifest(folder: Path, names: Iterable[str]) -> None:
    """Record files written into an export after it was swapped in (its model card); no-op without a manifest."""
    path = folder / EXPORT_MANIFEST
    if not path.is_file():
        return
    entries = json.loads(path.read_text())["files"]
    for name in names:
        entries[name] = {"bytes": (folder / name).stat().st_size, "sha256": file_sha256(folder / name)}
    write_text(path, json.dumps({"files": entries}, indent=2))


def export_problems(folder: Path) -> list[str] | None:
    """What is wrong with an export folder; None when it has no manifest (exported before ptrain wrote them)."""
    path = folder / EXPORT_MANIFEST
    if not path.is_file():
        return None
    try:
        entries = json.loads(path.read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        return [f"{EXPORT_MANIFEST}: unreadable ({type(err).__name__})"]
    return problems(folder, entries)
