"""The HF Trainer side of `ptrain bench`: transformers.Trainer on the same rows, model, collator and settings."""

from __future__ import annotations

import contextlib
import io
import statistics
import sys
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ptrain.errors import ConfigError
from ptrain.runtime.hardware import PeakMemory
from ptrain.training.optim import wsd_decay_steps
from ptrain.training.recipe import load_model
from ptrain.training.run import Run


class CountingCollator:
    """Wraps a collator to count real tokens and padded slots of every batch it builds."""

    def __init__(self, collator):
        self.collator, self.real_tokens, self.slots = collator, 0, 0

    def __call__(self, features):
        batch = self.collator(features)
        self.real_tokens += int(batch["attention_mask"].sum())
        self.slots += batch["attention_mask"].numel()
        return batch


def time_hf_trainer(run: Run, steps: int, warmup_steps: int, output_dir: Path, eval_passes: int) -> dict:
    from transformers import Trainer, TrainerCallback

    clock: dict[int, tuple[float, int]] = {}

    progress = tqdm(total=warmup_steps + steps, desc="HF Trainer train", file=sys.stderr, mininterval=2, leave=False)

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            progress.update()
            if state.global_step in (warmup_steps, warmup_steps + steps):
                clock[state.global_step] = (time.perf_counter(), state.num_input_tokens_seen)

    cfg, data, device = run.cfg, run.data, run.runtime.accelerator.device
    collator = CountingCollator(run.task.collator(cfg, data.tokenizer, device))
    args = training_arguments(
        cfg, output_dir, max_steps=steps + warmup_steps, include_num_input_tokens_seen="non_padding"
    )
    trainer = Trainer(
        model=load_model(cfg, run.task, data),  # with model.lora, the same adapters as ptrain's side
        args=args,
        train_dataset=run.task.trainer_rows(data.splits.tokenized["train"]),
        data_collator=collator,
        callbacks=[Clock()],
    )
    with PeakMemory(device) as memory, contextlib.redirect_stdout(io.StringIO()):
        trainer.train()  # (the Trainer prints its metrics dict)
    progress.close()
    (start, tokens_start), (end, tokens_end) = clock[warmup_steps], clock[warmup_steps + steps]
    samples = steps * cfg.train.per_device_batch_size * cfg.train.gradient_accumulation_steps
    train = {
        "tokens_per_second": (tokens_end - tokens_start) / (end - start),
        "samples_per_second": samples / (end - start),
        "padding_fraction": 1 - collator.real_tokens / max(collator.slots, 1),
        **memory.report(),
    }
    rows = run.task.trainer_rows(data.splits.tokenized["validation"])
    return {"train": train, "eval": time_hf_evaluate(trainer, rows, device, collator, eval_passes)}


def time_hf_evaluate(trainer, rows, device: torch.device, collator: CountingCollator, passes: int) -> dict:
    """Trainer.evaluate on the validation rows: a warm-up call, then the median of `passes` timed calls."""
    with contextlib.redirect_stdout(io.StringIO()):
        trainer.evaluate(eval_dataset=rows)
    seconds = []
    with PeakMemory(device) as memory, contextlib.redirect_stdout(io.StringIO()):
        for _ in range(passes):
            collator.real_tokens, started = 0, time.perf_counter()
            trainer.evaluate(eval_dataset=rows)
            seconds.append(time.perf_counter() - started)
    median = statistics.median(seconds)
    return {
        "tokens_per_second": collator.real_tokens / median,
        "samples_per_second": len(rows) / median,
        **memory.report(),
    }


def training_arguments(cfg, output_dir: Path, arguments_class=None, **settings):
    """TrainingArguments (or `arguments_class`, a subclass such as TRL's SFTConfig) with the config's batch,
    optimizer, clipping, precision, seed and length grouping; `settings` add or replace the rest (steps, schedule,
    evaluation). The config's train.mixed_precision must be resolved (setup's run.cfg): the Trainer then runs in the
    precision ptrain's `auto` rule picked."""
    from transformers import TrainingArguments

    train = cfg.train
    shared = dict(
        output_dir=str(output_dir),
        learning_rate=train.learning_rate,
        per_device_train_batch_size=train.per_device_batch_size,
        per_device_eval_batch_size=train.eval_batch_size,
        gradient_accumulation_steps=train.gradient_accumulation_steps,
        weight_decay=train.weight_decay,
        adam_beta1=train.adam_beta1,
        adam_beta2=train.adam_beta2,
        adam_epsilon=train.adam_epsilon,
        max_grad_norm=train.max_grad_norm,
        bf16=train.mixed_precision == "bf16",
        fp16=train.mixed_precision == "fp16",
        use_cpu=not torch.cuda.is_available(),
        seed=train.seed,
        report_to=[],
        save_strategy="no",
        eval_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
        train_sampling_strategy="group_by_length" if cfg.data.group_by_length else "random",
        dataloader_num_workers=cfg.data.num_workers,
        gradient_checkpointing=train.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False},
    )
    shared |= hf_optimizer(train) | hf_schedule(train, settings)
    return (arguments_class or TrainingArguments)(**{**shared, **settings})


def hf_optimizer(train) -> dict:
    """The Trainer's `optim` for train.optimizer (adamw: the Trainer's default, fused AdamW where torch has it)."""
    if train.optimizer == "sgd":
        return {"optim": "sgd", "optim_args": f"momentum={train.sgd_momentum},nesterov={train.sgd_nesterov}"}
    if train.optimizer == "adafactor":
        return {"optim": "adafactor"}  # the Trainer's: scale_parameter=False, relative_step=False, as ptrain's
    return {}


def hf_schedule(train, settings: dict) -> dict:
    """The Trainer's lr_scheduler_type and its kwargs for train.lr_schedule: the same transformers function with
    the same arguments (wsd's decay steps from the run's max_steps and integer warmup_steps in `settings`)."""
    floor = {"min_lr_rate": train.min_lr_ratio}
    if train.lr_schedule == "cosine":
        return {"lr_scheduler_type": "cosine_with_min_lr", "lr_scheduler_kwargs": floor}
    if train.lr_schedule == "constant":
        return {"lr_scheduler_type": "constant_with_warmup"}
    if train.lr_schedule == "polynomial":
        kwargs = {"lr_end": train.min_lr_ratio * train.learning_rate, "power": train.poly_power}
        return {"lr_scheduler_type": "polynomial", "lr_scheduler_kwargs": kwargs}
    if train.lr_schedule == "wsd":
        warmup = settings.get("warmup_steps", 0)
        if "max_steps" not in settings or not isinstance(warmup, int):
            raise ConfigError(
                "train.lr_schedule=wsd: this comparison sets the HF side's length in epochs or its warmup as a "
                "share, so it cannot mirror wsd's decay steps; compare under another train.lr_schedule"
            )
        decay = wsd_decay_steps(settings["max_steps"], warmup, train)
        kwargs = {"num_decay_steps": decay, "min_lr_ratio": train.min_lr_ratio}
        return {"lr_scheduler_type": "warmup_stable_decay", "lr_scheduler_kwargs": kwargs}
    return {"lr_scheduler_type": "linear"}
