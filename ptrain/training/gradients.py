"""Clipping the window's gradients (already its per-target mean: window.py scales each loss before backward) to
train.max_grad_norm, and the norm before clipping that ptrain logs, as one float32 scalar on the device under every
engine: Accelerate returns a tensor (DDP), a DTensor (FSDP2 on Accelerate 1.15) or DeepSpeed's Python float (DeepSpeed
clips inside its own step, at the gradient_clipping ptrain set to train.max_grad_norm).

Where the optimizer is torch's fused AdamW and nothing else owns the gradients (no fp16 grad scaler, no sharding),
the clipping rides on the optimizer step: the clip factor goes to the fused kernel as its `grad_scale`, which it
divides every gradient by as it reads it, instead of a multiply over every gradient first. Same update, to float
rounding; tests/test_fast_paths.py compares both ways.
"""

from __future__ import annotations

import math

import torch
from torch.distributed.tensor import DTensor

from ptrain.runtime.engine import Engine


def folds_into_optimizer(accelerator, optimizer, engine: Engine) -> bool:
    """True when clipping can ride on the fused AdamW step."""
    inner = getattr(optimizer, "optimizer", optimizer)
    return engine.plain and accelerator.mixed_precision != "fp16" and inner.defaults.get("fused", False)


@torch.profiler.record_function("ptrain::clip")  # `ptrain bench --profile` counts it as optimizer
def clip_gradients(model, optimizer, accelerator, max_grad_norm: float | None, fold: bool) -> torch.Tensor:
    """The gradient norm before clipping; afterwards the optimizer step applies the clipped gradients."""
    if not fold:
        norm = accelerator.clip_grad_norm_(model.parameters(), max_grad_norm or math.inf)
        return as_scalar(norm, accelerator.device)
    grads = [param.grad for param in model.parameters() if param.grad is not None]
    grad_norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
    clip = (max_grad_norm / (grad_norm + 1e-6)).clamp(max=1.0) if max_grad_norm else torch.ones_like(grad_norm)
    getattr(optimizer, "optimizer", optimizer).grad_scale = (1.0 / clip).float().reshape(())
    return grad_norm


def as_scalar(norm, device: torch.device) -> torch.Tensor:
    """A 0-dim float32 tensor on `device` from what Accelerate's clip_grad_norm_ returned (DeepSpeed gives None
    before its first step)."""
    if norm is None:
        return torch.full((), math.nan, device=device)
    if isinstance(norm, DTensor):
        norm = norm.full_tensor()
    if not isinstance(norm, torch.Tensor):
        return torch.full((), float(norm), device=device)
    return norm.detach().float().reshape(())
