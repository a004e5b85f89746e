"""Run folders and exports: written atomically (temporary name, then rename) so nothing is left half-done."""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from contextlib import contextmanager
from pathlib import Path

from accelerate.utils import broadcast_object_list

from ptrain.errors import ConfigError


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


def export_model(accelerator, model, tokenizer, out_dir: Path) -> None:
    """save_pretrained of the unwrapped model, its tokenizer and label maps: pipeline() loads the folder.

    Every process must call this: get_state_dict gathers shards under FSDP and ZeRO-3.
    """
    state_dict = accelerator.get_state_dict(model)
    if accelerator.is_main_process:
        tmp = out_dir.with_name(out_dir.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        accelerator.unwrap_model(model).save_pretrained(tmp, state_dict=state_dict)
        tokenizer.save_pretrained(tmp)
        _replace(tmp, out_dir)
    accelerator.wait_for_everyone()


def write_json(path: Path, payload: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as handle:
        json.dump(payload, handle, indent=2)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _replace(tmp: Path, out_dir: Path) -> None:
    """Swap a finished folder in; the old one goes only after the new one is complete."""
    old = out_dir.with_name(out_dir.name + ".old")
    if out_dir.exists():
        os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    shutil.rmtree(old, ignore_errors=True)
