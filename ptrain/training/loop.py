"""The training loop: epochs of micro-batches, each optimizer step forward -> loss -> backward -> clip -> step ->
schedule -> zero -> log, then evaluation, checkpoint and preemption checks on the configured steps."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable

from tqdm.auto import tqdm

from ptrain.data.collate import pop_token_mask
from ptrain.data.mixtures import SOURCE_COLUMN
from ptrain.training.checkpointing.resume import checkpoint_run
from ptrain.training.evaluation import evaluate_and_track
from ptrain.training.gradients import clip_gradients
from ptrain.training.meter import TrainMeter
from ptrain.training.run import LoopState, Run
from ptrain.training.source_tokens import logged_source_tokens
from ptrain.training.stability import record_step, step_is_finite
from ptrain.training.step_verdict import agree
from ptrain.training.window import micro_step, window_scale, windows


def fit(run: Run, state: LoopState, meter: TrainMeter) -> None:
    """Epochs until the plan's last step, an early stop or a preemption; an evaluation (and, if configured, a
    checkpoint) closes every epoch."""
    plan, train_cfg = run.optim.plan, run.cfg.train
    progress = tqdm(
        total=plan.total_steps,
        initial=state.global_step,
        desc="train",
        disable=not run.runtime.accelerator.is_main_process,
        mininterval=1 if sys.stderr.isatty() else 60,
    )  # a log file gets a line a minute
    try:
        if train_cfg.eval_at_start and state.global_step == 0:
            evaluate_and_track(run, state, meter)  # the model as loaded: the "before" of a fine-tune
        while state.epoch < plan.epochs and not state.stop:
            batches = epoch_batches(run, state, run.data.train_loader)
            train_epoch(run, state, meter, progress, batches, stop_at_step=plan.total_steps)
            if state.stop:
                break
            if state.last_eval_step != state.global_step:
                evaluate_and_track(run, state, meter)
            state.epoch, state.micro_batches_in_epoch = state.epoch + 1, 0
            if train_cfg.checkpoint_at_epoch_end and state.last_checkpoint_step != state.global_step:
                checkpoint_run(run, state, meter)
    finally:
        progress.close()  # before any error message, which then stays the last line


def train_epoch(
    run: Run, state: LoopState, meter: TrainMeter, progress: tqdm, batches: Iterable[dict], stop_at_step: int
) -> None:
    """One pass over `batches`, ending early at optimizer step `stop_at_step`, an early stop or a preemption."""
    run.optim.model.train()  # dropout on (a freshly loaded model is in eval mode; evaluation switches it back)
    for window in windows(batches, run.cfg.train.gradient_accumulation_steps):
        state.micro_batches_in_epoch += len(window)
        started = time.perf_counter()
        stop_requested = optimizer_step(run, state, meter, window)
        state.train_seconds += time.perf_counter() - started  # the step ended in a host read: its work is done
        state.global_step += 1
        progress.update()
        after_optimizer_step(run, state, meter, progress, stop_at_step, stop_requested)
        if state.stop:
            return


def optimizer_step(run: Run, state: LoopState, meter: TrainMeter, window: list[dict]) -> bool:
    """forward -> loss -> backward for each micro-batch of the window, then clip -> step -> schedule -> zero.
    Returns whether any process was asked to stop (SIGTERM/SIGINT)."""
    accelerator, optim, train_cfg, engine = run.runtime.accelerator, run.optim, run.cfg.train, run.runtime.engine
    scale = window_scale(accelerator, optim.loss_fn, window)  # the window's real targets on all processes
    for position, batch in enumerate(window):
        with micro_step(accelerator, optim.model, last=position == len(window) - 1):
            labels, _, real = batch.pop("labels"), batch.pop("idx"), pop_token_mask(batch)
            sources = batch.pop(SOURCE_COLUMN, None)  # data.mixture: each row's source, one-hot
            logits = run.task.logits(optim.model(**batch))
            loss_sum = optim.loss_fn(logits, labels)  # summed over targets: logged as it is
            accelerator.backward(loss_sum * scale.factor)  # DeepSpeed clips and steps in the last one
        meter.add_micro_batch(loss_sum.detach(), real, sources)
    grad_norm = clip_gradients(
        optim.model, optim.optimizer, accelerator, train_cfg.max_grad_norm, optim.clip_in_optimizer
    )
    verdict = agree(accelerator, meter.window_loss, grad_norm, run.runtime.preemption.received is not None)
    engine_skipped = engine.steps_in_backward and not optim.model.was_step_applied()
    finite = step_is_finite(verdict, engine_skipped, scaler_owns_gradients=accelerator.scaler is not None)
    scaler_skipped = False
    if record_step(finite, state, train_cfg.nonfinite, train_cfg.max_consecutive_nonfinite):
        scaler_skipped = run.runtime.loss_scaling.step(optim.optimizer)  # a no-op under DeepSpeed (stepped already)
        state.scaler_skips += scaler_skipped
        if optim.ema is not None and not scaler_skipped:
            optim.ema.update()
    else:
        run.runtime.loss_scaling.skip()
    optim.scheduler.step()  # skipped steps too: the learning rate of step k is the plan's under every engine
    optim.optimizer.zero_grad(set_to_none=True)
    meter.end_window(scale.targets, grad_norm, skipped=not finite or scaler_skipped)
    return verdict.stop_requested


def epoch_batches(run: Run, state: LoopState, loader: Iterable[dict]) -> Iterable[dict]:
    """This epoch's batches of `loader` (the run's train loader, or a view of it that times each batch). The
    shuffle is seeded by (seed, epoch), so a resumed run sees the same order; the batches it already consumed
    are skipped by index in the batch sampler, never loaded or collated. A stream (data.streaming) goes on from
    where its state stands."""
    if run.data.stream is not None:
        return run.data.stream.batches()
    run.data.shuffle.manual_seed(run.cfg.train.seed + state.epoch)
    if state.micro_batches_in_epoch:
        return run.runtime.accelerator.skip_first_batches(loader, state.micro_batches_in_epoch)
    return loader


def after_optimizer_step(
    run: Run, state: LoopState, meter: TrainMeter, progress: tqdm, stop_at_step: int, stop_requested: bool
) -> None:
    step, train_cfg = state.global_step, run.cfg.train
    run.callbacks.dispatch("on_step_end", run, state)
    if step % train_cfg.log_every_steps == 0:
        log_training(run, state, meter, progress)
    if train_cfg.eval_every_steps and step % train_cfg.eval_every_steps == 0:
        evaluate_and_track(run, state, meter)
    if train_cfg.checkpoint_every_steps and step % train_cfg.checkpoint_every_steps == 0:
        checkpoint_run(run, state, meter)
    if run.callbacks.take_save() and state.last_checkpoint_step != step:
        checkpoint_run(run, state, meter)  # a callback asked for one
    if step >= stop_at_step:
        state.stop = True
    elif stop_requested or (run.runtime.accelerator.num_processes == 1 and run.runtime.preemption.received):
        # signalled on any process (agreed at this step's verdict), or alone and signalled since: stop now
        state.stop, state.interrupted_by = True, run.runtime.preemption.received or "SIGTERM"


def learning_rates(run: Run) -> dict[str, float]:
    """train.learning_rate at this point of the schedule, and each part's rate when the parts differ."""
    groups = run.optim.optimizer.param_groups
    factor = groups[0]["lr"] / groups[0]["initial_lr"]
    rates = {"learning_rate": factor * run.cfg.train.learning_rate}
    parts = {group["name"]: group["lr"] for group in groups}
    if len(parts) > 1:
        rates.update({f"learning_rate/{name}": lr for name, lr in parts.items()})
    return rates


def log_training(run: Run, state: LoopState, meter: TrainMeter, progress: tqdm) -> None:
    plan, accelerator = run.optim.plan, run.runtime.accelerator
    stats = meter.read(accelerator)
    stats.update(learning_rates(run))
    stats.update(logged_source_tokens(run, state, meter))
    stats["epoch"] = state.global_step / plan.steps_per_epoch
    stats["nonfinite_skips"] = state.nonfinite_skips
    if run.runtime.accelerator.scaler is not None:
        stats["scaler_skips"] = state.scaler_skips
    run.outputs.tracker.scalars({f"train/{k}": v for k, v in stats.items()}, state.global_step)
    trained = "loss" in stats  # else every step since the last log was skipped
    progress.set_postfix(
        loss=f"{stats['loss']:.4f}" if trained else "skipped",
        lr=f"{stats['learning_rate']:.2e}",
        tok_s=f"{stats['tokens_per_second']:,.0f}",
        refresh=False,
    )
    scores = f"loss {stats['loss']:.4f}" if trained else "skipped (non-finite)"
    line = (
        f"step {state.global_step}/{plan.total_steps} | epoch {stats['epoch']:.2f} | {scores} | "
        f"lr {stats['learning_rate']:.2e} | "
        + (f"grad_norm {stats['grad_norm']:.3f} | " if trained else "")
        + f"{stats['tokens_per_second']:,.0f} tok/s | padding {stats['padding_fraction']:.1%}"
    )
    if accelerator.is_main_process:
        tqdm.write(line)
