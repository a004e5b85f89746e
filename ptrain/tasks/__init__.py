"""The tasks: one module per task, each declaring its config section, checks, data columns, encoding, model,
loss, evaluation, export recognition and prediction (ptrain/tasks/base.py); the registry below; and
load_config, which reads a config with its task's section and runs the task's checks.

The registry holds the built-in tasks' declarations (ptrain/tasks/declarations.py: names, metrics, sections,
checks), which import no torch, so `ptrain check` and `ptrain runs` answer in a fraction of a second; get_task
imports a task's own module, and torch and transformers with it, when a command first needs its hooks.

Adding a task is one module and one `register_task(...)` line: nothing in config/, training/ or cli.py changes.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

from ptrain.config import Config, read_config
from ptrain.config.user_code import check_user_code, metric_name
from ptrain.errors import ConfigError, ModelError
from ptrain.tasks.base import EvalContext, EvalResult, Task
from ptrain.tasks.declarations import DECLARATIONS

TASKS: dict[str, Task] = {task.name: task for task in DECLARATIONS}  # a built-in task's declaration, or a task


def register_task(task: Task) -> Task:
    """Make a task known by its name: configs may name it and hold its section, exports are matched against it."""
    TASKS[task.name] = task
    return task


def get_task(name: str) -> Task:
    """The task with its hooks: for a built-in task, its module's class in place of its declaration."""
    task = TASKS[name]
    return built_in_tasks()[name] if task in DECLARATIONS else task


@functools.cache
def built_in_tasks() -> dict[str, Task]:
    """Every built-in task with its hooks, by name; their modules import torch, transformers and datasets."""
    from ptrain.tasks.causal_lm import CausalLM
    from ptrain.tasks.chat import Chat
    from ptrain.tasks.classification import SequenceClassification
    from ptrain.tasks.masked_lm import MaskedLM
    from ptrain.tasks.multilabel import MultiLabelClassification
    from ptrain.tasks.probe import LinearProbe
    from ptrain.tasks.question_answering import QuestionAnswering
    from ptrain.tasks.regression import Regression
    from ptrain.tasks.seq2seq import SequenceToSequence
    from ptrain.tasks.token_classification import TokenClassification

    tasks = (
        SequenceClassification(),
        TokenClassification(),
        Regression(),
        MultiLabelClassification(),
        LinearProbe(),
        MaskedLM(),
        CausalLM(),
        Chat(),
        SequenceToSequence(),
        QuestionAnswering(),
    )
    return {task.name: task for task in tasks}


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> Config:
    """A config file with its overrides, validated with its task's section and checked by its task; every error
    is one ConfigError line naming the file (or override) and the key."""
    sections = [(task.name, task.Options) for task in TASKS.values()]
    moved: dict[str, dict[str, str]] = {}
    for task in TASKS.values():
        for old, new in task.moved_keys.items():
            moved.setdefault(old, {})[task.name] = f"{task.name}.{new}"
    cfg = read_config(path, overrides, sections, moved)
    task = TASKS[cfg.task]  # its declaration: no torch for `ptrain check`
    check_task_config(cfg, task, Path(path))
    check_user_code(cfg, Path(path), task.metric_inputs, task.metrics_of(task.options(cfg)))
    task.check(cfg, Path(path))
    return cfg


def check_task_config(cfg: Config, task: Task, path: Path) -> None:
    """The rules every task shares: its metric for best, LoRA, and the data formats it reads."""
    metric = cfg.train.metric_for_best
    named_set, _, name = (metric or "").rpartition("/")
    if named_set and named_set not in cfg.data.eval_files:
        raise ConfigError(
            f"{path}: train.metric_for_best '{metric}' names no evaluation set; "
            f"data.eval_files has {', '.join(cfg.data.eval_files) or 'none'}"
        )
    metrics = (*task.metrics_of(task.options(cfg)), *(metric_name(reference) for reference in cfg.train.metrics))
    if metric is not None and name not in metrics:
        selectable = f" or select it in {task.name}.{task.metrics_key}" if task.metrics_key else ""
        raise ConfigError(
            f"{path}: train.metric_for_best '{metric}' is not a {cfg.task} metric; "
            f"choose one of {', '.join(metrics)}{selectable}"
        )
    if task.recipe != "loop" and (cfg.train.loss or cfg.train.callbacks):
        raise ConfigError(f"{path}: task {task.name} is not trained by ptrain's loop; remove train.loss/callbacks")
    if cfg.model.lora is not None and task.peft_task_type is None:
        adaptable = ", ".join(name for name, other in TASKS.items() if other.peft_task_type)
        raise ConfigError(f"{path}: model.lora is not supported for task {cfg.task}; remove it (LoRA: {adaptable})")
    if cfg.data.format == "conll" and not task.reads_word_lists:
        readers = ", ".join(name for name, other in TASKS.items() if other.reads_word_lists)
        raise ConfigError(f"{path}: data.format=conll gives word and tag lists; use task: {readers}")


def task_of_export(config, folder: str) -> Task:
    """The task an exported model was trained for, from its config.json (architecture and problem_type)."""
    for task in map(get_task, TASKS):
        if task.matches_export(config):
            return task
    raise ModelError(f"{folder}: model architecture {config.architectures} is not one ptrain predicts with")


__all__ = [
    "TASKS",
    "EvalContext",
    "EvalResult",
    "Task",
    "get_task",
    "load_config",
    "register_task",
    "task_of_export",
]
