"""`ptrain eval`: the metrics of an exported model on a split of a config's data (and, with --predictions, one row
per example); score_export is the same evaluation for `ptrain report`."""

from __future__ import annotations

import sys
from dataclasses import dataclass

from datasets import DatasetDict

from ptrain.config import Config
from ptrain.data import batching
from ptrain.data.mixture_splits import read_splits
from ptrain.data.tokenize import tokenize_splits
from ptrain.errors import ConfigError, DataError
from ptrain.fast_paths import apply_fast_paths
from ptrain.inference.exports import export_label_names, load_exported
from ptrain.inference.predict import check_output_name, write_rows
from ptrain.runtime.distributed import build_accelerator
from ptrain.runtime.nodes import caches_first
from ptrain.runtime.precision import resolve_config_precision
from ptrain.tasks import EvalContext, EvalResult, Task, get_task
from ptrain.tasks.user_metrics import add_user_metrics, user_metrics


@dataclass
class Scored:
    """An export's evaluation on one split, with what produced it."""

    result: EvalResult
    context: EvalContext
    task: Task
    raw: DatasetDict  # every split of the config's data, untokenized
    is_main_process: bool


def evaluate_export(cfg: Config, model_dir: str, split: str, predictions: str | None = None) -> dict[str, float]:
    """Metrics of an exported model on a split; label ids follow the model's id2label. With `predictions` (a
    .csv, .tsv or .jsonl name), also one row per example there (the task's prediction_rows)."""
    if predictions is not None:
        check_output_name(predictions, "--predictions")
    scored = score_export(cfg, model_dir, split, needs_rows=predictions is not None)
    if predictions is not None and scored.is_main_process:
        write_rows(scored.task.prediction_rows(scored.result, scored.context), predictions)
    return scored.result.metrics


def score_export(cfg: Config, model_dir: str, split: str, needs_rows: bool = False) -> Scored:
    """The export's task evaluation on `split`, with the config's train.metrics; texts cut at the shorter of
    data.max_length and the export's recorded length. needs_rows: refuse a task without prediction_rows."""
    tokenizer, model, task = load_exported(model_dir)
    if task.name != cfg.task and get_task(cfg.task).auto_class is task.auto_class:
        task = get_task(cfg.task)  # one architecture, two tasks: a chat run's export is a causal LM
    if task.name != cfg.task:
        raise ConfigError(f"--model {model_dir} is a {task.name} model but the config's task is {cfg.task}")
    if needs_rows and type(task).prediction_rows is Task.prediction_rows:
        raise ConfigError(f"--predictions: task {task.name} writes no per-example rows yet; leave it out")
    names = export_label_names(model) if task.uses_label_names else []
    data = {
        "max_length": min(cfg.data.max_length, tokenizer.model_max_length),
        **({"label_names": names} if names else {}),
    }
    cfg, precision = resolve_config_precision(cfg.model_copy(update={"data": cfg.data.model_copy(update=data)}))
    if precision.warning:
        print(f"ptrain: warning: {precision.warning}", file=sys.stderr)
    accelerator = build_accelerator(cfg)
    with caches_first(accelerator):  # the main, then the first process of each other node, fill the caches
        raw, bad_rows = read_splits(cfg, task)
        if bad_rows.skipped and accelerator.is_main_process:  # data.bad_rows=skip: said, as training says it
            print(f"ptrain: {bad_rows.summary(listing=None)}", file=sys.stderr)
        if split not in raw:
            raise DataError(f"no {split} split: set data.{split}_file in the config")
        splits = tokenize_splits(cfg, raw, tokenizer, task, names)
    rows, _ = task.finish_split(cfg, split, splits.tokenized[split], raw[split])  # policies and packing (chat)
    collator = task.collator(cfg, tokenizer, accelerator.device)
    apply_fast_paths(model, accelerator, cfg.train.fast_paths)  # the computation of training's
    model, loader = accelerator.prepare(model, batching.eval_loader(cfg, rows, collator))
    context = EvalContext(cfg, tokenizer, names, raw[split])
    result = task.evaluate(model, loader, accelerator, context)
    add_user_metrics(result.metrics, result.details, user_metrics(cfg.train))  # train.metrics, as in training
    return Scored(result, context, task, raw, accelerator.is_main_process)
