"""The memory of each process of a run, for metrics.json and the closing line: its peak (on a GPU torch's peak
allocation, on the CPU the peak resident set, ru_maxrss: everything it held, the libraries and the data too) and the
tensor memory it holds between optimizer steps (weights or their shards, optimizer state, an engine's buffers: what
sharding divides)."""

from __future__ import annotations

import gc
import resource
import sys

import torch
from accelerate.utils import gather_object


def peak_memory_gib(device: torch.device) -> float:
    """This process's peak, in GiB."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / (2**30 if sys.platform == "darwin" else 2**20)


def held_tensor_gib() -> float:
    """The bytes of every tensor storage this process holds now, once each (views share theirs), in GiB: between
    optimizer steps, the weights (or their shards), the optimizer state and the engine's own buffers."""
    storages = {}
    for obj in gc.get_objects():
        if isinstance(obj, torch.Tensor) and not obj.is_meta and type(obj) in (torch.Tensor, torch.nn.Parameter):
            storage = obj.untyped_storage()
            storages[(storage.device, storage.data_ptr())] = storage.nbytes()
    return sum(storages.values()) / 2**30


def of_every_process(accelerator, gib: float) -> list[float]:
    """A figure of each process, by process index (every process must call this: a gather)."""
    value = round(gib, 3)
    return gather_object([value]) if accelerator.num_processes > 1 else [value]
