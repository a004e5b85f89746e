"""The training recipe: accelerator and run folder -> tokenizer, data, model -> optimizer and schedule ->
prepare -> loop (forward, loss, backward, clip, step, schedule, zero, log, evaluate) -> export."""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm.auto import tqdm

from ptrain import batching, collate
from ptrain.checkpoint import create_run_dir, export_model, write_json, write_text
from ptrain.config import Config, to_yaml
from ptrain.data import Splits, load_raw_splits, resolve_label_names, tokenize_splits
from ptrain.evaluate import METRICS, EvalResult, evaluate, is_improvement
from ptrain.loss import ClassificationLoss, balanced_class_weights, normalise_gradients
from ptrain.meter import TrainMeter
from ptrain.model import load_classifier, load_tokenizer
from ptrain.optim import StepPlan, build_optimizer, build_scheduler, plan_steps
from ptrain.report import confusion_figure, highest_loss_table
from ptrain.tracking import Tracker


@dataclass
class Run:
    cfg: Config
    accelerator: Accelerator
    run_dir: Path
    tokenizer: Any
    splits: Splits
    model: Any
    optimizer: torch.optim.Optimizer
    scheduler: Any
    train_loader: Any
    eval_loader: Any
    loss_fn: ClassificationLoss
    plan: StepPlan
    tracker: Tracker


@dataclass
class LoopState:
    global_step: int = 0  # optimizer steps taken
    epoch: int = 0
    best_value: float | None = None
    best: dict[str, float] = field(default_factory=dict)
    evals_without_improvement: int = 0
    last_eval_step: int = -1
    last: dict[str, float] = field(default_factory=dict)
    stop: bool = False
    early_stopped: bool = False


def train(cfg: Config) -> Path:
    """Fine-tune as the config says; returns the run folder (TensorBoard events, exports, metrics)."""
    started = time.perf_counter()
    run = setup(cfg)
    announce(run)
    state = fit(run)
    finish(run, state, time.perf_counter() - started)
    return run.run_dir


def setup(cfg: Config, track: bool = True) -> Run:
    """Everything before the first step: run folder, tokenizer, data, model, optimizer, schedule, prepare."""
    accelerator = build_accelerator(cfg)
    set_seed(cfg.train.seed)
    run_dir = create_run_dir(accelerator, cfg.output_dir, cfg.name)
    if accelerator.is_main_process:
        write_text(run_dir / "config.yaml", to_yaml(cfg))
    tokenizer = load_tokenizer(cfg)
    splits = load_splits(cfg, tokenizer, accelerator)
    model = load_classifier(cfg, splits.label_names)
    optimizer = build_optimizer(model, cfg.train)
    collator = collate.classification_collator(tokenizer, cfg.train.mixed_precision)
    train_loader = batching.train_loader(cfg, splits.tokenized["train"], collator)
    eval_loader = batching.eval_loader(cfg, splits.tokenized["validation"], collator)
    model, optimizer, train_loader, eval_loader = accelerator.prepare(model, optimizer, train_loader, eval_loader)
    plan = plan_steps(len(train_loader), cfg.train)
    scheduler = accelerator.prepare(build_scheduler(optimizer, plan, accelerator.num_processes))
    loss_fn = build_loss(cfg, splits).to(accelerator.device)
    tracker = Tracker(run_dir, enabled=track and accelerator.is_main_process)
    return Run(cfg, accelerator, run_dir, tokenizer, splits, model, optimizer, scheduler,
               train_loader, eval_loader, loss_fn, plan, tracker)  # fmt: skip


def build_accelerator(cfg: Config) -> Accelerator:
    from ptrain import distributed  # to the module imports at merge time (this branch changes one function)

    return distributed.build_accelerator(cfg)


def load_splits(cfg: Config, tokenizer, accelerator: Accelerator) -> Splits:
    """The main process tokenizes (or reads the cache) first; the others then read its cache."""
    with accelerator.main_process_first():
        raw = load_raw_splits(cfg)
        return tokenize_splits(cfg, raw, tokenizer, resolve_label_names(cfg, raw["train"]))


def build_loss(cfg: Config, splits: Splits) -> ClassificationLoss:
    weights = cfg.train.class_weights
    if weights == "balanced":
        weights = balanced_class_weights(splits.tokenized["train"]["labels"], len(splits.label_names))
    elif weights is not None:
        weights = torch.tensor(weights, dtype=torch.float32)
    return ClassificationLoss(cfg.train.label_smoothing, weights)


def fit(run: Run) -> LoopState:
    state = LoopState()
    meter = TrainMeter(run.accelerator.device)
    progress = tqdm(total=run.plan.total_steps, desc="train", disable=not run.accelerator.is_main_process,
                    mininterval=1 if sys.stderr.isatty() else 60)  # a log file gets a line a minute  # fmt: skip
    for state.epoch in range(run.plan.epochs):
        train_epoch(run, state, meter, progress)
        if state.stop:
            break
        if state.last_eval_step != state.global_step:
            evaluate_and_track(run, state, meter)
    progress.close()
    return state


def train_epoch(run: Run, state: LoopState, meter: TrainMeter, progress) -> None:
    accelerator, model, train_cfg = run.accelerator, run.model, run.cfg.train
    model.train()  # dropout on (a freshly loaded model is in eval mode; evaluation switches it back)
    for batch in run.train_loader:
        with accelerator.accumulate(model):
            labels, _ = batch.pop("labels"), batch.pop("idx")
            logits = model(**batch).logits
            loss_sum = run.loss_fn(logits, labels)  # summed; normalised per window below
            accelerator.backward(loss_sum)
            meter.add_micro_batch(loss_sum.detach(), run.loss_fn.target_weight(labels), batch["attention_mask"])
            if accelerator.sync_gradients:
                targets = normalise_gradients(model.parameters(), accelerator, meter.window_weight)
                grad_norm = accelerator.clip_grad_norm_(model.parameters(), train_cfg.max_grad_norm or math.inf)
                run.optimizer.step()
                run.scheduler.step()
                run.optimizer.zero_grad(set_to_none=True)
                meter.end_window(targets, grad_norm)
        if accelerator.sync_gradients:
            state.global_step += 1
            progress.update()
            after_optimizer_step(run, state, meter, progress)
            if state.stop:
                return


def after_optimizer_step(run: Run, state: LoopState, meter: TrainMeter, progress) -> None:
    step, train_cfg = state.global_step, run.cfg.train
    if step % train_cfg.log_every_steps == 0:
        log_training(run, state, meter, progress)
    if train_cfg.eval_every_steps and step % train_cfg.eval_every_steps == 0:
        evaluate_and_track(run, state, meter)
    if step >= run.plan.total_steps:
        state.stop = True


def log_training(run: Run, state: LoopState, meter: TrainMeter, progress) -> None:
    stats = meter.read(run.accelerator)
    stats["learning_rate"] = run.scheduler.get_last_lr()[0]
    stats["epoch"] = state.global_step / run.plan.steps_per_epoch
    run.tracker.scalars({f"train/{k}": v for k, v in stats.items()}, state.global_step)
    progress.set_postfix(loss=f"{stats['loss']:.4f}", lr=f"{stats['learning_rate']:.2e}",
                         tok_s=f"{stats['tokens_per_second']:,.0f}", refresh=False)  # fmt: skip
    line = (
        f"step {state.global_step}/{run.plan.total_steps} | epoch {stats['epoch']:.2f} | loss {stats['loss']:.4f} | "
        f"lr {stats['learning_rate']:.2e} | grad_norm {stats['grad_norm']:.3f} | "
        f"{stats['tokens_per_second']:,.0f} tok/s | padding {stats['padding_fraction']:.1%}"
    )
    if run.accelerator.is_main_process:
        tqdm.write(line)


def evaluate_and_track(run: Run, state: LoopState, meter: TrainMeter) -> EvalResult:
    """Score the validation split, log it, export best/ on improvement, decide on early stopping."""
    started = time.perf_counter()
    result = evaluate(run.model, run.eval_loader, run.accelerator, len(run.splits.label_names))
    step, metric = state.global_step, run.cfg.train.metric_for_best
    state.last, state.last_eval_step = result.metrics, step
    improved = is_improvement(metric, result.metrics[metric], state.best_value)
    if improved:
        state.best_value, state.best = result.metrics[metric], {**result.metrics, "step": step}
        state.evals_without_improvement = 0
        export_model(run.accelerator, run.model, run.tokenizer, run.run_dir / "best")
    else:
        state.evals_without_improvement += 1
    patience = run.cfg.train.early_stopping_patience
    if patience is not None and state.evals_without_improvement >= patience:
        state.stop = state.early_stopped = True
    if run.accelerator.is_main_process:
        track_evaluation(run, result, step)
        scores = " | ".join(f"{k} {v:.4f}" for k, v in result.metrics.items())
        tqdm.write(f"eval @ step {step} | {scores}" + (" | best so far" if improved else ""))
    meter.exclude(time.perf_counter() - started)  # tokens/s counts training time only
    return result


def track_evaluation(run: Run, result: EvalResult, step: int) -> None:
    names = run.splits.label_names
    run.tracker.scalars({f"eval/{k}": v for k, v in result.metrics.items()}, step)
    run.tracker.scalars({"eval/tokens_per_second": result.real_tokens / max(result.seconds, 1e-9)}, step)
    run.tracker.figure("eval/confusion_matrix", confusion_figure(result.confusion, names), step)
    if run.cfg.train.highest_loss_examples:
        texts = run.splits.raw["validation"][run.cfg.data.text_column]
        table = highest_loss_table(result, texts, names, run.cfg.train.highest_loss_examples)
        run.tracker.text("eval/highest_loss_examples", table, step)


def announce(run: Run) -> None:
    """The topology and step plan, printed once by the main process."""
    acc, train_cfg, plan = run.accelerator, run.cfg.train, run.plan
    global_batch = train_cfg.per_device_batch_size * train_cfg.gradient_accumulation_steps * acc.num_processes
    sizes = ", ".join(f"{split} {len(ds):,}" for split, ds in run.splits.tokenized.items())
    cached = [split for split, hit in run.splits.cache_hits.items() if hit]
    trainable = sum(p.numel() for p in run.model.parameters() if p.requires_grad)
    acc.print(
        f"ptrain: {acc.num_processes} process(es) on {acc.device.type}, precision {train_cfg.mixed_precision}, "
        f"per-device batch {train_cfg.per_device_batch_size} x accumulation {train_cfg.gradient_accumulation_steps} "
        f"x {acc.num_processes} = global batch {global_batch}\n"
        f"ptrain: rows {sizes}; tokenization cache reused for {cached or 'none'}; "
        f"{len(run.splits.label_names)} labels; {trainable:,} trainable parameters\n"
        f"ptrain: {plan.steps_per_epoch} optimizer steps per epoch, {plan.total_steps} in total "
        f"({plan.epochs} epoch(s)), warmup {plan.warmup_steps}\nptrain: run folder {run.run_dir}"
    )
    run.tracker.text("config", "    " + to_yaml(run.cfg).replace("\n", "\n    "))


def finish(run: Run, state: LoopState, wall_seconds: float) -> None:
    """Final evaluation if the last step was not scored, final/ export, test scores, metrics.json."""
    meter = TrainMeter(run.accelerator.device)
    if state.last_eval_step != state.global_step:
        evaluate_and_track(run, state, meter)
    export_model(run.accelerator, run.model, run.tokenizer, run.run_dir / "final")
    metrics = {"final": {**state.last, "step": state.global_step}, "best": state.best}
    if "test" in run.splits.tokenized:
        metrics["test_final"] = test_metrics(run)
    metrics["train"] = {
        "optimizer_steps": state.global_step, "epochs": state.global_step / run.plan.steps_per_epoch,
        "early_stopped": state.early_stopped, "wall_seconds": wall_seconds,
    }  # fmt: skip
    if run.accelerator.is_main_process:
        write_json(run.run_dir / "metrics.json", metrics)
        run.tracker.hparams(hparams_of(run.cfg), summary_metrics(metrics), state.global_step)
        run.tracker.close()
        run.accelerator.print(
            f"ptrain: best {run.cfg.train.metric_for_best} {state.best_value:.4f} at step {state.best['step']}; "
            f"wall time {wall_seconds:.0f}s\nptrain: TensorBoard: tensorboard --logdir {run.run_dir.parent}\n"
            f"ptrain: model: {run.run_dir / 'best'} (best), {run.run_dir / 'final'} (final); "
            f"metrics: {run.run_dir / 'metrics.json'}"
        )


def test_metrics(run: Run) -> dict[str, float]:
    collator = collate.classification_collator(run.tokenizer, run.cfg.train.mixed_precision)
    loader = run.accelerator.prepare(batching.eval_loader(run.cfg, run.splits.tokenized["test"], collator))
    return evaluate(run.model, loader, run.accelerator, len(run.splits.label_names)).metrics


def hparams_of(cfg: Config) -> dict:
    train_cfg = cfg.train
    return {
        "model": cfg.model.name_or_path or "scratch", "learning_rate": train_cfg.learning_rate,
        "per_device_batch_size": train_cfg.per_device_batch_size,
        "gradient_accumulation_steps": train_cfg.gradient_accumulation_steps, "epochs": train_cfg.epochs,
        "max_steps": train_cfg.max_steps or 0, "warmup_steps": train_cfg.warmup_steps or 0,
        "warmup_ratio": train_cfg.warmup_ratio or 0.0, "weight_decay": train_cfg.weight_decay,
        "label_smoothing": train_cfg.label_smoothing, "mixed_precision": train_cfg.mixed_precision,
        "max_length": cfg.data.max_length, "group_by_length": cfg.data.group_by_length,
        "freeze_encoder": cfg.model.freeze_encoder, "seed": train_cfg.seed,
    }  # fmt: skip


def summary_metrics(metrics: dict) -> dict[str, float]:
    return {f"hparams/{kind}_{name}": metrics[kind][name] for kind in ("best", "final") for name in METRICS}
