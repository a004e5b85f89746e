"""The objects one training run carries from setup to export."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator

from ptrain.config import Config
from ptrain.data.tokenize import Splits
from ptrain.outputs.tracking import Tracker
from ptrain.tasks import Task
from ptrain.training.optim import StepPlan
from ptrain.training.precision import Precision
from ptrain.training.preemption import Preemption


@dataclass
class Run:
    cfg: Config
    task: Task
    accelerator: Accelerator
    run_dir: Path
    tokenizer: Any
    splits: Splits
    model: Any
    optimizer: torch.optim.Optimizer
    scheduler: Any
    train_loader: Any
    eval_loader: Any
    shuffle: torch.Generator  # seeded with (seed + epoch) at each epoch start: the same order after a resume
    loss_fn: Any  # the task's loss: summed over targets, with target_weight(labels) as its denominator
    plan: StepPlan
    tracker: Tracker
    preemption: Preemption
    precision: Precision  # train.mixed_precision as resolved, and why
