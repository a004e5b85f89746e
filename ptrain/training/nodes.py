"""Runs launched on several machines (nodes): caches filled node by node, one checkpoint that every process
resumes from, and a warning when the nodes do not share the output folder (the run, and its checkpoints, are
then on the main node only)."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from functools import cache
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import RNG_STATE_NAME, gather_object

from ptrain.config import Config
from ptrain.errors import CheckpointError
from ptrain.training.checkpoint import REQUIRED_FILES, Checkpoint

# How long the other processes wait for one that writes a cache (tokenizing a large data set can take minutes):
# torch's own default for gloo, rather than train.collective_timeout_seconds.
CACHE_WAIT = timedelta(minutes=30)
SHARED_OUTPUT = "give every node the same output_dir on a disk they share"


def node_of(rank: int, world: int) -> str:
    """'node N of M': launchers number the processes node by node, LOCAL_WORLD_SIZE of them on each."""
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", "0") or 0) or world
    return f"node {rank // per_node} of {max(world // per_node, 1)}"


def process_name(rank: int, world: int) -> str:
    return f"rank {rank} ({node_of(rank, world)})"


@contextmanager
def caches_first(accelerator: Accelerator) -> Iterator[None]:
    """Let the main process fill the caches the block writes first (tokenized data), then the first process of
    each other node (into its node's cache folder when the nodes do not share one, else reading the main's), then
    the rest, which read their node's caches: no two processes write one cache at once.

    Every process passes two barriers: the main after its block, the first process of another node on either
    side of its block, the others before theirs. When the block raises, the barriers are still passed, so the
    other processes go on (and meet the same error themselves) instead of waiting for this one."""
    if accelerator.num_processes == 1:
        yield
        return
    node_first = accelerator.is_local_main_process and not accelerator.is_main_process
    before = 0 if accelerator.is_main_process else (1 if node_first else 2)
    for _ in range(before):
        torch.distributed.barrier(group=cache_wait_group())
    try:
        yield
    finally:
        for _ in range(2 - before):
            torch.distributed.barrier(group=cache_wait_group())


@cache
def cache_wait_group():
    """Every process, in a gloo group with the CACHE_WAIT timeout (beside NCCL too: barriers need no GPU)."""
    return torch.distributed.new_group(backend="gloo", timeout=CACHE_WAIT)


def one_checkpoint(accelerator: Accelerator, cfg: Config, checkpoint: Checkpoint | None) -> Checkpoint | None:
    """The checkpoint train.resume found, once every process found the same one with all it reads there (the
    shared state and its own RNG state); otherwise every process refuses in one line, before any of them goes
    its own way (one resuming while another starts a new run would pair unrelated collectives)."""
    if accelerator.num_processes == 1 or cfg.train.resume is None:
        return checkpoint
    searched = cfg.run_dir or cfg.output_dir
    views = gather_object([checkpoint_view(checkpoint, accelerator.process_index, searched)])
    problem = disagreement(views)
    if problem:
        raise CheckpointError(
            f"train.resume: {problem}; every process restores one checkpoint and reads its own RNG state there, "
            f"so resuming on several nodes needs an output folder they all see: {SHARED_OUTPUT}"
        )
    return checkpoint


def checkpoint_view(checkpoint: Checkpoint | None, rank: int, searched: str) -> dict:
    """What one process found where it searched: the checkpoint (its metadata's digest names it on every node) and
    the files of it this process would read but cannot."""
    if checkpoint is None:
        return {"searched": searched, "path": None}
    needed = [*REQUIRED_FILES, f"{RNG_STATE_NAME}_{rank}.pkl"]
    return {
        "searched": searched,
        "path": str(checkpoint.path),
        "step": checkpoint.step,
        "digest": hashlib.sha256(json.dumps(checkpoint.meta, sort_keys=True).encode()).hexdigest(),
        "missing": [name for name in needed if not (checkpoint.path / name).is_file()],
    }


def disagreement(views: list[dict]) -> str | None:
    """The first difference between what the main process (rank 0) and each other process found, in words."""
    main, world = views[0], len(views)
    for rank, view in enumerate(views):
        who = process_name(rank, world)
        if main["path"] is None and view["path"] is not None:
            return f"{who} finds {view['path']} (step {view['step']}) but rank 0 none under {main['searched']}"
        if main["path"] is not None and view["path"] is None:
            return f"{who} finds no checkpoint under {view['searched']}, but rank 0 resumes {main['path']}"
        if view["path"] is None:
            continue
        if view["digest"] != main["digest"]:
            return f"{who} finds {view['path']} (step {view['step']}), rank 0 {main['path']} (step {main['step']})"
        if view["missing"]:
            return f"{who} cannot read {', '.join(view['missing'])} in {view['path']}"
    return None


def warn_unless_shared(accelerator: Accelerator, cfg: Config, run_dir: Path) -> None:
    """Say at the start, on every node, when some node does not see the run folder under its own output_dir:
    the run and its checkpoints are then on the main node only, and train.resume will be refused."""
    if accelerator.num_processes == 1:
        return
    own = Path(cfg.run_dir or cfg.output_dir).expanduser().resolve()
    sees = run_dir.is_dir() and (own == run_dir.resolve() or own in run_dir.resolve().parents)
    views = gather_object([None if sees else str(own)])
    apart = [(rank, folder) for rank, folder in enumerate(views) if folder is not None]
    if apart:
        listed = ", ".join(f"{process_name(rank, len(views))} has output_dir {folder}" for rank, folder in apart[:3])
        accelerator.print(
            f"ptrain: warning: the run folder {run_dir} is on the main node only ({listed}): this run trains and "
            f"exports, but train.resume will be refused; to resume runs on several nodes, {SHARED_OUTPUT}"
        )
