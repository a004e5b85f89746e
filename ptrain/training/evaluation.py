"""Evaluation during training: log it, export best/ on improvement; the best and early-stopping rule is best.py's."""

from __future__ import annotations

import time

from tqdm.auto import tqdm

from ptrain.data.splits import EVAL_SET_PREFIX
from ptrain.outputs.export import export_model
from ptrain.outputs.model_card import scores_by_set, write_model_card
from ptrain.outputs.tracking import Tracker
from ptrain.tasks import EvalContext, EvalResult, Task
from ptrain.tasks.user_metrics import add_user_metrics, user_metrics
from ptrain.training.best import BestRule, record_evaluation
from ptrain.training.ema import averaged
from ptrain.training.meter import TrainMeter
from ptrain.training.run import LoopState, Run


def evaluate_and_track(run: Run, state: LoopState, meter: TrainMeter) -> EvalResult:
    """Every process computes the same gathered metrics, so all take the same best/stop decisions."""
    started = time.perf_counter()
    data, model, accelerator = run.data, run.optim.model, run.runtime.accelerator
    with averaged(run.optim.ema):  # train.ema_decay: scored and exported with the averaged weights
        result, context = score_split(run, data.eval_loader, "validation")
        named = {name: score_split(run, loader, EVAL_SET_PREFIX + name)[0] for name, loader in data.eval_sets.items()}
        step = state.global_step
        metrics = {**result.metrics, **{f"{name}/{k}": v for name, r in named.items() for k, v in r.metrics.items()}}
        state.last, state.last_eval_step = metrics, step
        improved = record_evaluation(BestRule.of(run.cfg, run.task), state, metrics, step)
        if improved:
            export_model(accelerator, model, data.tokenizer, run.outputs.run_dir / "best")
            write_model_card(run, run.outputs.run_dir / "best", scores_by_set(metrics), step)
    run.callbacks.dispatch("on_evaluate", run, state)
    if accelerator.is_main_process:
        track_evaluation(run.task, run.outputs.tracker, result, context, step)
        for name, named_result in named.items():
            run.outputs.tracker.scalars({f"eval_{name}/{k}": v for k, v in named_result.metrics.items()}, step)
        scores = " | ".join(f"{k} {v:.4f}" for k, v in result.metrics.items())
        tqdm.write(f"eval @ step {step} | {scores}" + (" | best so far" if improved else ""))
    meter.exclude(time.perf_counter() - started)  # tokens/s counts training time only
    return result


def score_split(run: Run, loader, split: str) -> tuple[EvalResult, EvalContext]:
    """The model as it is now through the task's evaluate on `loader`, whose rows are the raw split `split`
    (validation, test, or a data.eval_files set eval_<name>)."""
    data = run.data
    context = EvalContext(run.cfg, data.tokenizer, data.splits.label_names, data.splits.raw[split])
    result = run.task.evaluate(run.optim.model, loader, run.runtime.accelerator, context)
    add_user_metrics(result.metrics, result.details, user_metrics(run.cfg.train))  # train.metrics
    return result, context


def track_evaluation(task: Task, tracker: Tracker, result: EvalResult, context: EvalContext, step: int) -> None:
    tokens_per_second = {"eval/tokens_per_second": result.real_tokens / max(result.seconds, 1e-9)}
    tracker.scalars({**{f"eval/{k}": v for k, v in result.metrics.items()}, **tokens_per_second}, step)
    task.track(tracker, result, context, step)
