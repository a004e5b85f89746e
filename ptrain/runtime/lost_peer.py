"""A launched run that lost one of its processes (a killed or frozen node, a cut network): recognised from the
error torch.distributed raised in a collective, and told in one line naming the peer and how to continue."""

from __future__ import annotations

import os
import re
import shlex
import sys
from collections.abc import Mapping

from ptrain.runtime.nodes import process_name

# What gloo, NCCL and the c10d store say when the other end went away or fell silent; matched only in errors
# that come from one of them, so a RuntimeError of the user's or of a model is never taken for one.
FROM_THE_PROCESS_GROUP = ("gloo", "nccl", "c10d")
PEER_CLOSED = ("connection closed by peer", "connection reset by peer", "broken pipe", "remote process exited")
PEER_SILENT = ("timed out", "timeout", "pair closure")
GLOO_PEER = re.compile(r"by peer \[([^\]]+)\]:(\d+)")
GLOO_WAIT = re.compile(r"Timed out waiting (\d+)ms")


def lost_peer_message(err: BaseException, command: str = "train") -> str | None:
    """The one-line account of a collective of `ptrain COMMAND` that failed because another process died or
    stopped answering, or None when `err` is anything else (which must then propagate as the bug it may be)."""
    distributed = sys.modules.get("torch.distributed")
    if distributed is None or not distributed.is_available() or not distributed.is_initialized():
        return None
    what = failure(err, distributed.DistError)
    if what is None:
        return None
    rank, world = distributed.get_rank(), distributed.get_world_size()
    return (
        f"lost {peer_name(rank, world, GLOO_PEER.search(str(err)))}: {what}; this process, "
        f"{process_name(rank, world)}, stops. {how_to_continue(command)}"
    )


def failure(err: BaseException, dist_error: type) -> str | None:
    """What happened to the peer, from the process group's error; None for any other error."""
    if not isinstance(err, RuntimeError):  # torch.distributed's own errors (DistError) are RuntimeErrors too
        return None
    text = str(err)
    lowered = text.lower()
    if not (isinstance(err, dist_error) or any(word in lowered for word in FROM_THE_PROCESS_GROUP)):
        return None
    if any(phrase in lowered for phrase in PEER_CLOSED):
        return "its connection closed (the process, its machine or the network went down)"
    if any(phrase in lowered for phrase in PEER_SILENT):
        waited = GLOO_WAIT.search(text)
        seconds = f" for {int(waited.group(1)) / 1000:g} s" if waited else ""
        return f"it did not answer{seconds} (train.collective_timeout_seconds: a stopped process or a cut network)"
    return None


def how_to_continue(command: str, environ: Mapping[str, str] = os.environ) -> str:
    """The command to run on every node: `ptrain train` continues from its newest checkpoint."""
    launcher = "accelerate launch" if any(name.startswith("ACCELERATE_") for name in environ) else "torchrun"
    if command != "train":
        return f"Start every node's launch command again ({launcher} ... -m ptrain {command} ...)"
    return (
        "Continue from the newest checkpoint: start every node's launch command again with train.resume=auto, "
        f"e.g. {launcher} ... -m {resume_command()}"
    )


def peer_name(rank: int, world: int, address: re.Match | None) -> str:
    """The lost process: its rank and node when there is only one other, else 'a process'; gloo's address of it."""
    at = f" at {address.group(1)}:{address.group(2)}" if address else ""
    if world == 2:
        return f"{process_name(1 - rank, world)}{at}"
    return f"a process of the group{at}"


def resume_command() -> str:
    """The command line that continues this run: the same arguments plus train.resume=auto."""
    args = [a for a in sys.argv[1:] if not a.startswith("train.resume=")]
    return shlex.join(["ptrain", *args, "train.resume=auto"])
