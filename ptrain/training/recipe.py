"""The training recipe: accelerator -> tokenizer and data -> step plan -> run folder -> model, optimizer and
schedule -> prepare -> (resume) -> loop (forward, loss, backward, clip, step, schedule, zero, log, evaluate,
checkpoint) -> export."""

from __future__ import annotations

import math
import sys
import time

from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm.auto import tqdm

from ptrain.config.schema import Config, to_yaml
from ptrain.data import batching
from ptrain.data.splits import Splits, load_raw_splits, tokenize_splits
from ptrain.model.loading import load_tokenizer
from ptrain.outputs.atomic import write_text
from ptrain.outputs.export import export_model
from ptrain.outputs.run_dir import create_run_dir, running_marker
from ptrain.outputs.tracking import Tracker
from ptrain.tasks import EvalContext, Task, get_task
from ptrain.tasks.loss import normalise_gradients
from ptrain.training.distributed import build_accelerator
from ptrain.training.evaluation import evaluate_and_track
from ptrain.training.meter import TrainMeter
from ptrain.training.optim import build_optimizer, build_scheduler, plan_steps
from ptrain.training.precision import resolve_config_precision
from ptrain.training.preemption import EXIT_CODES, Preemption
from ptrain.training.resume import find_resume, restore, resume_command, save
from ptrain.training.run import Run
from ptrain.training.stability import step_is_finite
from ptrain.training.state import LoopState
from ptrain.training.summary import announce, write_results


def train(cfg: Config) -> int:
    """Fine-tune as the config says; returns the process exit code (non-zero when preempted)."""
    started = time.perf_counter()
    run, checkpoint = setup(cfg)
    with running_marker(run.run_dir, run.accelerator.is_main_process):
        state, meter = restore(run, checkpoint) if checkpoint else (LoopState(), TrainMeter(run.accelerator.device))
        announce(run, state)
        run.preemption.install()
        try:
            fit(run, state, meter)
        finally:
            run.preemption.uninstall()
        if state.interrupted_by:
            return stop_for_preemption(run, state, meter)
        finish(run, state, time.perf_counter() - started)
    return 0


def setup(cfg: Config, track: bool = True) -> tuple[Run, object]:
    """Everything before the first step. Data errors and the step plan come before the run folder exists.
    run.cfg holds train.mixed_precision as resolved for this device (what config.yaml records)."""
    cfg, precision = resolve_config_precision(cfg)
    accelerator = build_accelerator(cfg)  # refuses launches whose processes did not join one group
    set_seed(cfg.train.seed)
    checkpoint = find_resume(cfg, accelerator)
    task = get_task(cfg.task)
    tokenizer, splits = load_data(cfg, task, accelerator)
    collator = task.collator(cfg, tokenizer, accelerator.device)
    train_loader, shuffle = batching.train_loader(cfg, splits.tokenized["train"], collator)
    eval_loader = batching.eval_loader(cfg, splits.tokenized["validation"], collator)
    train_loader, eval_loader = accelerator.prepare(train_loader, eval_loader)
    plan = plan_steps(len(train_loader), cfg.train)
    run_dir = checkpoint.run_dir if checkpoint else create_run_dir(accelerator, cfg.output_dir, cfg.name, cfg.run_dir)
    if accelerator.is_main_process and not checkpoint:
        write_text(run_dir / "config.yaml", to_yaml(cfg))
    model = task.load_model(cfg, splits.label_names, tokenizer)
    model, optimizer = accelerator.prepare(model, build_optimizer(model, cfg.train))
    scheduler = accelerator.prepare(build_scheduler(optimizer, plan, accelerator.num_processes))
    # A resumed run hides the events it logged after its checkpoint: one step axis, no duplicates.
    tracker = Tracker(
        run_dir, track and accelerator.is_main_process, purge_step=checkpoint.step + 1 if checkpoint else None
    )
    loss_fn = task.build_loss(cfg, splits).to(accelerator.device)
    run = Run(
        cfg,
        task,
        accelerator,
        run_dir,
        tokenizer,
        splits,
        model,
        optimizer,
        scheduler,
        train_loader,
        eval_loader,
        shuffle,
        loss_fn,
        plan,
        tracker,
        Preemption(),
        precision,
    )
    return run, checkpoint


def load_data(cfg: Config, task: Task, accelerator: Accelerator) -> tuple[object, Splits]:
    """Tokenizer and tokenized splits. The main process (trains the tokenizer and) tokenizes first, or reads
    the caches; the others then read its caches."""
    with accelerator.main_process_first():
        raw, dropped = load_raw_splits(cfg)
        tokenizer = load_tokenizer(cfg, task, raw["train"])
        splits = tokenize_splits(cfg, raw, tokenizer, task, task.label_names(cfg, raw["train"]))
    splits.dropped = dropped
    return tokenizer, splits


def fit(run: Run, state: LoopState, meter: TrainMeter) -> None:
    progress = tqdm(
        total=run.plan.total_steps,
        initial=state.global_step,
        desc="train",
        disable=not run.accelerator.is_main_process,
        mininterval=1 if sys.stderr.isatty() else 60,
    )  # a log file gets a line a minute
    try:
        if run.cfg.train.eval_at_start and state.global_step == 0:
            evaluate_and_track(run, state, meter)  # the model as loaded: the "before" of a fine-tune
        while state.epoch < run.plan.epochs and not state.stop:
            train_epoch(run, state, meter, progress)
            if state.stop:
                break
            if state.last_eval_step != state.global_step:
                evaluate_and_track(run, state, meter)
            state.epoch, state.micro_batches_in_epoch = state.epoch + 1, 0
            if run.cfg.train.checkpoint_at_epoch_end and state.last_checkpoint_step != state.global_step:
                save(run, state, meter)
    finally:
        progress.close()  # before any error message, which then stays the last line


def train_epoch(run: Run, state: LoopState, meter: TrainMeter, progress) -> None:
    accelerator, model, train_cfg = run.accelerator, run.model, run.cfg.train
    model.train()  # dropout on (a freshly loaded model is in eval mode; evaluation switches it back)
    for batch in epoch_batches(run, state):
        state.micro_batches_in_epoch += 1
        with accelerator.accumulate(model):
            labels, _ = batch.pop("labels"), batch.pop("idx")
            logits = model(**batch).logits
            loss_sum = run.loss_fn(logits, labels)  # summed; normalised per window below
            accelerator.backward(loss_sum)
            meter.add_micro_batch(loss_sum.detach(), run.loss_fn.target_weight(labels), batch["attention_mask"])
            if accelerator.sync_gradients:
                targets = normalise_gradients(model.parameters(), accelerator, meter.window_weight)
                grad_norm = accelerator.clip_grad_norm_(model.parameters(), train_cfg.max_grad_norm or math.inf)
                finite = step_is_finite(
                    accelerator,
                    meter.window_loss,
                    grad_norm,
                    state,
                    train_cfg.nonfinite,
                    train_cfg.max_consecutive_nonfinite,
                )
                if finite:
                    run.optimizer.step()
                run.scheduler.step()
                run.optimizer.zero_grad(set_to_none=True)
                meter.end_window(targets, grad_norm, skipped=not finite)
        if accelerator.sync_gradients:
            state.global_step += 1
            progress.update()
            after_optimizer_step(run, state, meter, progress)
            if state.stop:
                return


def epoch_batches(run: Run, state: LoopState):
    """This epoch's batches. The shuffle is seeded by (seed, epoch), so a resumed run sees the same order;
    the batches it already consumed are skipped by index in the batch sampler, never loaded or collated."""
    run.shuffle.manual_seed(run.cfg.train.seed + state.epoch)
    if state.micro_batches_in_epoch:
        return run.accelerator.skip_first_batches(run.train_loader, state.micro_batches_in_epoch)
    return run.train_loader


def after_optimizer_step(run: Run, state: LoopState, meter: TrainMeter, progress) -> None:
    step, train_cfg = state.global_step, run.cfg.train
    if step % train_cfg.log_every_steps == 0:
        log_training(run, state, meter, progress)
    if train_cfg.eval_every_steps and step % train_cfg.eval_every_steps == 0:
        evaluate_and_track(run, state, meter)
    if train_cfg.checkpoint_every_steps and step % train_cfg.checkpoint_every_steps == 0:
        save(run, state, meter)
    if step >= run.plan.total_steps:
        state.stop = True
    elif signal_name := run.preemption.requested(run.accelerator):
        state.stop, state.interrupted_by = True, signal_name


def log_training(run: Run, state: LoopState, meter: TrainMeter, progress) -> None:
    stats = meter.read(run.accelerator)
    stats["learning_rate"] = run.scheduler.get_last_lr()[0]
    stats["epoch"] = state.global_step / run.plan.steps_per_epoch
    stats["nonfinite_skips"] = state.nonfinite_skips
    run.tracker.scalars({f"train/{k}": v for k, v in stats.items()}, state.global_step)
    progress.set_postfix(
        loss=f"{stats['loss']:.4f}",
        lr=f"{stats['learning_rate']:.2e}",
        tok_s=f"{stats['tokens_per_second']:,.0f}",
        refresh=False,
    )
    line = (
        f"step {state.global_step}/{run.plan.total_steps} | epoch {stats['epoch']:.2f} | loss {stats['loss']:.4f} | "
        f"lr {stats['learning_rate']:.2e} | grad_norm {stats['grad_norm']:.3f} | "
        f"{stats['tokens_per_second']:,.0f} tok/s | padding {stats['padding_fraction']:.1%}"
    )
    if run.accelerator.is_main_process:
        tqdm.write(line)


def stop_for_preemption(run: Run, state: LoopState, meter: TrainMeter) -> int:
    """The current optimizer step is done: checkpoint it and say how to continue."""
    path = save(run, state, meter) if state.last_checkpoint_step != state.global_step else None
    run.tracker.close()
    where = path or f"the checkpoint of step {state.global_step}"
    run.accelerator.print(
        f"ptrain: stopped by {state.interrupted_by} after step {state.global_step}; saved {where}\n"
        f"ptrain: continue with: {resume_command()}"
    )
    return EXIT_CODES[state.interrupted_by]


def finish(run: Run, state: LoopState, wall_seconds: float) -> None:
    """Final evaluation if the last step was not scored, final/ export, test scores, metrics.json."""
    meter = TrainMeter(run.accelerator.device)
    if state.last_eval_step != state.global_step:
        evaluate_and_track(run, state, meter)
    export_model(run.accelerator, run.model, run.tokenizer, run.run_dir / "final")
    write_results(run, state, score_test_split(run) if "test" in run.splits.tokenized else None, wall_seconds)
    run.tracker.close()


def score_test_split(run: Run) -> dict[str, float]:
    collator = run.task.collator(run.cfg, run.tokenizer, run.accelerator.device)
    loader = run.accelerator.prepare(batching.eval_loader(run.cfg, run.splits.tokenized["test"], collator))
    context = EvalContext(run.cfg, run.tokenizer, run.splits.label_names, run.splits.raw["test"])
    return run.task.evaluate(run.model, loader, run.accelerator, context).metrics
