"""The accumulation window: the micro-batches of one optimizer step, read before the first forward so that the loss
of each is divided by the real targets of the whole window on all processes before its backward. Scaling before
backward is the one way that gives the same gradients under every engine: DeepSpeed reduces, clips and steps inside
the window's last backward, where ptrain's scaling afterwards would come too late.

Accelerate's accumulate() takes the window's end from the loader's, which is read ahead here, so the window sets
Accelerate's sync flag itself, as the HF Trainer does since it reads windows ahead (GradientState._set_sync_gradients,
Accelerate's only setter for it): off for every micro-batch but the last, whose backward synchronises (DDP's
all-reduce, FSDP's reduce-scatter, DeepSpeed's step); the others run under accelerator.no_sync.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch


def windows(batches: Iterable[dict], size: int) -> Iterator[list[dict]]:
    """`size` micro-batches at a time; the epoch's last window may be shorter (it still makes a step)."""
    iterator = iter(batches)
    while window := list(itertools.islice(iterator, size)):
        yield window


@dataclass(frozen=True)
class WindowScale:
    targets: torch.Tensor  # real targets of the window on all processes (class-weighted where weights are set)
    factor: torch.Tensor  # what each micro-batch's summed loss is multiplied by before backward


def window_scale(accelerator, loss_fn, window: list[dict]) -> WindowScale:
    """One all-reduce of the window's target count. Accelerate's backward (or DeepSpeed's) divides each loss by the
    accumulation steps and every engine averages gradients over processes: multiplying by both and dividing by the
    count gives the gradient of the window's per-target mean, the gradient of one big batch."""
    local = torch.stack([loss_fn.target_weight(batch["labels"]).float() for batch in window]).sum()
    targets = accelerator.reduce(local, "sum") if accelerator.num_processes > 1 else local
    factor = accelerator.gradient_accumulation_steps * accelerator.num_processes / targets.clamp(min=1e-12)
    return WindowScale(targets=targets, factor=factor)


@contextlib.contextmanager
def micro_step(accelerator, model, last: bool) -> Iterator[None]:
    """One micro-batch of the window: gradients synchronised (and, under DeepSpeed, the step taken) only in the
    backward of the last."""
    accelerator.gradient_state._set_sync_gradients(last)
    with contextlib.nullcontext() if last else accelerator.no_sync(model):
        yield
