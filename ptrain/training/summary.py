"""What a run tells its user: the start-up lines, the metrics file, the HPARAMS entry, the closing lines."""

from __future__ import annotations

from ptrain.config import Config, config_value, to_yaml
from ptrain.data.bad_rows import SKIPPED_ROWS_FILE
from ptrain.data.stream_budget import streamed_budget
from ptrain.data.summary import summarise_data
from ptrain.data.token_budget import budget_sampler
from ptrain.data.tokenize import Splits
from ptrain.fast_paths import as_record, describe
from ptrain.files.atomic import write_json
from ptrain.runtime.hardware import describe_hardware, hardware_line
from ptrain.tasks.figures import label_counts_figure, length_figure
from ptrain.training.best import metric_for_best
from ptrain.training.run import LoopState, Run
from ptrain.training.streamed_data import packed_batch, tokens_per_step


def announce(run: Run, state: LoopState) -> None:
    """The topology and step plan, printed once by the main process."""
    acc, train_cfg, plan, splits = run.runtime.accelerator, run.cfg.train, run.optim.plan, run.data.splits
    precision = run.runtime.precision
    sizes = ", ".join(f"{split} {len(ds):,}" for split, ds in splits.tokenized.items())
    if run.data.stream:
        sizes = f"{sizes}; {run.data.stream.describe()}"
    cached = [split for split, hit in splits.cache_hits.items() if hit]
    skipped = splits.bad_rows.summary()
    skipped = f"; {skipped}" if skipped else ""
    acc.print(
        f"ptrain: {acc.num_processes} process(es) on {acc.device.type}, engine {run.runtime.engine.describe()}"
        f"{', torch.compile (dynamic lengths, fast paths off)' if train_cfg.compile else ''}, "
        f"precision {precision.describe()}, {_weights(run.cfg.model.dtype)}, "
        f"{_batch_clause(run)}; {describe(run.optim.fast_paths)}\n"
        f"ptrain: rows {sizes}; tokenization cache reused for {cached or 'none'}; "
        f"task {run.task.name}{_label_count(splits)}; {_trainable(run.optim.model)}{skipped}\n"
        f"ptrain: {_plan_words(run)}, warmup {plan.warmup_steps}\nptrain: run folder {run.outputs.run_dir}"
    )
    if splits.counts:
        acc.print(f"ptrain: {run.task.data_line(run.cfg, splits.counts)}")
    if splits.mixture:
        acc.print(f"ptrain: {splits.mixture.describe()}")
    if precision.warning:
        acc.print(f"ptrain: warning: {precision.warning}")
    if state.global_step == 0:
        run.outputs.tracker.text("config", "    " + to_yaml(run.cfg).replace("\n", "\n    "))
        track_data(run)


def _batch_clause(run: Run) -> str:
    """What one optimizer step trains on: rows, or with data.max_tokens_per_batch a token budget per micro-batch."""
    train_cfg, processes = run.cfg.train, run.runtime.accelerator.num_processes
    accumulation = train_cfg.gradient_accumulation_steps
    budget = budget_sampler(run.data.train_loader)
    if budget is None and streamed_budget(run.data.train_loader) is None:
        global_batch = train_cfg.per_device_batch_size * accumulation * processes
        return (
            f"per-device batch {train_cfg.per_device_batch_size} x accumulation {accumulation} x {processes} = "
            f"global batch {global_batch}"
        )
    max_tokens = run.cfg.data.max_tokens_per_batch
    per_device = budget.summary.describe(max_tokens) if budget else _streamed_budget(run)
    return (
        f"per-device batch {per_device} x accumulation {accumulation} x {processes} = "
        f"a step of up to {max_tokens * accumulation * processes:,} padded tokens"
    )


def _streamed_budget(run: Run) -> str:
    """A streamed run's budget batch: a fixed number of packed blocks, or rows that vary with their lengths."""
    max_tokens, blocks = run.cfg.data.max_tokens_per_batch, packed_batch(run.cfg, run.runtime.accelerator.device)
    if blocks is not None:
        block_size = getattr(run.cfg, run.cfg.task).block_size
        return f"up to {max_tokens:,} padded tokens ({blocks} packed blocks of {block_size} tokens)"
    return f"up to {max_tokens:,} padded tokens (rows vary: cut from the stream as read, not grouped by length)"


def track_data(run: Run) -> None:
    """The data before training, in TensorBoard: data/label_counts and data/token_lengths (IMAGES), data/summary
    (TEXT: rows, lengths and the share data.max_length cuts, per split)."""
    tracker, splits = run.outputs.tracker, run.data.splits
    if tracker.writer is None:
        return
    summary = summarise_data(run.cfg, splits.raw, run.data.tokenizer, splits.label_names, run.task.stratified)
    if summary.label_counts:
        tracker.figure("data/label_counts", label_counts_figure(summary.label_counts), 0)
    if summary.lengths:
        tracker.figure("data/token_lengths", length_figure(summary.lengths, summary.max_length), 0)
        tracker.text("data/summary", "\n\n".join(summary.lines()), 0)


def write_results(
    run: Run,
    state: LoopState,
    test: dict | None,
    wall_seconds: float,
    memory: dict[str, list[float]],
    raw_final: dict | None = None,
) -> None:
    """metrics.json, the HPARAMS entry and the closing lines (main process only). With train.ema_decay, `final`
    and `best` are the EMA weights' scores and `final_raw` the trained weights' own. `memory`: each process's
    peak_memory_gib and tensor_memory_gib (runtime/memory.py)."""
    metrics = {"final": {**state.last, "step": state.global_step}, "best": state.best}
    if raw_final is not None:
        metrics["final_raw"] = {**raw_final, "step": state.global_step}
    if test is not None:
        metrics["test_final"] = test
    metrics["skipped_rows"] = run.data.splits.bad_rows.record()
    if run.data.splits.mixture:
        metrics["mixture"] = run.data.splits.mixture.record(state.source_tokens)
    metrics["train"] = {
        "optimizer_steps": state.global_step,
        "epochs": state.global_step / run.optim.plan.steps_per_epoch,
        "early_stopped": state.early_stopped,
        "nonfinite_skips": state.nonfinite_skips,
        "scaler_skips": state.scaler_skips,
        "wall_seconds": wall_seconds,
        "seconds_per_step": state.train_seconds / max(state.global_step, 1),  # the loop's windows only
        "engine": run.runtime.engine.describe(),
        "fast_paths": as_record(run.optim.fast_paths),
        **memory,  # per process
        "mixed_precision": run.cfg.train.mixed_precision,
        "hardware": hardware_line(describe_hardware(run.runtime.accelerator.device)),
    }
    accelerator, run_dir = run.runtime.accelerator, run.outputs.run_dir
    if not accelerator.is_main_process:
        return
    write_json(run_dir / "metrics.json", metrics)
    run.outputs.tracker.hparams(
        hparams_of(run.cfg), summary_metrics(metrics, run.task.metrics_of(run.task.options(run.cfg))), state.global_step
    )
    peaks = ", ".join(f"{gib:.2f}" for gib in memory["peak_memory_gib"])
    trackers = "".join(f"ptrain: {line}\n" for line in run.outputs.tracker.destinations())
    skipped = run.data.splits.bad_rows.summary(str(run_dir / SKIPPED_ROWS_FILE))  # data.bad_rows=skip only
    trackers += f"ptrain: {skipped}\n" if skipped else ""
    accelerator.print(
        f"ptrain: best {metric_for_best(run.cfg, run.task)} {state.best_value:.4f} "
        f"at step {state.best['step']}; wall time {wall_seconds:.0f}s; peak memory per process {peaks} GiB\n"
        f"{trackers}ptrain: model: {run_dir / 'best'} (best), {run_dir / 'final'} (final); "
        f"metrics: {run_dir / 'metrics.json'}"
    )


def hparams_of(cfg: Config) -> dict:
    """The HPARAMS tab's columns: a core set (model, learning rate, batch or batch_tokens, epochs, precision, seed)
    and the keys the config's `hparams` names (a sweep adds the keys it varies)."""
    train_cfg, budget = cfg.train, cfg.data.max_tokens_per_batch
    # per process: rows, or with data.max_tokens_per_batch the padded tokens a step may hold (rows vary)
    batch = {"batch": train_cfg.per_device_batch_size} if budget is None else {"batch_tokens": budget}
    core = {
        "model": cfg.model.name_or_path or "scratch",
        "learning_rate": train_cfg.learning_rate,
        **{key: value * train_cfg.gradient_accumulation_steps for key, value in batch.items()},
        "epochs": train_cfg.epochs,
        "mixed_precision": train_cfg.mixed_precision,
        "seed": train_cfg.seed,
    }
    return {**core, **{key: _hparam_value(config_value(cfg, key)) for key in cfg.hparams}}


def _hparam_value(value):
    """HPARAMS shows numbers and strings; a boolean as its word (the tab would show 1/0), anything else as text."""
    if isinstance(value, bool) or value is None:
        return str(value).lower()
    return value if isinstance(value, (int, float, str)) else str(value)


def summary_metrics(metrics: dict, names: tuple[str, ...]) -> dict[str, float]:
    return {f"hparams/{kind}_{name}": metrics[kind][name] for kind in ("best", "final") for name in names}


def _trainable(model) -> str:
    """The start line's "147,456 trainable parameters (0.65% of 22.8M)": the share of all the model's parameters
    (with model.lora: the frozen weights, the adapters and peft's trained copy of the head, as peft counts them)."""
    total = trainable = 0
    for param in model.parameters():
        count = getattr(param, "ds_numel", None) or param.numel()  # a ZeRO-3 parameter holds its size apart
        total += count
        trainable += count if param.requires_grad else 0
    return f"{trainable:,} trainable parameters ({trainable / max(total, 1):.2%} of {total / 1e6:,.1f}M)"


def _plan_words(run: Run) -> str:
    """The length of the run: in epochs of the training rows, or of a stream (whose length is unknown) in steps."""
    plan = run.optim.plan
    if run.data.stream:
        tokens = run.cfg.train.max_tokens
        per_step = tokens_per_step(run.cfg, run.runtime.accelerator.num_processes, run.runtime.accelerator.device)
        length = f"train.max_tokens {tokens:,} at {per_step:,} per step" if tokens else "train.max_steps"
        return f"{plan.total_steps} optimizer steps in total ({length}; a stream's epochs pass as they come)"
    return f"{plan.steps_per_epoch} optimizer steps per epoch, {plan.total_steps} in total ({plan.epochs} epoch(s))"


def _weights(dtype: str) -> str:
    """model.dtype on the start line, with what 16-bit weights mean."""
    if dtype == "float32":
        return "float32 weights"
    return f"{dtype} weights (trained as they are: no float32 master copy, each update rounded to {dtype})"


def _label_count(splits: Splits) -> str:
    return f", {len(splits.label_names)} labels" if splits.label_names else ""
