"""glibc's allocator, set for training: a step's freed tensors are reused by the next, not page-faulted back.

By default glibc serves large allocations (above a threshold that adapts up to 32 MiB) with fresh mmap pages
and returns freed heap memory to the kernel, so a training step on the CPU re-faults most of its activation and
gradient memory from the kernel every time (MiniLM's 47 MB embedding gradient alone is 11,700 page faults).
A fixed 256 MiB mmap threshold and a 2 GiB trim threshold keep that memory in the heap for the next step. The
mathematics is untouched; the resident set stays at the step's peak instead of dropping between steps.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 256 * 2**20
TRIM_THRESHOLD = 2**31 - 1  # mallopt takes a C int: the largest, 2 GiB


def keep_freed_memory() -> bool:
    """Apply the settings (Linux with glibc only; PTRAIN_GLIBC_TUNING=0 leaves the allocator alone)."""
    if not sys.platform.startswith("linux") or os.environ.get("PTRAIN_GLIBC_TUNING", "1") == "0":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others: nothing to tune
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
