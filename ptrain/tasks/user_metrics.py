"""train.metrics: the user's functions of the gathered predictions, added to every evaluation's metrics.

Each function takes some of the tensors the task's evaluation gathers (Task.metric_inputs: e.g. predictions,
labels, probabilities, losses for sequence classification) by parameter name, and returns a float. Its metric is
named after the reference (file.py:macro_recall -> macro_recall); train.metric_for_best may name it, and it counts
as higher-is-better unless the function has the attribute `lower_is_better = True`.
"""

from __future__ import annotations

import inspect
import numbers
from collections.abc import Callable

from ptrain.config.references import load_reference
from ptrain.config.user_code import metric_name
from ptrain.errors import TrainingError


def user_metrics(train_cfg) -> dict[str, Callable]:
    """Metric name -> function, for the config's train.metrics (imported once per process)."""
    return {metric_name(ref): load_reference(ref, "train.metrics") for ref in train_cfg.metrics}


def add_user_metrics(metrics: dict[str, float], details: dict, functions: dict[str, Callable]) -> None:
    """Each user metric of the gathered `details`, into `metrics`."""
    import torch  # here, where tensors are: `ptrain runs` imports this module for user_metrics, without torch

    for name, function in functions.items():
        wanted = inspect.signature(function).parameters
        value = function(**{key: details[key] for key in wanted if key in details})
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()
        if not isinstance(value, numbers.Real):
            raise TrainingError(f"train.metrics: {name} returned {type(value).__name__}; return a float")
        metrics[name] = float(value)
