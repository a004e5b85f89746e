"""`ptrain bench CONFIG --time-to METRIC=VALUE [--compare-hf]`: wall time until a validation score is reached,
for ptrain and for the HF Trainer on the same job (data, model, batch, schedule, precision, evaluation
interval), in one invocation. The clock starts when training is called and stops when the evaluation that
reaches the value has finished; both sides evaluate the whole validation split at the same steps."""

from __future__ import annotations

import contextlib
import io
import tempfile
import time
from pathlib import Path

import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from ptrain.config import Config
from ptrain.errors import ConfigError
from ptrain.runtime.hardware import describe_hardware, hardware_line
from ptrain.runtime.precision import resolve_config_precision
from ptrain.training.best import BestRule
from ptrain.training.recipe import load_model, setup, train


def parse_target(cfg: Config, text: str) -> tuple[str, float]:
    from ptrain.tasks import get_task

    metric, _, value = text.partition("=")
    try:
        target = float(value)
    except ValueError:
        raise ConfigError(f"--time-to {text}: give METRIC=VALUE, e.g. weighted_f1=0.92") from None
    task = get_task(cfg.task)
    reported = task.metrics_of(task.options(cfg))
    if metric not in reported:
        raise ConfigError(f"--time-to {text}: '{metric}' is not a {cfg.task} metric ({', '.join(reported)})")
    return metric, target


def time_to_target(cfg: Config, target_text: str, compare_hf: bool) -> dict:
    metric, target = parse_target(cfg, target_text)
    if cfg.train.eval_every_steps is None:
        raise ConfigError(f"--time-to needs train.eval_every_steps in {cfg.name}'s config (the evaluation interval)")
    cfg, precision = resolve_config_precision(cfg)  # both sides in the precision `auto` picks (or the one set)
    hardware = describe_hardware(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    with tempfile.TemporaryDirectory(prefix="ptrain-time-to-") as tmp:
        train_cfg = cfg.train.model_copy(
            update={
                "metric_for_best": metric,
                "stop_at_metric": target,
                "checkpoint_at_epoch_end": False,
                "checkpoint_every_steps": None,
            }
        )
        cfg = cfg.model_copy(update={"output_dir": tmp, "train": train_cfg})
        report = {
            "config": cfg.name,
            "metric": metric,
            "target": target,
            "eval_every_steps": train_cfg.eval_every_steps,
            "threads": torch.get_num_threads(),
            "hardware": hardware,
            "precision": precision.name,
            "precision_reason": precision.reason,
        }
        report["ptrain"] = ptrain_time_to_target(cfg, Path(tmp) / cfg.name)
        if compare_hf:
            report["hf_trainer"] = hf_time_to_target(cfg, Path(tmp) / "hf")
    if compare_hf and report["ptrain"]["seconds"] and report["hf_trainer"]["seconds"]:
        report["speedup"] = report["hf_trainer"]["seconds"] / report["ptrain"]["seconds"]
    return report


def ptrain_time_to_target(cfg: Config, runs: Path) -> dict:
    """`ptrain train` in this process, with train.stop_at_metric; the times come from its TensorBoard events. The
    clock starts at the config event, written once data, model and optimizer are ready (as when Trainer.train
    is called on a built Trainer)."""
    train(cfg)
    events = EventAccumulator(str(next(runs.iterdir())), size_guidance={"scalars": 0, "tensors": 0}).Reload()
    started = events.Tensors("config/text_summary")[0].wall_time
    evals = [(e.step, e.value, e.wall_time) for e in events.Scalars(f"eval/{cfg.train.metric_for_best}")]
    return first_reaching(cfg, evals, started)


def first_reaching(cfg: Config, evals: list[tuple[int, float, float]], started: float) -> dict:
    from ptrain.tasks import get_task

    rule = BestRule.of(cfg, get_task(cfg.task))  # train.metric_for_best and stop_at_metric: the target
    curve = [{"step": step, rule.metric: value, "seconds": wall - started} for step, value, wall in evals]
    hit = next((point for point in curve if rule.reached(point[rule.metric])), None)
    return {"seconds": hit["seconds"] if hit else None, "step": hit["step"] if hit else None, "evaluations": curve}


def hf_time_to_target(cfg: Config, output_dir: Path) -> dict:
    """transformers.Trainer with the same rows, model, collator, schedule and evaluation steps; a callback stops it
    at the first evaluation that reaches the target."""
    from transformers import Trainer, TrainerCallback

    from ptrain.bench.hf_trainer import training_arguments

    run, _ = setup(cfg.model_copy(update={"output_dir": str(output_dir)}), track=False)
    cfg = run.cfg  # train.mixed_precision resolved for this device, as ptrain's side ran
    evals: list[tuple[int, float, float]] = []
    rule = BestRule.of(cfg, run.task)

    class StopAtTarget(TrainerCallback):
        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            evals.append((state.global_step, metrics[f"eval_{rule.metric}"], time.time()))
            if rule.reached(metrics[f"eval_{rule.metric}"]):
                control.should_training_stop = True

    data, plan = run.data, run.optim.plan
    # The collator before TrainingArguments, which resets Accelerate's state.
    collator = run.task.collator(cfg, data.tokenizer, run.runtime.accelerator.device)
    args = training_arguments(
        cfg,
        output_dir,
        num_train_epochs=cfg.train.epochs,
        max_steps=plan.total_steps,
        warmup_steps=plan.warmup_steps,
        eval_strategy="steps",
        eval_steps=cfg.train.eval_every_steps,
    )  # the same schedule and evaluation steps as ptrain
    trainer = Trainer(
        model=load_model(cfg, run.task, data),  # with model.lora, the same adapters as ptrain's side
        args=args,
        data_collator=collator,
        train_dataset=run.task.trainer_rows(data.splits.tokenized["train"]),
        eval_dataset=run.task.trainer_rows(data.splits.tokenized["validation"]),
        compute_metrics=classification_metrics(len(data.splits.label_names)),
        callbacks=[StopAtTarget()],
    )
    started = time.time()
    with contextlib.redirect_stdout(io.StringIO()):
        trainer.train()
    return first_reaching(cfg, evals, started)


def classification_metrics(num_labels: int):
    """Trainer's compute_metrics with the definitions of ptrain's classification task."""
    from ptrain.tasks.classification import label_scores

    def compute(prediction):
        preds, labels = torch.as_tensor(prediction.predictions).argmax(-1), torch.as_tensor(prediction.label_ids)
        return label_scores(preds, labels, num_labels)

    return compute


def print_time_to_target(report: dict) -> None:
    print(
        f"time to {report['metric']} >= {report['target']} on {report['config']} validation, evaluating every "
        f"{report['eval_every_steps']} steps; {hardware_line(report['hardware'])}; precision {report['precision']} "
        f"({report['precision_reason']}):"
    )
    for name, key in (("ptrain", "ptrain"), ("HF Trainer", "hf_trainer")):
        if key in report:
            side = report[key]
            curve = ", ".join(
                f"{p['step']}: {p[report['metric']]:.4f} @ {p['seconds']:.0f}s" for p in side["evaluations"]
            )
            reached_at = f"{side['seconds']:.1f} s (step {side['step']})" if side["seconds"] else "not reached"
            print(f"  {name:<11} {reached_at}; evaluations {curve}")
    if "speedup" in report:
        print(f"ptrain reaches it {report['speedup']:.2f}x as fast as the HF Trainer")
