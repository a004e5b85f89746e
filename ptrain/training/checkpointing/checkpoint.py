"""Resumable checkpoints: written atomically with a manifest of their files, verified before they are trusted, pruned
only after a good write and never down to no intact one.

A checkpoint folder holds Accelerate's state (model and optimizer as the engine writes them: safetensors and a
pickle for one process and DDP, every process's shards under FSDP2 and DeepSpeed; scheduler, grad scaler, the RNG
states of every process) and `meta.json` (ptrain's loop state and meter, the engine, and the size and sha256 of every
other file). It is written as `NAME.tmp`, flushed, renamed to NAME, then marked by an empty `complete` file: only
marked folders whose files match their manifest are resumed from.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ptrain.errors import CheckpointError, OutputError
from ptrain.files.atomic import move_folder, write_reason
from ptrain.files.integrity import manifest, problems
from ptrain.runtime.agreement import on_every_process

CHECKPOINTS = "checkpoints"
META = "meta.json"
MARKER = "complete"
FILES = "files"  # meta.json's manifest: {relative path: {"bytes", "sha256"}} of every file but meta.json and MARKER
ENGINE = "engine"  # meta.json's record of the engine that wrote it (runtime/engine.py's Engine, as a dict)
# The model and optimizer files each engine's Accelerate state must hold (the manifest lists every file besides).
ENGINE_FILES = {
    "fsdp2": ("pytorch_model_fsdp_0/.metadata", "optimizer_0/.metadata"),  # torch.distributed.checkpoint folders
    "deepspeed": ("latest",),  # names the folder of DeepSpeed's save_checkpoint (laid out per ZeRO stage)
}
PLAIN_FILES = ("model.safetensors", "optimizer.bin")  # one process, DDP
REQUIRED_FILES = (*PLAIN_FILES, "scheduler.bin", META)  # of a plain checkpoint


def required_files(meta: dict | None) -> tuple[str, ...]:
    """The files a checkpoint written under meta's engine cannot be without (a plain one when meta says none)."""
    name = ((meta or {}).get(ENGINE) or {}).get("name")
    return (*ENGINE_FILES.get(name, PLAIN_FILES), "scheduler.bin", META)


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


def save_checkpoint(
    accelerator,
    run_dir: Path,
    meta: dict,
    keep: int,
    best_step: int | None,
    write_extra: Callable[[Path], None] | None = None,
) -> Path:
    """Every process writes its part (and, with `write_extra`, its own files into the folder: a stream's state);
    the main process records the manifest, publishes the folder and prunes old ones. A write that fails on any
    process (a full disk) fails on every one (OutputError) and leaves no trace."""
    step = meta["loop"]["global_step"]
    final = run_dir / CHECKPOINTS / f"step-{step:08d}"
    tmp = final.with_name(final.name + ".tmp")
    main, files = accelerator.is_main_process, {}

    def failed(err: BaseException) -> OutputError:
        return OutputError(f"checkpoint at step {step} could not be written to {final} ({write_reason(final, err)})")

    steps = (
        (lambda: _fresh_folder(tmp)) if main else None,
        lambda: accelerator.save_state(str(tmp)),
        *((lambda: write_extra(tmp)),) * (write_extra is not None),  # with none, no step (and no collective)
        (lambda: files.update(_publish(tmp, final, meta))) if main else None,  # main process only
    )
    try:
        for action in steps:
            on_every_process(accelerator, action, failed)
    except OutputError:
        if main:
            shutil.rmtree(tmp, ignore_errors=True)
            if final.is_dir() and not (final / MARKER).is_file():  # renamed, never marked
                shutil.rmtree(final, ignore_errors=True)
        raise
    if main:  # the bytes were hashed as written; their sizes after the rename say nothing was lost on the way
        prune(run_dir, keep, best_step, written=None if problems(final, files, hash_files=False) else final)
    accelerator.wait_for_everyone()
    return final


def _fresh_folder(tmp: Path) -> None:
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)


def _publish(tmp: Path, final: Path, meta: dict) -> dict:
    """Manifest (files flushed to disk as they are hashed) and meta.json, then the rename and the marker."""
    files = manifest(tmp, fsync=True)
    with open(tmp / META, "w") as handle:
        handle.write(json.dumps({**meta, "created": time.time(), FILES: files}, indent=2))
        handle.flush()
        os.fsync(handle.fileno())
    _fsync_dir(tmp)
    move_folder(tmp, final)
    (final / MARKER).touch()
    _fsync_dir(final.parent)
    return files


def marked_folders(run_dir: Path) -> list[Path]:
    """The run's checkpoint folders marked complete, by name (= by step); their files not checked."""
    return sorted(p for p in (run_dir / CHECKPOINTS).glob("*") if p.is_dir() and (p / MARKER).is_file())


def unmarked_folders(run_dir: Path) -> list[Path]:
    """Checkpoint folders renamed but never marked (a write interrupted at its last moment): not resumable."""
    return [
        p
        for p in sorted((run_dir / CHECKPOINTS).glob("*"))
        if p.is_dir() and not p.name.endswith(".tmp") and not (p / MARKER).is_file()
    ]


def remove_unmarked(run_dir: Path) -> list[Path]:
    """Remove the checkpoint folders never marked complete; the ones removed."""
    removed = unmarked_folders(run_dir)
    for path in removed:
        shutil.rmtree(path, ignore_errors=True)
    return removed


def complete_checkpoints(run_dir: Path) -> list[Checkpoint]:
    """Marked checkpoints whose meta.json reads, oldest first by the step in their metadata (files not checked)."""
    found = []
    for path in marked_folders(run_dir):
        try:
            found.append(Checkpoint(path, read_meta(path)))
        except CheckpointError:
            continue  # damaged: checkpoint_problems says so; never resumed, never pruned
    return sorted(found, key=lambda c: c.step)


def latest_complete(run_dir: Path) -> Checkpoint | None:
    found = complete_checkpoints(run_dir)
    return found[-1] if found else None


def read_meta(path: Path) -> dict:
    meta, reason = _load_meta(path)
    if meta is None:
        raise CheckpointError(f"checkpoint {path} is damaged ({reason}); resume from another one or delete it")
    return meta


def _load_meta(path: Path) -> tuple[dict | None, str]:
    """meta.json with its step, or None and why not."""
    try:
        meta = json.loads((path / META).read_text())
        if not isinstance(meta["loop"]["global_step"], int):
            raise TypeError("loop.global_step is not a number")
    except (OSError, ValueError, KeyError, TypeError) as err:
        return None, f"{META}: {err.strerror if isinstance(err, OSError) else f'{type(err).__name__}: {err}'}"
    return meta, ""


def checkpoint_problems(path: Path) -> list[str]:
    """What is wrong with a checkpoint folder, empty when it is intact: an unreadable meta.json, a missing file, a
    file whose size or sha256 differs from the manifest. One written before manifests were recorded (no `files` in
    its meta.json) is checked for its required files only."""
    meta, reason = _load_meta(path)
    missing = [f"missing {name}" for name in (*required_files(meta), MARKER) if not (path / name).is_file()]
    if meta is None:
        return missing or [reason]
    return list(dict.fromkeys(missing + problems(path, meta.get(FILES, {}))))  # a required file listed: once


def prune(run_dir: Path, keep: int, best_step: int | None, written: Path | None = None) -> None:
    """Keep the newest `keep` checkpoints and the one taken at the best evaluation's step, and never delete the last
    intact one. `written`, the checkpoint just written and found whole, is kept and makes that certain at no cost;
    without it, the kept ones are verified newest first and, if none is intact, the newest intact older one is kept
    too (hashing stops at the first intact checkpoint)."""
    found = complete_checkpoints(run_dir)
    kept = [c.path for c in found[-keep:]] + [c.path for c in found if c.step == best_step]
    if written is not None:
        kept.append(written)
    elif not any(not checkpoint_problems(path) for path in sorted(set(kept), reverse=True)):
        older = [c.path for c in reversed(found) if c.path not in kept]
        kept += next(([path] for path in older if not checkpoint_problems(path)), [])
    for old in found:
        if old.path not in kept:
            shutil.rmtree(old.path, ignore_errors=True)
    for stale in (run_dir / CHECKPOINTS).glob("*.tmp"):  # left by a crash during a write
        shutil.rmtree(stale, ignore_errors=True)


def resolve_resume(
    resume: str, output_dir: str, name: str, run_dir: str | None = None, warn: Callable[[str], None] = print
) -> Checkpoint | None:
    """`auto`: the newest intact checkpoint of any run of this config name (of `run_dir` when the config fixes it);
    a run folder: its newest intact one (damaged newer ones are named in one `warn` line); a checkpoint folder:
    that one, refused when damaged."""
    if resume == "auto":
        runs = [Path(run_dir)] if run_dir else [run for run in (Path(output_dir) / name).glob("*") if run.is_dir()]
        return newest_intact([path for run in runs for path in marked_folders(run)], warn)
    path = Path(resume).expanduser()
    if (path / META).is_file() or (path / MARKER).is_file():
        found = checkpoint_problems(path)
        if found:
            raise CheckpointError(
                f"checkpoint {path} is damaged ({', '.join(found)}); resume from an intact one "
                f"(`ptrain check-run {path.parent.parent}` lists them; train.resume=auto takes the newest)"
            )
        return Checkpoint(path, read_meta(path))
    if path.is_dir() and marked_folders(path):
        return newest_intact(marked_folders(path), warn)
    raise CheckpointError(
        f"train.resume={resume}: no complete checkpoint there; give a run folder or a checkpoint folder"
    )


def newest_intact(paths: list[Path], warn: Callable[[str], None]) -> Checkpoint | None:
    """The newest (by creation time) of `paths` whose files are intact; the damaged ones newer than it are named in
    one `warn` line. None when `paths` is empty; CheckpointError when every one is damaged."""
    damaged = []
    for path in sorted(paths, key=_created, reverse=True):
        found = checkpoint_problems(path)
        if not found:
            if damaged:
                named = "; ".join(f"checkpoint {p} is damaged ({', '.join(why)})" for p, why in damaged)
                warn(f"ptrain: warning: {named}; resuming from the older {path}")
            return Checkpoint(path, read_meta(path))
        damaged.append((path, found))
    if damaged:
        named = "; ".join(f"{p} ({', '.join(why)})" for p, why in damaged)
        raise CheckpointError(
            f"train.resume: every checkpoint is damaged: {named}; remove train.resume to start a new run"
        )
    return None


def _created(path: Path) -> float:
    meta, _ = _load_meta(path)
    created = (meta or {}).get("created")
    return float(created) if isinstance(created, (int, float)) else float("inf")  # unreadable: checked first


def _fsync_dir(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
