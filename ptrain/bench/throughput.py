"""`ptrain bench`: training and evaluation throughput of ptrain, and of the HF Trainer on the same job, in one run.

Both sides get the same tokenized rows, model, collator, batch size, accumulation, precision and length
grouping; training runs warm-up steps first, then the timed steps. Tokens are real (non-pad) tokens; MFU is
against a peak measured on the same device in the same invocation: the best rate of the model's own Linear
shapes, in the precision the run resolved to (train.mixed_precision, `auto` by ptrain/runtime/precision.py's rule).
Progress goes to stderr, the report to stdout.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from tqdm.auto import tqdm

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
from ptrain.training.loop import epoch_batches, train_epoch
from ptrain.training.meter import TrainMeter
from ptrain.training.recipe import setup
from ptrain.training.run import LoopState, Run

PROFILE_STEPS = 10
EVAL_PASSES = 3  # timed evaluation passes per side; the median is reported


class TimedLoader:
    """Iterates a DataLoader and adds up the time spent waiting for each batch."""

    def __init__(self, loader):
        self.loader, self.waiting_seconds = loader, 0.0

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
            yield batch


def bench(cfg: Config, steps: int, warmup_steps: int, compare_hf: bool, profile_dir: Path | None = None) -> dict:
    with tempfile.TemporaryDirectory(prefix="ptrain-bench-") as tmp:
        train_cfg = cfg.train.model_copy(
            update={
                "log_every_steps": 10**9,
                "eval_every_steps": None,
                "checkpoint_at_epoch_end": False,
                "checkpoint_every_steps": None,
            }
        )
        cfg = cfg.model_copy(update={"output_dir": tmp, "train": train_cfg})
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
        progress_line("measuring the matmul peak again: the best of both measurements is the ceiling")
        peak_after = linear_peak_flops(device, precision.dtype, shapes)
    peak = max(peak_before, peak_after)
    report["matmul_peak_tflops"] = peak / 1e12
    report["matmul_peak_tflops_before_after"] = [peak_before / 1e12, peak_after / 1e12]
    for side in ("ptrain", "hf_trainer"):
        for phase, stats in report.get(side, {}).items():
            stats["mfu"] = stats["tokens_per_second"] * flops[phase] / peak
    if compare_hf:
        report["ratios"] = {
            phase: report["ptrain"][phase]["tokens_per_second"] / report["hf_trainer"][phase]["tokens_per_second"]
            for phase in ("train", "eval")
        }
    report["warnings"] = busy_machine_warnings(report)
    for warning in report["warnings"]:
        progress_line(f"warning: {warning}")
    return report


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
    above = [
        f"{side} {phase}"
        for side in ("ptrain", "hf_trainer")
        for phase, stats in report.get(side, {}).items()
        if stats["mfu"] > 1
    ]
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
    return {
        **{k: stats[k] for k in ("tokens_per_second", "samples_per_second", "padding_fraction")},
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


def print_report(report: dict, json_path: str | None) -> None:
    sides = [("ptrain", "ptrain"), ("HF Trainer", "hf_trainer")]
    print(
        f"bench {report['config']}: {report['steps']} timed steps after {report['warmup_steps']} warm-up; "
        f"{report['device']}: {hardware_line(report['hardware'])}; precision {report['precision']} "
        f"({report['precision_reason']}), batch "
        f"{report['per_device_batch_size']}, group_by_length {report['group_by_length']}; measured matmul peak "
        f"{report['matmul_peak_tflops'] * 1000:,.0f} GFLOP/s; {report['train_flops_per_token'] / 1e6:.0f} "
        f"MFLOP per trained token"
    )
    print(f"{'':<22}{'real tok/s':>11}{'samples/s':>11}{'padding':>9}{'data wait':>11}{'peak RSS':>10}{'MFU':>7}")
    for phase in ("train", "eval"):
        for name, key in sides:
            if key in report:
                s = report[key][phase]
                padding = f"{s['padding_fraction']:.1%}" if "padding_fraction" in s else "-"
                wait = f"{s['data_wait_share']:.1%}" if "data_wait_share" in s else "-"
                print(
                    f"{name + ' ' + phase:<22}{s['tokens_per_second']:>11,.0f}{s['samples_per_second']:>11,.1f}"
                    f"{padding:>9}{wait:>11}{s['peak_rss_gib']:>8.2f}Gi{s['mfu']:>7.1%}"
                )
    for phase, ratio in report.get("ratios", {}).items():
        print(f"ptrain / HF Trainer, {phase} real tokens/s: {ratio:.2f}x")
    for warning in report.get("warnings", []):
        print(f"warning: {warning}")
    if "profile" in report:
        from ptrain.bench.profile import print_breakdown

        print_breakdown(report["profile"])
    write_json_report(report, json_path)


def write_json_report(report: dict, json_path: str | None) -> None:
    if json_path:
        Path(json_path).write_text(json.dumps(report, indent=2))
