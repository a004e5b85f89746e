"""Task name -> Task: every choice that differs between tasks lives in one module per task."""

from __future__ import annotations

from ptrain.errors import ModelError
from ptrain.tasks.base import EvalContext, EvalResult, Task
from ptrain.tasks.causal_lm import CausalLM
from ptrain.tasks.classification import SequenceClassification
from ptrain.tasks.masked_lm import MaskedLM
from ptrain.tasks.multilabel import MultiLabelClassification
from ptrain.tasks.probe import LinearProbe
from ptrain.tasks.regression import Regression
from ptrain.tasks.seq2seq import SequenceToSequence
from ptrain.tasks.token_classification import TokenClassification

TASKS: dict[str, Task] = {
    task.name: task
    for task in (
        SequenceClassification(),
        TokenClassification(),
        Regression(),
        MultiLabelClassification(),
        LinearProbe(),
        MaskedLM(),
        CausalLM(),
        SequenceToSequence(),
    )
}


def get_task(name: str) -> Task:
    return TASKS[name]


def task_of_export(config, folder: str) -> Task:
    """The task an exported model was trained for, from its config.json (architecture and problem_type)."""
    for task in TASKS.values():
        if task.matches_export(config):
            return task
    raise ModelError(f"{folder}: model architecture {config.architectures} is not one ptrain predicts with")


__all__ = ["TASKS", "EvalContext", "EvalResult", "Task", "get_task", "task_of_export"]
