"""Resumable checkpoints: written atomically, found through their metadata, pruned only after a good write.

A checkpoint folder holds Accelerate's state (model as safetensors, optimizer, scheduler, grad scaler, the
RNG states of every process) and `meta.json` (ptrain's loop state and meter). It is written as `NAME.tmp`,
flushed, renamed to NAME, then marked by an empty `complete` file: only marked folders are resumed from.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from ptrain.errors import CheckpointError
from ptrain.outputs.atomic import move_folder

CHECKPOINTS = "checkpoints"
META = "meta.json"
MARKER = "complete"
REQUIRED_FILES = ("model.safetensors", "optimizer.bin", "scheduler.bin", META)


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    meta: dict

    @property
    def run_dir(self) -> Path:
        return self.path.parent.parent

    @property
    def step(self) -> int:
        return self.meta["loop"]["global_step"]


def save_checkpoint(accelerator, run_dir: Path, meta: dict, keep: int, best_step: int | None) -> Path:
    """Every process writes its part; the main process publishes the folder and prunes old ones."""
    step = meta["loop"]["global_step"]
    final = run_dir / CHECKPOINTS / f"step-{step:08d}"
    tmp = final.with_name(final.name + ".tmp")
    try:
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(tmp))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            (tmp / META).write_text(json.dumps({**meta, "created": time.time()}, indent=2))
            _fsync_tree(tmp)
            move_folder(tmp, final)
            (final / MARKER).touch()
            _fsync_dir(final.parent)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        previous = latest_complete(run_dir)
        kept = f"the previous checkpoint {previous.path} is still valid" if previous else "no earlier checkpoint exists"
        raise CheckpointError(
            f"checkpoint at step {step} could not be written to {final} ({err.strerror or err}); {kept}. "
            "Free space (or fix the folder), then continue with train.resume=auto"
        ) from None
    if accelerator.is_main_process:
        prune(run_dir, keep, best_step)
    accelerator.wait_for_everyone()
    return final


def complete_checkpoints(run_dir: Path) -> list[Checkpoint]:
    """Marked checkpoints of one run, oldest first by the step in their metadata."""
    found = []
    for path in (run_dir / CHECKPOINTS).glob("*"):
        if path.is_dir() and (path / MARKER).is_file():
            found.append(Checkpoint(path, read_meta(path)))
    return sorted(found, key=lambda c: c.step)


def latest_complete(run_dir: Path) -> Checkpoint | None:
    found = complete_checkpoints(run_dir)
    return found[-1] if found else None


def read_meta(path: Path) -> dict:
    try:
        return json.loads((path / META).read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(
            f"checkpoint {path} is damaged ({META}: {err}); resume from another one or delete it"
        ) from None


def prune(run_dir: Path, keep: int, best_step: int | None) -> None:
    """Keep the newest `keep` checkpoints and the one taken at the best evaluation's step."""
    found = complete_checkpoints(run_dir)
    for old in found[:-keep] if keep else found:
        if old.step != best_step:
            shutil.rmtree(old.path, ignore_errors=True)
    for stale in (run_dir / CHECKPOINTS).glob("*.tmp"):  # left by a crash during a write
        shutil.rmtree(stale, ignore_errors=True)


def resolve_resume(resume: str, output_dir: str, name: str, run_dir: str | None = None) -> Checkpoint | None:
    """`auto`: the newest complete checkpoint of any run of this config name (of `run_dir` when the config fixes
    it); else a checkpoint or run folder."""
    if resume == "auto":
        runs = [Path(run_dir)] if run_dir else [run for run in (Path(output_dir) / name).glob("*") if run.is_dir()]
        candidates = [c for run in runs for c in complete_checkpoints(run)]
        newest = max(candidates, key=lambda c: c.meta["created"], default=None)
        if newest is not None:
            check_complete(newest)
        return newest
    path = Path(resume).expanduser()
    if (path / META).is_file() or (path / MARKER).is_file():
        checkpoint = Checkpoint(path, read_meta(path))
    elif path.is_dir() and latest_complete(path) is not None:
        checkpoint = latest_complete(path)
    else:
        raise CheckpointError(
            f"train.resume={resume}: no complete checkpoint there; give a run folder or a checkpoint folder"
        )
    check_complete(checkpoint)
    return checkpoint


def check_complete(checkpoint: Checkpoint) -> None:
    missing = [name for name in (*REQUIRED_FILES, MARKER) if not (checkpoint.path / name).is_file()]
    if missing:
        raise CheckpointError(
            f"checkpoint {checkpoint.path} is damaged (missing {', '.join(missing)}); "
            "resume from an earlier checkpoint with train.resume=PATH, or delete this one"
        )


def _fsync_tree(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
