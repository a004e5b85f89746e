"""`ptrain check-run RUN`: every checkpoint and export of a run checked against the manifest written with it, one
line each (intact, damaged and what, or incomplete), and what interrupted writes left behind."""

from __future__ import annotations

from pathlib import Path

from ptrain.errors import ConfigError
from ptrain.files.integrity import export_problems
from ptrain.files.leftovers import leftovers
from ptrain.runtime.engine import Engine
from ptrain.training.checkpointing.checkpoint import (
    ENGINE,
    FILES,
    checkpoint_problems,
    marked_folders,
    read_meta,
    unmarked_folders,
)

EXPORTS = ("best", "final", "adapter")


def check_run(run_dir: Path) -> int:
    """Print one line per item; 0 when every one is intact, 1 otherwise."""
    if not (run_dir / "config.yaml").is_file():
        raise ConfigError(f"check-run {run_dir}: not a run folder (no config.yaml); give runs/NAME/TIMESTAMP")
    lines = [*checkpoint_lines(run_dir), *export_lines(run_dir), *leftover_lines(run_dir)]
    for path, status in lines:
        print(f"{path}: {status}")
    bad = sum(not status.startswith(("intact", "unverified")) for _, status in lines)
    print(f"ptrain: {run_dir}: {len(lines) - bad} of {len(lines)} intact" + (f", {bad} not" if bad else ""))
    return 1 if bad else 0


def checkpoint_lines(run_dir: Path) -> list[tuple[Path, str]]:
    lines = []
    for path in marked_folders(run_dir):
        found = checkpoint_problems(path)
        if found:
            lines.append((path, f"damaged: {', '.join(found)}"))
        else:
            meta = read_meta(path)
            checked = f"{len(meta[FILES])} files checked" if FILES in meta else "written before manifests: unchecked"
            engine = Engine.from_dict(meta.get(ENGINE))
            written = f", {engine.describe()}" if engine else ""
            lines.append((path, f"intact (step {meta['loop']['global_step']}{written}, {checked})"))
    lines += [
        (path, "incomplete: never marked complete (removed by the next resume)") for path in unmarked_folders(run_dir)
    ]
    return lines


def export_lines(run_dir: Path) -> list[tuple[Path, str]]:
    lines = []
    for name in EXPORTS:
        folder = run_dir / name
        if folder.is_dir():
            found = export_problems(folder)
            if found is None:
                lines.append((folder, "unverified (no manifest: exported before ptrain wrote them)"))
            else:
                lines.append((folder, f"damaged: {', '.join(found)}" if found else "intact"))
    return lines


def leftover_lines(run_dir: Path) -> list[tuple[Path, str]]:
    return [
        (
            path,
            "incomplete: "
            + ("an unfinished write" if path.suffix == ".tmp" else "an interrupted swap")
            + " (cleared by the next resume)",
        )
        for path in leftovers(run_dir)
    ]
