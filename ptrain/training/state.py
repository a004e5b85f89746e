"""The loop's progress: what a resume restores besides the model, optimizer, scheduler and RNG states."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


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
