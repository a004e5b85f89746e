"""Resuming a run launched on several machines (nodes): a checkpoint that every process can load, and a warning at
the start when some node does not see the run folder (the run, and its checkpoints, are then on the main node's
disk only)."""

from __future__ import annotations

from pathlib import Path

from accelerate import Accelerator
from accelerate.utils import RNG_STATE_NAME, gather_object

from ptrain.config import Config
from ptrain.errors import CheckpointError
from ptrain.runtime.nodes import process_name
from ptrain.training.checkpointing.checkpoint import Checkpoint, required_files
from ptrain.training.checkpointing.resume import find_resume

SHARED_OUTPUT = "give every node the same output_dir on a disk they share"


def resume_on_every_node(cfg: Config, accelerator: Accelerator) -> Checkpoint | None:
    """find_resume (the main process picks the checkpoint, every process gets it), then every process's check that
    it reads what it will load from it: the shared state and its own RNG state. When one cannot (its node does not
    see the main node's output folder), every process refuses in one line, rather than that one failing alone
    while its peers wait for it, or resuming without its RNG state (Accelerate skips a missing one silently)."""
    checkpoint = find_resume(cfg, accelerator)
    if checkpoint is None or accelerator.num_processes == 1:
        return checkpoint
    reports = gather_object([unreadable(checkpoint, accelerator.process_index)])
    for rank, report in enumerate(reports):
        if report:
            raise CheckpointError(
                f"train.resume: {process_name(rank, len(reports))} cannot read {report}, the checkpoint rank 0 "
                f"resumes; every process restores it with its own RNG state, so resuming on several nodes needs "
                f"an output folder they all see: {SHARED_OUTPUT}"
            )
    return checkpoint


def unreadable(checkpoint: Checkpoint, rank: int) -> str | None:
    """What of a checkpoint process `rank` cannot find of all it loads (Accelerate's state, ptrain's meta.json,
    its own RNG state), in words; None when it finds it all."""
    path = checkpoint.path
    if not path.is_dir():
        return str(path)
    needed = [*required_files(checkpoint.meta), f"{RNG_STATE_NAME}_{rank}.pkl"]
    missing = [name for name in needed if not (path / name).is_file()]
    return f"{', '.join(missing)} in {path}" if missing else None


def warn_unless_shared(accelerator: Accelerator, run_dir: Path) -> None:
    """Say at the start, on every node, when some process does not see the run folder the main process made: the
    run and its checkpoints are then on the main node's disk only, and train.resume will be refused."""
    if accelerator.num_processes == 1:
        return
    blind = [rank for rank, sees in enumerate(gather_object([run_dir.is_dir()])) if not sees]
    if blind:
        world = accelerator.num_processes
        accelerator.print(
            f"ptrain: warning: {', '.join(process_name(rank, world) for rank in blind[:3])} cannot see the run "
            f"folder {run_dir}: the run is written on the main node's disk only, and train.resume will be refused; "
            f"to resume runs on several nodes, {SHARED_OUTPUT}"
        )
