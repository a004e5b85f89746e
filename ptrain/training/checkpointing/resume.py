"""Resuming: find the checkpoint to continue from, check the config matches, checkpoint a run and restore it; a run
whose files cannot be written (a full disk) stops saying which checkpoint it continues from, and how."""

from __future__ import annotations

import pickle
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml
from accelerate import Accelerator

from ptrain.config import NOT_HYPERPARAMETERS, Config, flatten_config
from ptrain.config.references import comparable_references
from ptrain.errors import CheckpointError, ConfigError, OutputError, first_line
from ptrain.files.leftovers import remove_leftovers
from ptrain.runtime.agreement import decided_by_main
from ptrain.runtime.engine import Engine, engine_of
from ptrain.runtime.lost_peer import resume_command
from ptrain.training.checkpointing.checkpoint import (
    ENGINE,
    Checkpoint,
    marked_folders,
    newest_intact,
    remove_unmarked,
    resolve_resume,
    save_checkpoint,
)
from ptrain.training.meter import TrainMeter
from ptrain.training.run import LoopState, Run
from ptrain.training.source_tokens import fold_source_tokens


def find_resume(cfg: Config, accelerator: Accelerator) -> Checkpoint | None:
    """train.resume's checkpoint, picked by the main process (its files verified once, not once per process, and
    the config compared with the run's); every process gets that checkpoint, or the same one-line refusal."""
    if cfg.train.resume is None:
        return None
    engine = engine_of(accelerator)
    checkpoint = decided_by_main(accelerator, lambda: pick_checkpoint(cfg, engine, accelerator.print))
    if checkpoint is None:
        accelerator.print(
            f"ptrain: train.resume=auto: no checkpoint of '{cfg.name}' under {cfg.run_dir or cfg.output_dir}; "
            "starting a new run"
        )
    return checkpoint


def pick_checkpoint(cfg: Config, engine: Engine, warn) -> Checkpoint | None:
    checkpoint = resolve_resume(cfg.train.resume, cfg.output_dir, cfg.name, cfg.run_dir, warn)
    if checkpoint is not None:
        check_same_config(cfg, checkpoint.run_dir)
        check_same_engine(engine, checkpoint)
    return checkpoint


def check_same_engine(engine: Engine, checkpoint: Checkpoint) -> None:
    """Each engine writes its own kind of state (whole weights, FSDP2's DCP shards, DeepSpeed's ZeRO partitions)."""
    saved = Engine.from_dict(checkpoint.meta.get(ENGINE))
    if not engine.resumes(saved):
        written = saved.describe() if saved else "one process or DDP"
        raise CheckpointError(
            f"train.resume: {checkpoint.path} was written under {written}, and this launch runs {engine.describe()}; "
            "resume it with the accelerate config and process count that wrote it"
        )


def check_same_config(cfg: Config, run_dir: Path) -> None:
    """A resume reproduces the interrupted run only with the same settings."""
    saved = flatten_config(yaml.safe_load((run_dir / "config.yaml").read_text()))
    saved = comparable_references(saved, run_dir)  # user code by content: the run's copies match their originals
    current = comparable_references(flatten_config(cfg.model_dump(mode="json")))
    # a key newer than the run's ptrain is the same setting when it holds its default
    defaults = flatten_config(type(cfg)(name=cfg.name, task=cfg.task, data={}, model={}).model_dump(mode="json"))
    differing = sorted(
        key
        for key in saved.keys() | current.keys()
        if saved.get(key, defaults.get(key)) != current.get(key) and key not in NOT_HYPERPARAMETERS
    )
    if differing:
        raise ConfigError(
            f"train.resume: the config differs from the run being resumed ({run_dir}/config.yaml) in "
            f"{', '.join(differing)}; resume with the same config and overrides, or start a new run"
        )


def restore(
    accelerator: Accelerator, checkpoint: Checkpoint, scheduler, streamed: bool = False
) -> tuple[LoopState, TrainMeter]:
    """Model, optimizer, scheduler, scaler and every process's RNG (Accelerate), then loop state and meter
    (`streamed`: a stream's position is its own state, restored by the recipe after this)."""
    started = time.perf_counter()
    if accelerator.is_main_process:  # the run folder is this process's now: clear what interrupted writes left
        removed = remove_leftovers(checkpoint.run_dir) + remove_unmarked(checkpoint.run_dir)
        if removed:
            accelerator.print(f"ptrain: cleared what interrupted writes left: {', '.join(map(str, removed))}")
    try:  # Accelerate unpickles with weights_only=True: a file with code in it is refused, not run
        accelerator.load_state(str(checkpoint.path))
    except (RuntimeError, ValueError, OSError, pickle.UnpicklingError) as err:
        raise CheckpointError(
            f"checkpoint {checkpoint.path} could not be loaded ({first_line(err)}); resume from another "
            "checkpoint with train.resume=PATH or delete this one"
        ) from None
    state = LoopState.from_dict(checkpoint.meta["loop"])
    state.stop, state.interrupted_by = False, None
    if ENGINE not in checkpoint.meta:
        schedule_at_step(scheduler, state.global_step)
    meter = TrainMeter(accelerator.device)
    meter.load_state_dict(checkpoint.meta["meter"])
    done = f"epoch {state.epoch}, {state.micro_batches_in_epoch} batches of that epoch done (skipped, not loaded)"
    accelerator.print(
        f"ptrain: resumed from {checkpoint.path} in {time.perf_counter() - started:.2f}s: step {state.global_step}"
        + ("" if streamed else f", {done}")
    )
    return state, meter


def schedule_at_step(scheduler, step: int) -> None:
    """A checkpoint written before ptrain recorded its engine (and stepped its schedule once per optimizer step)
    holds, from a run of N processes, a schedule N x its step along: set it at the step, its learning rate
    recomputed, as the run's own schedule would have it."""
    inner = getattr(scheduler, "scheduler", scheduler)  # Accelerate's wrapper holds the torch scheduler
    if inner.last_epoch != step:
        inner.last_epoch = step - 1
        inner.step()


def checkpoint_run(run: Run, state: LoopState, meter: TrainMeter) -> Path | None:
    """A resumable checkpoint of this step: model, optimizer, scheduler and RNG states, the loop state and the
    meter (checkpoint.py writes and prunes it). With train.on_checkpoint_error=warn, a periodic one that cannot be
    written (not the one a preemption stops with) is one warning and None."""
    fold_source_tokens(run, state, meter)  # data.mixture: the loop state holds every process's counts
    previous, state.last_checkpoint_step = state.last_checkpoint_step, state.global_step
    meta = {"loop": state.to_dict(), "meter": meter.state_dict(), "total_steps": run.optim.plan.total_steps}
    meta[ENGINE] = run.runtime.engine.to_dict()
    best_step = state.best.get("step") if state.best else None
    accelerator, run_dir = run.runtime.accelerator, run.outputs.run_dir
    try:
        stream = run.data.stream
        write_stream = (lambda folder: stream.save(folder, accelerator.process_index)) if stream else None
        path = save_checkpoint(accelerator, run_dir, meta, run.cfg.train.keep_checkpoints, best_step, write_stream)
    except OutputError as err:
        if run.cfg.train.on_checkpoint_error == "stop" or state.interrupted_by:
            raise
        state.last_checkpoint_step = previous
        if accelerator.is_main_process:
            print(f"ptrain: warning: {err}; training goes on (train.on_checkpoint_error=warn); {resumable(run_dir)}")
        return None
    run.callbacks.dispatch("on_checkpoint", run, state, checkpoint=path)
    return path


@contextmanager
def stop_resumably(run: Run) -> Iterator[None]:
    """A file of the run that cannot be written (a full disk: a checkpoint, an export, metrics, TensorBoard events)
    ends training in one line (exit code 1): what failed, the intact checkpoint the run continues from and the
    command that continues it."""
    try:
        yield
    except OutputError as err:
        run.outputs.tracker.abandon()
        if not run.runtime.accelerator.is_main_process:
            raise
        raise OutputError(
            f"{err}; {resumable(run.outputs.run_dir)}: free space (or fix the folder), then continue with: "
            f"{resume_command()}"
        ) from None


def resumable(run_dir: Path) -> str:
    """Which checkpoint a resume of this run starts from: the one train.resume=auto picks (the newest intact)."""
    try:
        checkpoint = newest_intact(marked_folders(run_dir), warn=lambda line: None)
    except CheckpointError:  # every one damaged
        checkpoint = None
    if checkpoint is None:
        return "no intact checkpoint was written before: a resume starts a new run"
    return f"a resume continues from the intact checkpoint {checkpoint.path} (step {checkpoint.step})"
