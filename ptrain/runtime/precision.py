"""The floating-point precision of a run: `auto` resolved per device, and the measured bf16 speed behind it.

The rule: bf16 on a CUDA GPU with bf16; fp16 (with loss scaling) on a CUDA GPU without; bf16 on a CPU with
native bf16 matmul instructions (x86 AVX512-BF16 or AMX-BF16, arm64 BF16) where a short measurement, cached
per machine, confirms bf16 matmuls beat fp32; fp32 everywhere else.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ptrain.errors import ConfigError
from ptrain.files.atomic import written_through

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "no": torch.float32}
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # x86; arm64 reports "bf16"
# Environment variables that change which matmul kernels run, so they are part of the cache key.
KERNEL_VARIABLES = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "OMP_NUM_THREADS")
# A MiniLM-sized linear layer (batch 16 x 32 tokens, hidden 384 -> 1536): small enough to time in well
# under a second even where bf16 is emulated (about 27x slower than fp32 on AVX2-only CPUs).
PROBE_SHAPE = (512, 384, 1536)
# fp32 and bf16 are timed alternately this many times and the best of each kept: a burst of load from another job
# then slows both or neither, instead of deciding alone. (Timed once each, a measurement taken while another job ran
# read 0.69x on a Zen 4 that measures 4.9x idle, and the cache kept fp32 for every later run.)
MEASUREMENT_ROUNDS = 5
CACHE_VERSION = "v2"  # bump when the measurement changes: older cached figures are measured again


@dataclass(frozen=True)
class Precision:
    mixed_precision: str  # Accelerate's word: "bf16", "fp16" or "no" (fp32)
    reason: str  # why it was chosen, for the start line
    warning: str | None = None  # an explicit choice that runs slowly on this device

    @property
    def name(self) -> str:
        return "fp32" if self.mixed_precision == "no" else self.mixed_precision

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self.mixed_precision]

    def describe(self) -> str:
        return f"{self.name} ({self.reason})"


def resolve_precision(requested: str, device: torch.device | str) -> Precision:
    """train.mixed_precision as a run uses it: `auto` by the rule above, an explicit value as given."""
    device_type = torch.device(device).type
    if requested == "auto":
        return _auto(device_type)
    warning = _slow_bf16_warning() if requested == "bf16" and device_type == "cpu" else None
    return Precision(requested, "as set", warning)


def _slow_bf16_warning() -> str | None:
    """One line for an explicit bf16 on a CPU where bf16 matmuls run slower than fp32 (no native bf16, or its
    kernels limited, e.g. by ONEDNN_MAX_CPU_ISA), with the measured slowdown."""
    native = cpu_native_bf16()
    speedup = cpu_bf16_speedup()
    if native and speedup > 1:
        return None
    where = "without native bf16" if not native else "whose bf16 kernels run emulated here"
    return (
        f"train.mixed_precision=bf16 on a CPU {where} ({cpu_name()}): a bf16 matmul measured {1 / speedup:.0f}x "
        "slower than fp32 here; train.mixed_precision=auto (or no) trains in fp32"
    )


def _auto(device_type: str) -> Precision:
    if device_type == "cuda":
        if torch.cuda.is_bf16_supported():
            return Precision("bf16", "auto: CUDA GPU with bf16")
        return Precision("fp16", "auto: CUDA GPU without bf16, fp16 with loss scaling")
    if device_type != "cpu":
        return Precision("no", f"auto: no mixed precision rule for {device_type}")
    if not cpu_native_bf16():
        return Precision("no", "auto: no native bf16 on this CPU")
    speedup = cpu_bf16_speedup()
    if speedup <= 1:
        return Precision("no", f"auto: this CPU has native bf16 but a bf16 matmul measured {speedup:.2f}x fp32")
    return Precision("bf16", f"auto: native bf16 on this CPU, bf16 matmul {speedup:.1f}x fp32")


def cpu_capabilities() -> dict:
    """torch's cpuinfo flags (torch >= 2.8); on older torch, the flags of /proc/cpuinfo."""
    if hasattr(torch.cpu, "get_capabilities"):
        return dict(torch.cpu.get_capabilities())
    flags = set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                flags.update(line.split(":", 1)[1].split())
    return {flag: True for flag in flags}


def cpu_native_bf16() -> bool:
    """Whether the CPU has bf16 matmul instructions (not the AVX-512 or AVX2 emulation oneDNN falls back to)."""
    caps = cpu_capabilities()
    if platform.machine().lower() in ("arm64", "aarch64"):
        return bool(caps.get("bf16") or caps.get("sve_bf16"))
    return any(caps.get(flag) for flag in NATIVE_BF16_FLAGS)


def cpu_name() -> str:
    """The CPU model name as lscpu prints it."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return str(cpu_capabilities().get("cpu_name") or platform.processor() or platform.machine())


def cpu_bf16_speedup() -> float:
    """fp32 time / bf16-autocast time of one MiniLM-sized linear layer on this CPU (above 1: bf16 is faster).
    Measured once per machine, thread count and torch version (alternating rounds, MEASUREMENT_ROUNDS), then read
    from the cache."""
    path = _cache_path()
    with contextlib.suppress(OSError, ValueError, KeyError):
        return float(json.loads(path.read_text())["bf16_speedup"])
    fp32 = bf16 = float("inf")
    for _ in range(MEASUREMENT_ROUNDS):
        fp32 = min(fp32, _linear_seconds(torch.float32))
        bf16 = min(bf16, _linear_seconds(torch.bfloat16))
    speedup = fp32 / bf16
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        with written_through(path, path.with_name(f"{path.name}.{os.getpid()}.tmp")) as tmp:
            tmp.write_text(json.dumps({"bf16_speedup": speedup, "cpu": cpu_name(), "threads": torch.get_num_threads()}))
    return speedup


def _linear_seconds(dtype: torch.dtype, repeats: int = 3) -> float:
    """Best time of F.linear under CPU autocast in `dtype`: the kernels a model's Linear layers run."""
    rows, features, out = PROBE_SHAPE
    generator = torch.Generator().manual_seed(0)
    x, weight = torch.randn(rows, features, generator=generator), torch.randn(out, features, generator=generator)
    best = float("inf")
    with torch.no_grad(), torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
        torch.nn.functional.linear(x, weight)  # warm-up: kernel selection, weight packing
        for _ in range(repeats):
            start = time.perf_counter()
            torch.nn.functional.linear(x, weight)
            best = min(best, time.perf_counter() - start)
    return best


def _cache_path() -> Path:
    caps = sorted(key for key, value in cpu_capabilities().items() if value is True)
    parts = [CACHE_VERSION, cpu_name(), *caps, torch.__version__, str(torch.get_num_threads())]
    parts += [f"{name}={os.environ.get(name, '')}" for name in KERNEL_VARIABLES]
    digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:16]
    root = Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser()
    return root / "ptrain" / "hardware" / f"bf16-speed-{digest}.json"


def inference_precision(requested: str = "auto") -> Precision:
    """The precision `ptrain predict` and `generate` run an export in on the CPU (--precision, default auto)."""
    if requested == "fp16":
        raise ConfigError(
            "--precision fp16 needs a GPU; ptrain predict and generate run on the CPU: use auto, bf16 or no"
        )
    return resolve_precision(requested, "cpu")


def autocast(precision: Precision, device: torch.device | str = "cpu"):
    """Autocast to the precision's dtype on the device (nothing for fp32)."""
    device_type = torch.device(device).type
    if precision.mixed_precision == "no":
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=precision.dtype)


def resolve_config_precision(cfg):
    """A config whose train.mixed_precision is resolved for this machine's device, and the Precision behind it."""
    precision = resolve_precision(cfg.train.mixed_precision, "cuda" if torch.cuda.is_available() else "cpu")
    train = cfg.train.model_copy(update={"mixed_precision": precision.mixed_precision})
    return cfg.model_copy(update={"train": train}), precision
