"""The rule for the best model and for stopping early, in one place: which metric (train.metric_for_best or the
task's headline metric), which direction is better, what counts as an improvement, when a target is reached and
when patience runs out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ptrain.config import Config, TrainConfig
from ptrain.tasks import Task
from ptrain.tasks.user_metrics import user_metrics

if TYPE_CHECKING:  # ptrain.training.run imports torch; `ptrain runs` uses lower_is_better without it
    from ptrain.training.run import LoopState


def metric_for_best(cfg: Config, task: Task) -> str:
    """train.metric_for_best, or the headline metric of what the task reports with this config."""
    return cfg.train.metric_for_best or task.metrics_of(task.options(cfg))[0]


def lower_is_better(task: Task, metric: str, train_cfg: TrainConfig | None = None) -> bool:
    name = metric.rpartition("/")[2]  # "heldout/loss": a named set's loss
    functions = user_metrics(train_cfg) if train_cfg is not None else {}
    if name in functions:  # train.metrics: higher is better unless the function says otherwise
        return bool(getattr(functions[name], "lower_is_better", False))
    return name in task.lower_is_better


@dataclass(frozen=True, kw_only=True)
class BestRule:
    metric: str
    lower_is_better: bool
    patience: int | None = None  # evaluations without improvement before stopping
    target: float | None = None  # stop once the metric reaches it

    @classmethod
    def of(cls, cfg: Config, task: Task) -> BestRule:
        train_cfg = cfg.train
        metric = metric_for_best(cfg, task)
        return cls(
            metric=metric,
            lower_is_better=lower_is_better(task, metric, train_cfg),
            patience=train_cfg.early_stopping_patience,
            target=train_cfg.stop_at_metric,
        )

    def is_improvement(self, value: float, best: float | None) -> bool:
        if best is None:
            return True
        return value < best if self.lower_is_better else value > best

    def reached(self, value: float) -> bool:
        if self.target is None:
            return False
        return value <= self.target if self.lower_is_better else value >= self.target

    def out_of_patience(self, evals_without_improvement: int) -> bool:
        return self.patience is not None and evals_without_improvement >= self.patience


def record_evaluation(rule: BestRule, state: LoopState, metrics: dict[str, float], step: int) -> bool:
    """Update the best scores, the patience count and the stop flags after an evaluation; True when it improved."""
    value = metrics[rule.metric]
    improved = rule.is_improvement(value, state.best_value)
    if improved:
        state.best_value, state.best = value, {**metrics, "step": step}
        state.evals_without_improvement = 0
    else:
        state.evals_without_improvement += 1
    if rule.out_of_patience(state.evals_without_improvement) or rule.reached(value):
        state.stop = state.early_stopped = True
    return improved
