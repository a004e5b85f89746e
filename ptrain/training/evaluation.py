"""Evaluation during training: log it, export best/ on improvement, decide on early stopping."""

from __future__ import annotations

import time

from tqdm.auto import tqdm

from ptrain.outputs.export import export_model
from ptrain.tasks import EvalContext
from ptrain.training.best import EvalResult, is_improvement
from ptrain.training.meter import TrainMeter
from ptrain.training.run import Run
from ptrain.training.state import LoopState


def evaluate_and_track(run: Run, state: LoopState, meter: TrainMeter) -> EvalResult:
    """Every process computes the same gathered metrics, so all take the same best/stop decisions."""
    started = time.perf_counter()
    context = EvalContext(run.cfg, run.tokenizer, run.splits.label_names, run.splits.raw["validation"])
    result = run.task.evaluate(run.model, run.eval_loader, run.accelerator, context)
    step, metric = state.global_step, best_metric(run)
    state.last, state.last_eval_step = result.metrics, step
    improved = is_improvement(run.task, metric, result.metrics[metric], state.best_value)
    if improved:
        state.best_value, state.best = result.metrics[metric], {**result.metrics, "step": step}
        state.evals_without_improvement = 0
        export_model(run.accelerator, run.model, run.tokenizer, run.run_dir / "best")
    else:
        state.evals_without_improvement += 1
    patience, target = run.cfg.train.early_stopping_patience, run.cfg.train.stop_at_metric
    if patience is not None and state.evals_without_improvement >= patience:
        state.stop = state.early_stopped = True
    if target is not None and reached(run.task, metric, result.metrics[metric], target):
        state.stop = state.early_stopped = True
    if run.accelerator.is_main_process:
        track_evaluation(run, result, context, step)
        scores = " | ".join(f"{k} {v:.4f}" for k, v in result.metrics.items())
        tqdm.write(f"eval @ step {step} | {scores}" + (" | best so far" if improved else ""))
    meter.exclude(time.perf_counter() - started)  # tokens/s counts training time only
    return result


def reached(task, metric: str, value: float, target: float) -> bool:
    return value <= target if metric in task.lower_is_better else value >= target


def best_metric(run: Run) -> str:
    """train.metric_for_best, or the task's headline metric."""
    return run.cfg.train.metric_for_best or run.task.metrics[0]


def track_evaluation(run: Run, result: EvalResult, context: EvalContext, step: int) -> None:
    run.tracker.scalars({f"eval/{k}": v for k, v in result.metrics.items()}, step)
    run.tracker.scalars({"eval/tokens_per_second": result.real_tokens / max(result.seconds, 1e-9)}, step)
    run.task.track(run.tracker, result, context, step)
