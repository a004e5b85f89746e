"""Dropout's keep masks on the CPU, drawn by a faster seeded generator: the same Bernoulli distribution.

PyTorch's CPU `bernoulli_` (behind nn.Dropout and SDPA's dropout) draws one double per element from a Mersenne
Twister, serially (MKL's vectorised path is used on Intel CPUs only; pytorch#138199); on the emotion job it was
a fifth of a training step on a 2-core AMD EPYC. Here each element keeps with probability 1 - p, decided by 32
random bits from numpy's SFC64 (Doty-Humphrey's small fast chaotic generator; its 64-bit counter guarantees a
cycle of at least 2**64), which filled 64 bits in 1.45 ns against PCG64DXSM's 2.87 ns on that EPYC: P(keep) is
exact to 2**-32, finer than CUDA's float32 draw. Each call's generator is seeded (through numpy's SeedSequence)
by two draws of torch's own generator, so `torch.manual_seed` seeds it and a checkpoint's saved torch RNG state
replays it bitwise on resume. Public numpy and torch only; part of fast_dropout.py's path, under its gates.
"""

from __future__ import annotations

import math

import numpy as np
import torch


@torch.profiler.record_function("ptrain::mask")  # `ptrain bench --profile` counts it as dropout
def keep_mask(shape: torch.Size | tuple[int, ...], p: float) -> torch.Tensor:
    """A bool mask of `shape`, each element True with probability 1 - p, independently."""
    numel = math.prod(shape)
    seed = torch.randint(-(2**63), 2**63 - 1, (2,), dtype=torch.int64).tolist()
    bits = np.random.SFC64(np.random.SeedSequence([value % 2**64 for value in seed]))
    words = torch.from_numpy(bits.random_raw((numel + 1) // 2).view(np.int32)[:numel])
    threshold = round(p * 2**32) - 2**31  # int32 words >= threshold: a share 1 - p of all 2**32 values
    return (words >= threshold).view(shape)


def scaled_keep_mask(shape: torch.Size | tuple[int, ...], p: float) -> torch.Tensor:
    """keep_mask as float32 factors: 1 / (1 - p) where kept, 0 where dropped. Multiplying by it is one pass
    (x * bool_mask * scale is three: the bool's conversion, two products) with the same float32 result. Made as
    the bool's conversion and an in-place scaling: 0.5 ms for 32 x 12 x 75 x 75 against torch.where's 1.4 ms."""
    return keep_mask(shape, p).to(torch.float32).mul_(1.0 / (1.0 - p) if p < 1.0 else 0.0)
