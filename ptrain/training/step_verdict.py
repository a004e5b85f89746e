"""What every process agrees on after a window's backward, in one all-reduce and one host read per optimizer step:
whether the window's loss (summed over processes) and the gradient norm are finite, and whether any process was
asked to stop (SIGTERM/SIGINT). Log reads (meter.py) are the only other host reads of a step."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class StepVerdict:
    loss_finite: bool
    grad_norm_finite: bool
    stop_requested: bool  # on any process: every process stops after this step


def agree(accelerator, window_loss: torch.Tensor, grad_norm: torch.Tensor, signalled: bool) -> StepVerdict:
    """The verdict of all processes on this step; `signalled`: this process received SIGTERM or SIGINT."""
    loss = window_loss.detach().float().reshape(())
    local = torch.stack([loss, torch.full((), float(signalled), device=loss.device)])  # a fill: no host copy
    shared = accelerator.reduce(local, "sum") if accelerator.num_processes > 1 else local
    total, stops, norm = torch.cat([shared, grad_norm.detach().float().reshape(1).to(loss.device)]).tolist()
    return StepVerdict(loss_finite=math.isfinite(total), grad_norm_finite=math.isfinite(norm), stop_requested=stops > 0)
