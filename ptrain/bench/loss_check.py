"""`ptrain bench CONFIG --compare-trl --loss-check`: ptrain and TRL's SFTTrainer (default and packed settings) each
train the config's train.epochs over the same conversations from the same initial weights, so every side trains on
the same labelled tokens (counted per side); ptrain's own evaluation (the chat task's assistant-token loss on the
validation rows, under the run's autocast) then scores every side's model, TRL's included."""

from __future__ import annotations

import contextlib
import io
import sys
import tempfile
from pathlib import Path

from tqdm.auto import tqdm

from ptrain.bench.throughput import TimedLoader, bench_config, progress_line, run_steps
from ptrain.bench.trl_sft import SETTINGS, sft_trainer, weights_of
from ptrain.config import Config
from ptrain.errors import ConfigError
from ptrain.tasks import EvalContext
from ptrain.training.meter import TrainMeter
from ptrain.training.recipe import setup
from ptrain.training.run import LoopState, Run


def loss_check(cfg: Config) -> dict:
    """Validation loss of every side after the same training tokens, and TRL's relative to ptrain's."""
    if cfg.train.max_steps is not None:
        raise ConfigError(
            "--loss-check trains train.epochs epochs on every side (the same labelled tokens); unset train.max_steps"
        )
    if cfg.train.lr_schedule == "wsd":  # the TRL side's length is in epochs: its wsd decay steps cannot be set
        raise ConfigError("train.lr_schedule=wsd: --loss-check cannot mirror it on the TRL side; use another schedule")
    with tempfile.TemporaryDirectory(prefix="ptrain-loss-check-") as tmp:
        run, _ = setup(bench_config(cfg, tmp), track=False)
        weights = weights_of(run.runtime.accelerator.unwrap_model(run.optim.model))
        report = {"epochs": cfg.train.epochs, "ptrain": train_ptrain(run)}
        for settings in SETTINGS:
            report[f"trl_{settings}"] = train_trl(run, weights, Path(tmp) / f"trl_{settings}", settings)
    ours = report["ptrain"]["validation_loss"]
    report["relative_difference"] = {
        settings: report[f"trl_{settings}"]["validation_loss"] / ours - 1 for settings in SETTINGS
    }
    return report


def train_ptrain(run: Run) -> dict:
    """ptrain's loop through the run's whole plan (train.epochs), then its validation loss."""
    plan = run.optim.plan
    progress_line(f"loss check, ptrain: {plan.total_steps} steps ({plan.epochs} epochs)")
    state, meter, loader = LoopState(), TrainMeter(run.runtime.accelerator.device), TimedLoader(run.data.train_loader)
    progress = tqdm(total=plan.total_steps, desc="ptrain loss check", file=sys.stderr, mininterval=2, leave=False)
    run_steps(run, state, meter, progress, loader, stop_at_step=plan.total_steps)
    progress.close()
    return {
        "steps": state.global_step,
        "labelled_tokens": int(loader.labelled_tokens),
        "validation_loss": validation_loss(run, run.optim.model),
    }


def train_trl(run: Run, weights: dict, output_dir: Path, settings: str) -> dict:
    """SFTTrainer for train.epochs from `weights`, with ptrain's schedule shape (hf_trainer.hf_schedule; the same
    warm-up steps or share of its own steps), then ptrain's validation loss of the model it trained."""
    train = run.cfg.train
    warmup = train.warmup_steps if train.warmup_steps is not None else (train.warmup_ratio or 0.0)  # <1: a share
    trainer, counter = sft_trainer(
        run,
        weights,
        output_dir,
        settings,
        num_train_epochs=train.epochs,
        warmup_steps=warmup,
    )
    progress_line(f"loss check, TRL {settings}: {train.epochs} epochs")
    with contextlib.redirect_stdout(io.StringIO()):
        trainer.train()
    return {
        "steps": trainer.state.global_step,
        "labelled_tokens": counter.totals()["labelled_tokens"],
        "validation_loss": validation_loss(run, trainer.accelerator.unwrap_model(trainer.model)),
    }


def validation_loss(run: Run, model) -> float:
    """The chat task's evaluate on the run's validation loader: mean cross entropy per assistant token, in the
    run's precision; no raw rows in the context, so no sample answers are generated."""
    data, accelerator = run.data, run.runtime.accelerator
    context = EvalContext(run.cfg, data.tokenizer, data.splits.label_names, None)
    with accelerator.autocast():
        return run.task.evaluate(model, data.eval_loader, accelerator, context).metrics["loss"]
