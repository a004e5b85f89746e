"""What the device can do and what a run uses: measured matmul peak, model FLOPs per token, peak memory."""

from __future__ import annotations

import threading
import time

import psutil
import torch

EMBEDDING_TYPES = (torch.nn.Embedding,)


def matmul_peak_flops(device: torch.device, dtype: torch.dtype, size: int = 2048, seconds: float = 2.0) -> float:
    """FLOP/s of a square matmul in `dtype`, the best of repeated timings: the ceiling MFU is measured against."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(2):
        a @ b  # warm-up: kernel selection, caches
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        _sync(device)
        start = time.perf_counter()
        a @ b
        _sync(device)
        best = max(best, 2 * size**3 / (time.perf_counter() - start))
    return best


def training_flops_per_token(model: torch.nn.Module) -> float:
    """6 x non-embedding parameters (forward 2, backward 4 FLOPs per parameter and token; Kaplan et al.)."""
    return 6 * _non_embedding_parameters(model)


def inference_flops_per_token(model: torch.nn.Module) -> float:
    return 2 * _non_embedding_parameters(model)


def _non_embedding_parameters(model: torch.nn.Module) -> int:
    embedding = {id(p) for m in model.modules() if isinstance(m, EMBEDDING_TYPES) for p in m.parameters()}
    return sum(p.numel() for p in model.parameters() if id(p) not in embedding)


class PeakMemory:
    """Peak process RSS (sampled every 10 ms on a thread) and, on CUDA, the allocator's peak, over a block."""

    def __init__(self, device: torch.device):
        self.device, self.rss_peak, self._stop = device, 0, threading.Event()

    def __enter__(self) -> PeakMemory:
        process = psutil.Process()
        self.rss_peak = process.memory_info().rss
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

        def sample():
            while not self._stop.wait(0.01):
                self.rss_peak = max(self.rss_peak, process.memory_info().rss)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def report(self) -> dict[str, float]:
        values = {"peak_rss_gib": self.rss_peak / 2**30}
        if self.device.type == "cuda":
            values["peak_cuda_gib"] = torch.cuda.max_memory_allocated(self.device) / 2**30
        return values


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
