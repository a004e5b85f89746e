"""`ptrain bench`: training and evaluation throughput of ptrain, and of the HF Trainer on the same job, in one run.

Both sides get the same tokenized rows, model, collator, batch size, accumulation, precision and length
grouping; training runs warm-up steps first, then the timed steps. Tokens are real (non-pad) tokens; MFU is
against a peak measured on the same device in the same invocation: the best rate of the model's own Linear
shapes, in the precision the run resolved to (train.mixed_precision, `auto` by ptrain/runtime/precision.py's rule).
Progress goes to stderr, the report to stdout.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

from tqdm.auto import tqdm

from ptrain.bench.trl_sft import SETTINGS as TRL_SETTINGS
from ptrain.bench.trl_sft import TRL_SIDES, time_trl, weights_of
from ptrain.config import Config
from ptrain.runtime.hardware import (
    PeakMemory,
    describe_hardware,
    hardware_line,
    inference_flops_per_token,
    linear_peak_flops,
    linear_shapes,
    training_flops_per_token,
)
from ptrain.tasks import EvalContext
from ptrain.tasks.loss import IGNORE_INDEX
from ptrain.training.loop import epoch_batches, train_epoch
from ptrain.training.meter import TrainMeter
from ptrain.training.recipe import setup
from ptrain.training.run import LoopState, Run

SIDES = ("ptrain", "hf_trainer", *TRL_SIDES)  # the report's keys, one per side measured
PROFILE_STEPS = 10
EVAL_PASSES = 3  # timed evaluation passes per side; the median is reported


class TimedLoader:
    """Iterates a DataLoader, adds up the time spent waiting for each batch and counts the labelled tokens of
    batches with token labels (-100: no target), on the batch's device: no synchronisation per batch."""

    def __init__(self, loader):
        self.loader, self.waiting_seconds, self.labelled_tokens = loader, 0.0, None

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        iterator = iter(self.loader)
        while True:
            start = time.perf_counter()
            try:
                batch = next(iterator)
            except StopIteration:
                return
            self.waiting_seconds += time.perf_counter() - start
            labels = batch.get("labels")
            if labels is not None and labels.dim() == 2:
                labelled = (labels != IGNORE_INDEX).sum()
                self.labelled_tokens = labelled if self.labelled_tokens is None else self.labelled_tokens + labelled
            yield batch


def bench_config(cfg: Config, output_dir: str) -> Config:
    """The config with its output in `output_dir` and no logging, evaluation or checkpoints during training."""
    train_cfg = cfg.train.model_copy(
        update={
            "log_every_steps": 10**9,
            "eval_every_steps": None,
            "checkpoint_at_epoch_end": False,
            "checkpoint_every_steps": None,
        }
    )
    return cfg.model_copy(update={"output_dir": output_dir, "train": train_cfg})


def bench(
    cfg: Config,
    steps: int,
    warmup_steps: int,
    compare_hf: bool,
    profile_dir: Path | None = None,
    compare_trl: bool = False,
) -> dict:
    with tempfile.TemporaryDirectory(prefix="ptrain-bench-") as tmp:
        cfg = bench_config(cfg, tmp)
        run, _ = setup(cfg, track=False)
        accelerator, precision = run.runtime.accelerator, run.runtime.precision
        device, model = accelerator.device, accelerator.unwrap_model(run.optim.model)
        hardware = describe_hardware(device)
        progress_line(f"{hardware_line(hardware)}; precision {precision.describe()}")
        if precision.warning:
            progress_line(f"warning: {precision.warning}")
        progress_line(f"measuring the {precision.name} matmul peak at the model's Linear shapes")
        shapes = linear_shapes(model, typical_rows(run))
        peak_before = linear_peak_flops(device, precision.dtype, shapes)
        flops = {"train": training_flops_per_token(model), "eval": inference_flops_per_token(model)}
        weights = weights_of(model) if compare_trl else None  # the TRL sides start where ptrain's did
        report = {
            "config": cfg.name,
            "steps": steps,
            "warmup_steps": warmup_steps,
            "device": device.type,
            "hardware": hardware,
            "threads": hardware["threads"],
            "precision": precision.name,
            "precision_reason": precision.reason,
            "per_device_batch_size": cfg.train.per_device_batch_size,
            "group_by_length": cfg.data.group_by_length,
            "train_flops_per_token": flops["train"],
            "ptrain": {"train": time_ptrain(run, steps, warmup_steps), "eval": time_ptrain_eval(run)},
        }
        if profile_dir is not None:
            report["profile"] = profile_ptrain(run, PROFILE_STEPS, profile_dir)
        if compare_hf:
            from ptrain.bench.hf_trainer import time_hf_trainer

            progress_line(
                f"HF Trainer: {warmup_steps} warm-up + {steps} timed steps, then evaluation, in {precision.name}"
            )
            report["hf_trainer"] = time_hf_trainer(run, steps, warmup_steps, Path(tmp) / "hf", EVAL_PASSES)
        if compare_trl:
            report.update(time_trl_sides(run, weights, steps, warmup_steps, Path(tmp)))
        progress_line("measuring the matmul peak again: the best of both measurements is the ceiling")
        peak_after = linear_peak_flops(device, precision.dtype, shapes)
    return with_rates(report, flops, peak_before, peak_after)


def with_rates(report: dict, flops: dict[str, float], peak_before: float, peak_after: float) -> dict:
    """The report with the measured peak, every side's MFU, ptrain's ratios to the other sides, and the warnings
    of a busy machine."""
    peak = max(peak_before, peak_after)
    report["matmul_peak_tflops"] = peak / 1e12
    report["matmul_peak_tflops_before_after"] = [peak_before / 1e12, peak_after / 1e12]
    for side in SIDES:
        for phase, stats in report.get(side, {}).items():
            stats["mfu"] = stats["tokens_per_second"] * flops[phase] / peak
    if "hf_trainer" in report:
        report["ratios"] = {
            phase: report["ptrain"][phase]["tokens_per_second"] / report["hf_trainer"][phase]["tokens_per_second"]
            for phase in ("train", "eval")
        }
    if all(side in report for side in TRL_SIDES):
        report["trl_ratios"] = trl_ratios(report)
    report["warnings"] = busy_machine_warnings(report)
    for warning in report["warnings"]:
        progress_line(f"warning: {warning}")
    return report


def time_trl_sides(run: Run, weights: dict, steps: int, warmup_steps: int, tmp: Path) -> dict:
    """TRL's SFTTrainer in each of its settings, from ptrain's initial weights (ptrain/bench/trl_sft.py)."""
    sides = {}
    for settings in TRL_SETTINGS:
        progress_line(f"TRL SFTTrainer, {settings} settings: {warmup_steps} warm-up + {steps} timed steps")
        sides[f"trl_{settings}"] = {
            "train": time_trl(run, weights, steps, warmup_steps, tmp / f"trl_{settings}", settings)
        }
    return sides


def trl_ratios(report: dict) -> dict:
    """ptrain's training rate over each TRL setting's, in real and in labelled tokens per second."""
    ours = report["ptrain"]["train"]
    return {
        side.removeprefix("trl_"): {
            key: ours[key] / report[side]["train"][key] for key in ("tokens_per_second", "labelled_tokens_per_second")
        }
        for side in TRL_SIDES
    }


def busy_machine_warnings(report: dict) -> list[str]:
    """What says another process shared the device while the bench ran: the two peak measurements apart by more
    than 20%, or an MFU above 100% (a peak measured while the machine was busier than while a side was timed)."""
    warnings = []
    before, after = report["matmul_peak_tflops_before_after"]
    if max(before, after) > 1.2 * min(before, after):
        warnings.append(
            f"the matmul peak measured {before * 1000:,.0f} GFLOP/s before the timed phases and {after * 1000:,.0f} "
            "after: something else was using the device; rerun on an idle machine before quoting these figures"
        )
    above = [f"{side} {phase}" for side in SIDES for phase, stats in report.get(side, {}).items() if stats["mfu"] > 1]
    if above:
        warnings.append(
            f"MFU above 100% ({', '.join(above)}): the device was busier while the peak was measured than while "
            "timing; rerun on an idle machine before quoting these figures"
        )
    return warnings


def progress_line(text: str) -> None:
    """A phase of the benchmark, on stderr: a long run never looks hung."""
    tqdm.write(f"bench: {text}", file=sys.stderr)


def typical_rows(run: Run) -> list[int]:
    """Rows of a training and of an evaluation batch at the mean token length: the matmul heights the model sees."""
    mean = {
        split: statistics.fmean(len(ids) for ids in run.data.splits.tokenized[split]["input_ids"])
        for split in ("train", "validation")
    }
    return [
        round(run.cfg.train.per_device_batch_size * mean["train"]),
        round(run.cfg.train.eval_batch_size * mean["validation"]),
    ]


def time_ptrain(run: Run, steps: int, warmup_steps: int) -> dict:
    """ptrain's own train_epoch, as `ptrain train` runs it; timing starts after the warm-up steps."""
    accelerator = run.runtime.accelerator
    state, meter = LoopState(), TrainMeter(accelerator.device)
    progress_line(f"ptrain: {warmup_steps} warm-up + {steps} timed steps")
    progress = tqdm(total=warmup_steps + steps, desc="ptrain train", file=sys.stderr, mininterval=2, leave=False)
    run_steps(run, state, meter, progress, run.data.train_loader, stop_at_step=warmup_steps)
    loader = TimedLoader(run.data.train_loader)
    state.micro_batches_in_epoch = 0  # the timed steps start a fresh pass over the data
    meter.read(accelerator)  # opens the timed interval
    with PeakMemory(accelerator.device) as memory:
        started = time.perf_counter()
        run_steps(run, state, meter, progress, loader, stop_at_step=warmup_steps + steps)
        seconds = time.perf_counter() - started
    progress.close()
    stats = meter.read(accelerator)
    labelled = {}
    if loader.labelled_tokens is not None:  # token labels: chat, the language models, token classification
        labelled["labelled_tokens_per_second"] = int(loader.labelled_tokens) / seconds
    return {
        **{k: stats[k] for k in ("tokens_per_second", "samples_per_second", "padding_fraction")},
        **labelled,
        "data_wait_share": loader.waiting_seconds / seconds,
        **memory.report(),
    }


def profile_ptrain(run: Run, steps: int, out_dir: Path) -> dict:
    """`steps` more optimizer steps of ptrain's loop under torch.profiler (ptrain/bench/profile.py)."""
    from ptrain.bench.profile import profile_steps

    state, meter = LoopState(), TrainMeter(run.runtime.accelerator.device)
    progress_line(f"ptrain: {steps} steps under torch.profiler, trace to {out_dir}")
    progress = tqdm(total=steps, desc="ptrain profile", file=sys.stderr, leave=False)

    def steps_of(loader, count):
        run_steps(run, state, meter, progress, loader, stop_at_step=state.global_step + count)

    steps_of(run.data.train_loader, 1)  # one step outside the trace: the first step after evaluation is slower
    state.micro_batches_in_epoch = 0  # the traced steps start a fresh pass over the data
    result = profile_steps(steps_of, TimedLoader(run.data.train_loader), steps, out_dir)
    progress.close()
    return result


def run_steps(run: Run, state: LoopState, meter: TrainMeter, progress, loader, stop_at_step: int) -> None:
    """Epochs of `loader` until optimizer step `stop_at_step`, however many the run's own plan has."""
    state.stop = False
    while True:
        train_epoch(run, state, meter, progress, epoch_batches(run, state, loader), stop_at_step)
        if state.stop:
            return
        state.epoch, state.micro_batches_in_epoch = state.epoch + 1, 0


def time_ptrain_eval(run: Run) -> dict:
    """The validation split through ptrain's evaluate: a warm-up pass, then the median of EVAL_PASSES timed
    passes (one pass is ~2 s here, within these VMs' noise)."""
    data, model, accelerator = run.data, run.optim.model, run.runtime.accelerator
    context = EvalContext(run.cfg, data.tokenizer, data.splits.label_names, data.splits.raw["validation"])
    rows = len(data.splits.tokenized["validation"])
    progress_line(f"ptrain: evaluation, 1 + {EVAL_PASSES} passes over {rows:,} rows")
    run.task.evaluate(model, data.eval_loader, accelerator, context)
    with PeakMemory(accelerator.device) as memory:
        results = [run.task.evaluate(model, data.eval_loader, accelerator, context) for _ in range(EVAL_PASSES)]
    seconds = statistics.median(result.seconds for result in results)
    return {
        "tokens_per_second": results[0].real_tokens / seconds,
        "samples_per_second": rows / seconds,
        **memory.report(),
    }
