"""Using an exported model: score a split of a config's data (ptrain eval), label a file (ptrain predict)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from transformers import AutoConfig, AutoTokenizer

from ptrain.config import Config, DataConfig
from ptrain.data import batching
from ptrain.data.splits import load_raw_splits, read_table
from ptrain.data.tokenize import tokenize_splits
from ptrain.errors import ConfigError, DataError, ModelError
from ptrain.model.sources import resolve_model_path
from ptrain.tasks import EvalContext, task_of_export
from ptrain.training.distributed import build_accelerator
from ptrain.training.precision import autocast, inference_precision, resolve_config_precision

OUTPUT_FORMATS = {".csv": ",", ".tsv": "\t", ".jsonl": None, ".json": None}


def evaluate_export(cfg: Config, model_dir: str, split: str) -> dict[str, float]:
    """Metrics of an exported model on a split; label ids follow the model's id2label."""
    tokenizer, model, task = load_exported(model_dir)
    if task.name != cfg.task:
        raise ConfigError(f"--model {model_dir} is a {task.name} model but the config's task is {cfg.task}")
    names = export_label_names(model) if task.uses_label_names else []
    if names:
        cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"label_names": names})})
    cfg, precision = resolve_config_precision(cfg)
    if precision.warning:
        print(f"ptrain: warning: {precision.warning}", file=sys.stderr)
    accelerator = build_accelerator(cfg)
    with accelerator.main_process_first():
        raw, _ = load_raw_splits(cfg, task)
        if split not in raw:
            raise DataError(f"no {split} split: set data.{split}_file in the config")
        splits = tokenize_splits(cfg, raw, tokenizer, task, names)
    collator = task.collator(cfg, tokenizer, accelerator.device)
    model, loader = accelerator.prepare(model, batching.eval_loader(cfg, splits.tokenized[split], collator))
    return task.evaluate(model, loader, accelerator, EvalContext(cfg, tokenizer, names, raw[split])).metrics


def export_label_names(model) -> list[str]:
    """The label names in id order, from the export's id2label."""
    return [model.config.id2label[i] for i in range(model.config.num_labels)]


def predict_file(
    model_dir: str, input_path: str, output: str, text_column: str, batch_size: int, precision: str = "auto"
) -> int:
    """The task's prediction for every row (a label and probabilities for classification, entity spans for
    token classification); rows keep the input order. Returns the row count."""
    tokenizer, model, task = load_exported(model_dir)
    texts = read_texts(Path(input_path), text_column)
    with autocast(inference_precision(precision)):  # on the CPU, in the dtype `auto` picks there by default
        rows = task.predict(model, tokenizer, texts, batch_size)
    write_rows(rows, output)
    return len(rows)


def read_texts(path: Path, column: str) -> list[str]:
    if not path.is_file():
        raise DataError(f"--input {path} does not exist")
    if path.suffix.lower() == ".txt":
        return [line.rstrip("\n") for line in path.read_text().splitlines() if line.strip()]
    table = read_table(DataConfig(text_column=column), path)
    if column not in table.column_names:
        raise DataError(f"{path}: no column '{column}' (columns {table.column_names}); pass --text-column")
    return table[column]


def write_rows(rows: list[dict], output: str) -> None:
    if output == "-":
        for row in rows:
            sys.stdout.write(json.dumps(row) + "\n")
        return
    path = Path(output)
    suffix = path.suffix.lower()
    if suffix not in OUTPUT_FORMATS:
        raise DataError(f"--output {output}: use a .csv, .tsv or .jsonl file name (or - for stdout)")
    tmp = path.with_name(path.name + ".tmp")
    if OUTPUT_FORMATS[suffix] is None:
        tmp.write_text("".join(json.dumps(row) + "\n" for row in rows))
    else:
        import csv

        with open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]), delimiter=OUTPUT_FORMATS[suffix])
            writer.writeheader()
            writer.writerows({k: _cell(v) for k, v in row.items()} for row in rows)
    tmp.replace(path)


def _cell(value):
    """A CSV/TSV cell: lists and dicts (a sentence's entities) as JSON text."""
    return json.dumps(value) if isinstance(value, (list, dict)) else value


def load_exported(model_dir: str):
    """A model folder written by ptrain (or any Hugging Face export): tokenizer, model and its ptrain task."""
    folder = resolve_model_path(model_dir)
    if not (Path(folder) / "config.json").is_file():
        raise ModelError(f"{model_dir}: no config.json here; point --model at an export such as runs/NAME/TIME/best")
    task = task_of_export(AutoConfig.from_pretrained(folder), model_dir)
    return AutoTokenizer.from_pretrained(folder), task.auto_class.from_pretrained(folder), task
