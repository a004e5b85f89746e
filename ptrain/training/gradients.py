"""The optimizer step's gradient arithmetic: the window's per-target mean, then clipping to train.max_grad_norm.

The plain way (ptrain/tasks/loss.py's normalise_gradients, then accelerator.clip_grad_norm_) sweeps every
gradient three times: a multiply, a norm, a multiply. Where the optimizer is torch's fused AdamW and nothing else
owns the gradients (no fp16 grad scaler, no FSDP or DeepSpeed), one sweep does: the norm of the raw summed
gradients gives the normalised norm by the same factor, and the product of the normalising and clipping factors
goes to the fused kernel as its `grad_scale` (which it divides every gradient by as it reads it). Same update,
to float rounding; tests/test_fast_paths.py compares both ways.
"""

from __future__ import annotations

import math

import torch
from accelerate.utils import DistributedType

from ptrain.tasks.loss import normalise_gradients, window_scale

PLAIN_GRADIENTS = {DistributedType.NO, DistributedType.MULTI_CPU, DistributedType.MULTI_GPU}


def folds_into_optimizer(accelerator, optimizer) -> bool:
    """True when scaling and clipping can ride on the fused AdamW step."""
    inner = getattr(optimizer, "optimizer", optimizer)
    return (
        accelerator.distributed_type in PLAIN_GRADIENTS
        and accelerator.mixed_precision != "fp16"
        and inner.defaults.get("fused", False)
    )


@torch.profiler.record_function("ptrain::clip")  # `ptrain bench --profile` counts it as optimizer
def normalise_and_clip(model, optimizer, accelerator, window_weight, max_grad_norm, fold: bool):
    """Returns (the window's real-target count on all processes, the normalised gradient norm before
    clipping); afterwards the optimizer step applies the normalised, clipped gradients."""
    if not fold:
        targets = normalise_gradients(model.parameters(), accelerator, window_weight)
        return targets, accelerator.clip_grad_norm_(model.parameters(), max_grad_norm or math.inf)
    targets, factor = window_scale(accelerator, window_weight)
    grads = [param.grad for param in model.parameters() if param.grad is not None]
    grad_norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))) * factor
    clip = (max_grad_norm / (grad_norm + 1e-6)).clamp(max=1.0) if max_grad_norm else torch.ones_like(grad_norm)
    getattr(optimizer, "optimizer", optimizer).grad_scale = (1.0 / (factor * clip)).float().reshape(())
    return targets, grad_norm
