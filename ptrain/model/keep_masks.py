"""Dropout's keep masks on the CPU, drawn by a faster seeded generator: the same Bernoulli distribution.

PyTorch's CPU `bernoulli_` (behind nn.Dropout and SDPA's dropout) draws one double per element from a Mersenne
Twister, serially (MKL's vectorised path is used on Intel CPUs only; pytorch#138199); on the emotion job it was
a fifth of a training step on a 2-core AMD EPYC. Here each element keeps with probability 1 - p, decided by 32
random bits from numpy's PCG64DXSM, which fills 64 bits in about 2 ns: P(keep) is exact to 2**-32, finer than
CUDA's float32 draw. The generator's state comes from two draws of torch's own generator per call, so
`torch.manual_seed` seeds it and a checkpoint's saved torch RNG state replays it bitwise on resume.
"""

from __future__ import annotations

import math

import numpy as np
import torch

_BITS = np.random.Generator(np.random.PCG64DXSM()).bit_generator


def keep_mask(shape: torch.Size | tuple[int, ...], p: float) -> torch.Tensor:
    """A bool mask of `shape`, each element True with probability 1 - p, independently."""
    numel = math.prod(shape)
    state, increment = torch.randint(-(2**63), 2**63 - 1, (2,), dtype=torch.int64).tolist()
    _BITS.state = {
        "bit_generator": "PCG64DXSM",
        "state": {"state": state % 2**128, "inc": (increment % 2**128) | 1},
        "has_uint32": 0,
        "uinteger": 0,
    }
    words = torch.from_numpy(_BITS.random_raw((numel + 1) // 2).view(np.int32)[:numel])
    threshold = round(p * 2**32) - 2**31  # int32 words >= threshold: a share 1 - p of all 2**32 values
    return (words >= threshold).view(shape)


def scaled_keep_mask(shape: torch.Size | tuple[int, ...], p: float) -> torch.Tensor:
    """keep_mask as float32 factors: 1 / (1 - p) where kept, 0 where dropped. Multiplying by it is one pass
    (x * bool_mask * scale is three: the bool's conversion, two products) with the same float32 result."""
    return torch.where(keep_mask(shape, p), 1.0 / (1.0 - p) if p < 1.0 else 0.0, 0.0)
