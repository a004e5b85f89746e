"""Using an exported model: score a split of a config's data (ptrain eval), label a file (ptrain predict)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from ptrain import batching, collate
from ptrain.config import Config, DataConfig
from ptrain.data import load_raw_splits, read_table, tokenize_splits
from ptrain.distributed import build_accelerator
from ptrain.errors import DataError
from ptrain.evaluate import evaluate
from ptrain.model import load_exported

OUTPUT_FORMATS = {".csv": ",", ".tsv": "\t", ".jsonl": None, ".json": None}


def evaluate_export(cfg: Config, model_dir: str, split: str) -> dict[str, float]:
    """Metrics of an exported model on a split; label ids follow the model's id2label."""
    tokenizer, model = load_exported(model_dir)
    names = [model.config.id2label[i] for i in range(model.config.num_labels)]
    cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"label_names": names})})
    accelerator = build_accelerator(cfg)
    with accelerator.main_process_first():
        raw, _ = load_raw_splits(cfg)
        if split not in raw:
            raise DataError(f"no {split} split: set data.{split}_file in the config")
        splits = tokenize_splits(cfg, raw, tokenizer, names)
    collator = collate.classification_collator(tokenizer, cfg.train.mixed_precision, accelerator.device)
    model, loader = accelerator.prepare(model, batching.eval_loader(cfg, splits.tokenized[split], collator))
    return evaluate(model, loader, accelerator, len(names)).metrics


def predict_file(model_dir: str, input_path: str, output: str, text_column: str, batch_size: int) -> int:
    """Label and per-class probabilities for every row; rows keep the input order. Returns the row count."""
    tokenizer, model = load_exported(model_dir)
    texts = read_texts(Path(input_path), text_column)
    names = [model.config.id2label[i] for i in range(model.config.num_labels)]
    probs = predict_probabilities(model, tokenizer, texts, batch_size)
    rows = []
    for text, p in zip(texts, probs.tolist()):
        best = max(range(len(names)), key=p.__getitem__)
        rows.append({"text": text, "label": names[best], "score": p[best], **{f"prob_{n}": v for n, v in zip(names, p)}})
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


@torch.no_grad()
def predict_probabilities(model, tokenizer, texts: list[str], batch_size: int) -> torch.Tensor:
    """Batches of similar length (sorted), so padding stays small; results return in input order."""
    model.eval()
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    probs = torch.empty(len(texts), model.config.num_labels)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        encoded = tokenizer([texts[i] for i in chunk], padding=True, truncation=True, return_tensors="pt")
        probs[chunk] = model(**encoded).logits.float().softmax(-1)
    return probs


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
            writer.writerows(rows)
    tmp.replace(path)
