"""What the device can do and what a run uses: the hardware, its measured matmul peak, model FLOPs per token,
peak memory."""

from __future__ import annotations

import threading
import time

import psutil
import torch

from ptrain.runtime.precision import cpu_name, cpu_native_bf16

EMBEDDING_TYPES = (torch.nn.Embedding,)


def linear_peak_flops(
    device: torch.device, dtype: torch.dtype, shapes: list[tuple[int, int, int]], seconds_per_shape: float = 0.25
) -> float:
    """The best FLOP/s of F.linear over (rows, in, out) shapes, under autocast to `dtype` as a model's Linear
    layers run it: the ceiling MFU is measured against (at least two timed calls per shape, however slow)."""
    best = 0.0
    for rows, features, out in shapes:
        x, weight = torch.randn(rows, features, device=device), torch.randn(out, features, device=device)
        with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            torch.nn.functional.linear(x, weight)  # warm-up: kernel selection, weight packing
            timed, deadline = 0, time.perf_counter() + seconds_per_shape
            while timed < 2 or time.perf_counter() < deadline:
                _sync(device)
                start = time.perf_counter()
                torch.nn.functional.linear(x, weight)
                _sync(device)
                best, timed = max(best, 2 * rows * features * out / (time.perf_counter() - start)), timed + 1
    return best


def linear_shapes(model: torch.nn.Module, rows: list[int]) -> list[tuple[int, int, int]]:
    """(rows, in_features, out_features) for every distinct Linear layer of the model and every row count."""
    layers = {(m.in_features, m.out_features) for m in model.modules() if isinstance(m, torch.nn.Linear)}
    return [(count, features, out) for count in sorted(set(rows)) for features, out in sorted(layers)]


def describe_hardware(device: torch.device) -> dict:
    """What a benchmark ran on: CPU model, torch's CPU kernel level, native bf16, threads, and the GPU if any."""
    info = {
        "cpu": cpu_name(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_native_bf16": cpu_native_bf16(),
        "threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def hardware_line(hardware: dict) -> str:
    """describe_hardware's dict as one line of a report."""
    bf16 = "native bf16" if hardware["cpu_native_bf16"] else "no native bf16"
    gpu = f"; GPU {hardware['gpu']}" if "gpu" in hardware else ""
    return f"{hardware['cpu']} ({hardware['cpu_capability']}, {bf16}) x {hardware['threads']} threads{gpu}"


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
