"""Run folders: runs/<name>/<timestamp>/ made once for all processes, and the marker of a run in progress."""

from __future__ import annotations

import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path

from accelerate.utils import broadcast_object_list

from ptrain.errors import ConfigError
from ptrain.outputs.atomic import write_json


def create_run_dir(accelerator, output_dir: str, name: str, fixed: str | None = None) -> Path:
    """runs/<name>/<timestamp>/ (or the fixed folder `run_dir`), made by the main process; every process gets
    the same path."""
    path = [None]
    if accelerator.is_main_process:
        run_dir = Path(fixed) if fixed else _new_timestamp_dir(Path(output_dir) / name)
        if fixed and (run_dir / "config.yaml").exists():
            raise ConfigError(
                f"run_dir {fixed} already holds a run; continue it with train.resume=auto, or choose another folder"
            )
        try:
            run_dir.mkdir(parents=True, exist_ok=bool(fixed))
        except OSError as err:
            raise ConfigError(f"output_dir {output_dir}: cannot create {run_dir} ({err.strerror})") from None
        path = [str(run_dir)]
    if accelerator.num_processes > 1:
        broadcast_object_list(path)
    return Path(path[0])


def _new_timestamp_dir(base: Path) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir, n = base / stamp, 1
    while run_dir.exists():
        n += 1
        run_dir = base / f"{stamp}-{n}"
    return run_dir


RUNNING = "running.json"  # present while a process trains in the folder; `ptrain runs` checks its pid


@contextmanager
def running_marker(run_dir: Path, enabled: bool):
    """Mark the run folder as in use by this process (main process only) until training returns or raises."""
    if enabled:
        write_json(run_dir / RUNNING, {"pid": os.getpid(), "host": socket.gethostname()})
    try:
        yield
    finally:
        if enabled:
            (run_dir / RUNNING).unlink(missing_ok=True)
