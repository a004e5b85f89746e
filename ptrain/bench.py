"""`ptrain bench`: training throughput of ptrain's loop, and of the HF Trainer on the same job, in one run.

Both sides get the same tokenized rows, model, collator, batch size, accumulation, precision and length
grouping; each runs warm-up steps first, then the timed steps. Tokens are real (non-pad) tokens.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ptrain.config import Config
from ptrain.meter import TrainMeter
from ptrain.run import Run
from ptrain.state import LoopState
from ptrain.train import setup, train_epoch


class CountingCollator:
    """Wraps a collator to count real tokens and padded slots of every batch it builds."""

    def __init__(self, collator):
        self.collator, self.real_tokens, self.slots = collator, 0, 0

    def __call__(self, features):
        batch = self.collator(features)
        self.real_tokens += int(batch["attention_mask"].sum())
        self.slots += batch["attention_mask"].numel()
        return batch


def bench(cfg: Config, steps: int, warmup_steps: int, compare_hf: bool) -> dict:
    with tempfile.TemporaryDirectory(prefix="ptrain-bench-") as tmp:
        train_cfg = cfg.train.model_copy(update={"log_every_steps": 10**9, "eval_every_steps": None})
        cfg = cfg.model_copy(update={"output_dir": tmp, "train": train_cfg})
        run, _ = setup(cfg, track=False)
        report = {"config": cfg.name, "steps": steps, "warmup_steps": warmup_steps,
                  "device": run.accelerator.device.type, "precision": cfg.train.mixed_precision,
                  "per_device_batch_size": cfg.train.per_device_batch_size,
                  "group_by_length": cfg.data.group_by_length, "threads": torch.get_num_threads(),
                  "ptrain": time_ptrain(run, steps, warmup_steps)}  # fmt: skip
        if compare_hf:
            report["hf_trainer"] = time_hf_trainer(run, steps, warmup_steps, Path(tmp) / "hf")
            ratio = report["ptrain"]["tokens_per_second"] / report["hf_trainer"]["tokens_per_second"]
            report["ptrain_over_hf_tokens_per_second"] = ratio
    return report


def time_ptrain(run: Run, steps: int, warmup_steps: int) -> dict:
    """ptrain's own train_epoch, as `ptrain train` runs it; timing starts after the warm-up steps."""
    state, meter = LoopState(), TrainMeter(run.accelerator.device)
    progress = tqdm(disable=True)
    for stop_at in (warmup_steps, warmup_steps + steps):
        run.plan = dataclasses.replace(run.plan, total_steps=stop_at)
        meter.read(run.accelerator)  # starts the interval
        state.stop = False
        while not state.stop:
            train_epoch(run, state, meter, progress)
    stats = meter.read(run.accelerator)
    return {k: stats[k] for k in ("tokens_per_second", "samples_per_second", "padding_fraction")}


def time_hf_trainer(run: Run, steps: int, warmup_steps: int, output_dir: Path) -> dict:
    """transformers.Trainer on the same rows, a fresh copy of the same model, and the same settings."""
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from ptrain import collate
    from ptrain.model import load_classifier

    cfg = run.cfg
    clock: dict[int, tuple[float, int]] = {}

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step in (warmup_steps, warmup_steps + steps):
                clock[state.global_step] = (time.perf_counter(), state.num_input_tokens_seen)

    collator = CountingCollator(collate.classification_collator(run.tokenizer, cfg.train.mixed_precision))
    args = TrainingArguments(
        output_dir=str(output_dir), max_steps=warmup_steps + steps, learning_rate=cfg.train.learning_rate,
        per_device_train_batch_size=cfg.train.per_device_batch_size, weight_decay=cfg.train.weight_decay,
        gradient_accumulation_steps=cfg.train.gradient_accumulation_steps, max_grad_norm=cfg.train.max_grad_norm,
        bf16=cfg.train.mixed_precision == "bf16", fp16=cfg.train.mixed_precision == "fp16",
        use_cpu=not torch.cuda.is_available(), seed=cfg.train.seed, report_to=[], save_strategy="no",
        eval_strategy="no", logging_strategy="no", disable_tqdm=True, include_num_input_tokens_seen="non_padding",
        train_sampling_strategy="group_by_length" if cfg.data.group_by_length else "random",
        dataloader_num_workers=cfg.data.num_workers,
    )  # fmt: skip
    train_rows = run.splits.tokenized["train"].remove_columns(["idx"])
    trainer = Trainer(model=load_classifier(cfg, run.splits.label_names), args=args, train_dataset=train_rows,
                      data_collator=collator, callbacks=[Clock()])  # fmt: skip
    trainer.train()
    (start, tokens_start), (end, tokens_end) = clock[warmup_steps], clock[warmup_steps + steps]
    seconds = end - start
    samples = steps * cfg.train.per_device_batch_size * cfg.train.gradient_accumulation_steps
    return {
        "tokens_per_second": (tokens_end - tokens_start) / seconds,
        "samples_per_second": samples / seconds,
        "padding_fraction": 1 - collator.real_tokens / max(collator.slots, 1),
    }


def print_report(report: dict, json_path: str | None) -> None:
    rows = [("ptrain", report["ptrain"])] + ([("HF Trainer", report["hf_trainer"])] if "hf_trainer" in report else [])
    print(f"bench {report['config']}: {report['steps']} timed steps after {report['warmup_steps']} warm-up, "
          f"{report['device']} x {report['threads']} threads, {report['precision']}, "
          f"batch {report['per_device_batch_size']}, group_by_length {report['group_by_length']}")  # fmt: skip
    print(f"{'':<12}{'real tokens/s':>15}{'samples/s':>12}{'padding':>10}")
    for name, stats in rows:
        print(f"{name:<12}{stats['tokens_per_second']:>15,.0f}{stats['samples_per_second']:>12,.1f}"
              f"{stats['padding_fraction']:>10.1%}")  # fmt: skip
    if "ptrain_over_hf_tokens_per_second" in report:
        print(f"ptrain / HF Trainer, real tokens/s: {report['ptrain_over_hf_tokens_per_second']:.2f}x")
    if json_path:
        Path(json_path).write_text(json.dumps(report, indent=2))
