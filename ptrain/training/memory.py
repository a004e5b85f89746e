"""The peak memory of each process of a run, for metrics.json and the closing line: on a GPU its peak allocation by
torch, on the CPU the process's peak resident set (ru_maxrss: everything it held, the libraries and the data too)."""

from __future__ import annotations

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


def peaks_of_every_process(accelerator) -> list[float]:
    """Each process's peak, by process index (every process must call this: a gather)."""
    peak = round(peak_memory_gib(accelerator.device), 3)
    return gather_object([peak]) if accelerator.num_processes > 1 else [peak]
