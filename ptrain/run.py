"""The objects one training run carries from setup to export."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator

from ptrain.config import Config
from ptrain.data import Splits
from ptrain.loss import ClassificationLoss
from ptrain.optim import StepPlan
from ptrain.preemption import Preemption
from ptrain.tracking import Tracker


@dataclass
class Run:
    cfg: Config
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
    loss_fn: ClassificationLoss
    plan: StepPlan
    tracker: Tracker
    preemption: Preemption
