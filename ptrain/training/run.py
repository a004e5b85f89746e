"""The objects one training run carries from setup to export, grouped by side: data, optimisation, outputs and
runtime. Each is built once by the recipe's setup and never reassigned."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch
from accelerate import Accelerator
from accelerate.scheduler import AcceleratedScheduler
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

from ptrain.config import Config
from ptrain.data.tokenize import Splits
from ptrain.outputs.lock import RunLock
from ptrain.outputs.tracking import Tracker
from ptrain.tasks import Task
from ptrain.training.callbacks import Callbacks
from ptrain.training.ema import WeightAverage
from ptrain.training.engine import Engine
from ptrain.training.loss_scaling import LossScaling
from ptrain.training.optim import StepPlan
from ptrain.training.precision import Precision
from ptrain.training.preemption import Preemption


class TaskLoss(Protocol):
    """A task's loss: summed over targets, with target_weight(labels) as its denominator."""

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor: ...

    def target_weight(self, labels: torch.Tensor) -> torch.Tensor: ...


@dataclass(frozen=True, kw_only=True)
class RunData:
    tokenizer: PreTrainedTokenizerBase
    splits: Splits
    train_loader: DataLoader  # prepared by Accelerate: per process, on the device
    eval_loader: DataLoader
    shuffle: torch.Generator  # seeded with (seed + epoch) at each epoch start: the same order after a resume
    eval_sets: dict[str, DataLoader] = field(default_factory=dict)  # data.eval_files, by name


@dataclass(frozen=True, kw_only=True)
class Optimisation:
    model: torch.nn.Module  # prepared (DDP-wrapped when distributed)
    optimizer: torch.optim.Optimizer
    scheduler: AcceleratedScheduler
    loss_fn: TaskLoss
    plan: StepPlan
    ema: WeightAverage | None = None  # train.ema_decay: the weights evaluations and exports use
    clip_in_optimizer: bool = False  # clipping rides on the fused AdamW step (gradients.py)


@dataclass(frozen=True, kw_only=True)
class RunOutputs:
    run_dir: Path
    tracker: Tracker
    lock: RunLock  # the run folder's (outputs/lock.py), held by the main process from setup to the end


@dataclass(frozen=True, kw_only=True)
class Runtime:
    accelerator: Accelerator
    engine: Engine  # which engine the launch runs (single process, DDP, FSDP2, DeepSpeed)
    loss_scaling: LossScaling  # fp16's grad scaler around the optimizer step (inert otherwise)
    preemption: Preemption
    precision: Precision  # train.mixed_precision as resolved, and why


@dataclass(frozen=True, kw_only=True)
class Run:
    cfg: Config  # train.mixed_precision as resolved for this device (what config.yaml records)
    task: Task
    runtime: Runtime
    data: RunData
    optim: Optimisation
    outputs: RunOutputs
    callbacks: Callbacks = field(default_factory=lambda: Callbacks([]))  # train.callbacks
