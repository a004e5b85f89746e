"""train.callbacks: the user's classes, each made once with no arguments, whose methods are named for events.

    on_train_start   before the first step (or the first step after a resume)
    on_step_end      after each optimizer step
    on_evaluate      after each evaluation (view.metrics holds its scores)
    on_checkpoint    after each resumable checkpoint (view.checkpoint is its folder)
    on_train_end     after the final export and metrics.json

ptrain calls the methods a class defines, on every process, with a read-only RunView. A method may call
view.request_stop() (training ends after this step, as an early stop: final evaluation, export, metrics) or
view.request_save() (a resumable checkpoint of this step). Processes agree: one process asking is enough.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType

import torch

from ptrain.config.references import load_reference


@dataclass
class Requests:
    stop_by: str | None = None  # the callback that asked to stop
    save: bool = False


@dataclass(frozen=True)
class RunView:
    """What a callback sees of the run; it may ask to stop or to save, and change nothing else."""

    event: str
    step: int  # optimizer steps taken
    epoch: float  # epochs done, fractional
    metrics: Mapping[str, float]  # the latest evaluation's scores (empty before the first)
    run_dir: Path
    is_main_process: bool  # write files from the main process only
    checkpoint: Path | None = None  # on_checkpoint: the checkpoint folder
    _requests: Requests = field(default_factory=Requests, repr=False)  # shared by the views of one event
    _caller: str = field(default="", repr=False)  # the callback this view was given to

    def request_stop(self) -> None:
        self._requests.stop_by = self._requests.stop_by or self._caller

    def request_save(self) -> None:
        self._requests.save = True


class Callbacks:
    def __init__(self, references: list[str]):
        self.objects = [(ref, load_reference(ref, "train.callbacks")()) for ref in references]
        self.save_pending = False

    def dispatch(self, event: str, run, state, checkpoint: Path | None = None) -> None:
        """Call every `event` method of the run (ptrain.training.run.Run) at its loop state; a stop request stops
        the loop, a save request is kept for take_save."""
        handlers = [(ref, getattr(obj, event)) for ref, obj in self.objects if hasattr(obj, event)]
        if not handlers:
            return
        accelerator = run.runtime.accelerator
        view = RunView(
            event=event,
            step=state.global_step,
            epoch=state.global_step / run.optim.plan.steps_per_epoch,
            metrics=MappingProxyType(dict(state.last)),
            run_dir=run.outputs.run_dir,
            is_main_process=accelerator.is_main_process,
            checkpoint=checkpoint,
        )
        for reference, handler in handlers:
            handler(replace(view, _caller=reference))
        stop, save = agreed(accelerator, view._requests)
        if stop and event != "on_train_end" and not state.stop:
            state.stop = state.early_stopped = True
            who = view._requests.stop_by or "a callback on another process"
            accelerator.print(f"ptrain: {who} asked to stop at step {state.global_step} ({event})")
        self.save_pending |= save and event not in ("on_checkpoint", "on_train_end")

    def take_save(self) -> bool:
        """Whether a callback asked for a checkpoint since the last call."""
        pending, self.save_pending = self.save_pending, False
        return pending


def agreed(accelerator, requests: Requests) -> tuple[bool, bool]:
    """The requests of any process, on every process (every process takes the same decisions)."""
    flags = [requests.stop_by is not None, requests.save]
    if accelerator.num_processes == 1:
        return flags[0], flags[1]
    total = accelerator.reduce(torch.tensor(flags, dtype=torch.float32, device=accelerator.device), "sum")
    return bool(total[0] > 0), bool(total[1] > 0)
