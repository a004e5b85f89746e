"""Runs launched on several machines (nodes): which node a process is on, and caches filled node by node."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from functools import cache

import torch
from accelerate import Accelerator

# How long the other processes wait for one that writes a cache (tokenizing a large data set can take minutes):
# torch's own default for gloo, rather than train.collective_timeout_seconds.
CACHE_WAIT = timedelta(minutes=30)


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
