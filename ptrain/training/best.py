"""Evaluation results and the rule for "better": the evaluation itself is the task's (ptrain/tasks/)."""

from __future__ import annotations

from ptrain.tasks import EvalResult, Task

__all__ = ["EvalResult", "is_improvement"]


def is_improvement(task: Task, metric: str, value: float, best: float | None) -> bool:
    if best is None:
        return True
    return value < best if metric in task.lower_is_better else value > best
