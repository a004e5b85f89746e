"""AdamW (groups from param_groups.py), the optimizer-step plan, and the warmup/decay schedule."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from transformers import get_linear_schedule_with_warmup

from ptrain.config import TrainConfig
from ptrain.errors import ConfigError
from ptrain.training.param_groups import parameter_groups


def build_optimizer(model: torch.nn.Module, train: TrainConfig) -> torch.optim.AdamW:
    """Weight decay on matrices only: biases and LayerNorm weights (all 1-D parameters) keep none; a learning
    rate per part of the model with train.layer_lr_decay / train.head_learning_rate (param_groups.py)."""
    groups = parameter_groups(model, train)
    # fused: one kernel for all parameters; measured 3.3x faster than the default on 2 CPU cores (MiniLM)
    return torch.optim.AdamW(
        groups, lr=train.learning_rate, betas=(train.adam_beta1, train.adam_beta2), eps=train.adam_epsilon, fused=True
    )


@dataclass(frozen=True)
class StepPlan:
    steps_per_epoch: int  # optimizer steps
    total_steps: int
    warmup_steps: int
    epochs: int  # passes over the data needed to reach total_steps


def plan_steps(micro_batches_per_epoch: int, train: TrainConfig) -> StepPlan:
    """Optimizer steps from the per-process loader length (already divided by the process count).

    The last, shorter accumulation window of an epoch still makes a step (Accelerate syncs at the end
    of the dataloader), hence the ceil. max_steps, when set, replaces epochs.
    """
    steps_per_epoch = math.ceil(micro_batches_per_epoch / train.gradient_accumulation_steps)
    total = train.max_steps if train.max_steps is not None else steps_per_epoch * train.epochs
    if train.warmup_steps is not None:
        warmup = train.warmup_steps
    else:
        warmup = round((train.warmup_ratio or 0.0) * total)
    if warmup >= total:
        raise ConfigError(f"train.warmup_steps={warmup} is not shorter than the whole run ({total} optimizer steps)")
    return StepPlan(steps_per_epoch, total, warmup, math.ceil(total / steps_per_epoch))


def build_scheduler(optimizer: torch.optim.Optimizer, plan: StepPlan):
    """Linear warmup to the peak learning rate, then linear decay to zero at the last step. Stepped once per
    optimizer step, skipped steps included, under every engine and process count (the Accelerator is built with
    step_scheduler_with_optimizer=False, so Accelerate does not step it once per process)."""
    return get_linear_schedule_with_warmup(optimizer, plan.warmup_steps, plan.total_steps)
