"""Run folders: runs/<name>/<timestamp>/ (or a fixed `run_dir`, or a resumed run's folder), made and locked once
for all processes before anything is written into them."""

from __future__ import annotations

import time
from pathlib import Path

from ptrain.errors import ConfigError
from ptrain.files.lock import RunLock, acquire
from ptrain.runtime.agreement import decided_by_main

RUNNING = "running.json"  # while a process trains in the folder: its pid, host, start and command, beside the
# running.lock it holds (files/lock.py)


def claim_run_dir(
    accelerator, output_dir: str, name: str, fixed: str | None = None, resumed: Path | None = None
) -> tuple[Path, RunLock]:
    """The run folder and its lock, taken by the main process: `resumed` (a resumed run's folder), the fixed
    `run_dir`, or a new runs/<name>/<timestamp>/. Every process gets the same folder or the same one-line error
    (the others would otherwise wait for the main process in a collective until the launcher kills them)."""
    held: list[RunLock] = []  # the main process's lock (a file descriptor: it stays on that process)

    def claim() -> str:
        run_dir, lock = _claim(output_dir, name, fixed, resumed)
        held.append(lock)
        return str(run_dir)

    run_dir = Path(decided_by_main(accelerator, claim))
    return run_dir, held[0] if held else RunLock(run_dir / RUNNING)


def _claim(output_dir: str, name: str, fixed: str | None, resumed: Path | None) -> tuple[Path, RunLock]:
    if resumed is not None:
        run_dir = resumed
    else:
        run_dir = Path(fixed) if fixed else Path(output_dir) / name
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            if not fixed:
                run_dir = _new_timestamp_dir(run_dir)
        except OSError as err:
            raise ConfigError(f"output_dir {output_dir}: cannot create {run_dir} ({err.strerror})") from None
    lock = acquire(run_dir / RUNNING, f"run folder {run_dir}")
    if fixed and resumed is None and (run_dir / "config.yaml").exists():
        lock.release()
        raise ConfigError(
            f"run_dir {fixed} already holds a run; continue it with train.resume=auto, or choose another folder"
        )
    return run_dir, lock


def _new_timestamp_dir(base: Path) -> Path:
    """base/<timestamp>/, or <timestamp>-2, -3, ...: mkdir fails for all but one of the runs that start in the
    same second (a check for the name first would let two of them take it)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir, number = base / stamp, 1
    while True:
        try:
            run_dir.mkdir()
            return run_dir
        except FileExistsError:
            number += 1
            run_dir = base / f"{stamp}-{number}"
