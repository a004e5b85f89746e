"""The objects one training run carries from setup to export, grouped by side: data, optimisation, outputs and
runtime. Each is built once by the recipe's setup and never reassigned."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import torch
from accelerate import Accelerator
from accelerate.scheduler import AcceleratedScheduler
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

from ptrain.config import Config
from ptrain.data.tokenize import Splits
from ptrain.files.lock import RunLock
from ptrain.outputs.tracking import Tracker
from ptrain.runtime.engine import Engine
from ptrain.runtime.precision import Precision
from ptrain.tasks import Task
from ptrain.training.callbacks import Callbacks
from ptrain.training.checkpointing.preemption import Preemption
from ptrain.training.ema import WeightAverage
from ptrain.training.loss_scaling import LossScaling
from ptrain.training.optim import StepPlan

if TYPE_CHECKING:
    from ptrain.data.streaming import TrainStream


@dataclass
class LoopState:
    global_step: int = 0  # optimizer steps taken
    epoch: int = 0  # the epoch in progress (or next to start)
    micro_batches_in_epoch: int = 0  # batches of this process consumed in the current epoch
    best_value: float | None = None  # of train.metric_for_best; these three follow best.py's rule
    best: dict[str, float] = field(default_factory=dict)
    evals_without_improvement: int = 0
    last_eval_step: int = -1
    last: dict[str, float] = field(default_factory=dict)
    last_checkpoint_step: int = -1
    consecutive_nonfinite: int = 0
    nonfinite_skips: int = 0
    train_seconds: float = 0.0  # in the loop's windows (forward to optimizer step), evaluations and checkpoints apart
    source_tokens: list[int] = field(default_factory=list)  # data.mixture: real tokens trained from each source
    source_tokens_logged: list[int] = field(default_factory=list)  # source_tokens at the last log
    scaler_skips: int = 0  # fp16: steps the grad scaler skipped for non-finite gradients (it then lowers its scale)
    stop: bool = False
    early_stopped: bool = False
    interrupted_by: str | None = None  # the signal name when preempted

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> LoopState:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})


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
    stream: TrainStream | None = None  # data.streaming: this process's training batches (train_loader is its loader)


@dataclass(frozen=True, kw_only=True)
class Optimisation:
    model: torch.nn.Module  # prepared (DDP-wrapped when distributed)
    optimizer: torch.optim.Optimizer
    scheduler: AcceleratedScheduler
    loss_fn: TaskLoss
    plan: StepPlan
    ema: WeightAverage | None = None  # train.ema_decay: the weights evaluations and exports use
    clip_in_optimizer: bool = False  # clipping rides on the fused AdamW step (gradients.py)
    fast_paths: tuple = ()  # fast_paths.PathState of each path: active, or off with the reason


@dataclass(frozen=True, kw_only=True)
class RunOutputs:
    run_dir: Path
    tracker: Tracker
    lock: RunLock  # the run folder's (files/lock.py), held by the main process from setup to the end


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
