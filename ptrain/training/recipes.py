"""`ptrain train`: the recipe a task names (Task.recipe): the optimizer loop, or the linear probe's
encode-once-and-fit."""

from __future__ import annotations

from ptrain.config import Config
from ptrain.tasks import get_task
from ptrain.training.probe import train_probe
from ptrain.training.recipe import train

RECIPES = {"loop": train, "linear_probe": train_probe}


def train_task(cfg: Config) -> int:
    """Train as the config says with its task's recipe; returns the process exit code."""
    return RECIPES[get_task(cfg.task).recipe](cfg)
