"""`ptrain report RUN`: RUN/report.md and its PNGs (RUN/report/), for a single-label classification run.

The export (best/ by default) is scored on the validation split as `ptrain eval` does; the report shows the data
(label counts per split, token lengths and the share cut), the training curves, the confusion matrix (normalised,
with counts), per-class precision/recall/F1, the highest- and lowest-loss examples, the most confused pairs with
examples, the hyperparameters and the hardware. Written to a temporary name and swapped in whole.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from torchmetrics.functional.classification import (
    multiclass_f1_score,
    multiclass_precision,
    multiclass_recall,
)

from ptrain.config import flatten_config
from ptrain.data.summary import summarise_data
from ptrain.errors import ConfigError
from ptrain.experiments.report_figures import curves_figure, per_class_figure, read_curves, save
from ptrain.files.atomic import swap_folder, write_text
from ptrain.inference.evaluate import Scored, score_export
from ptrain.runtime.hardware import describe_hardware, hardware_line
from ptrain.tasks import load_config
from ptrain.tasks.figures import confusion_figure, label_counts_figure, length_figure
from ptrain.tasks.tables import markdown_table
from ptrain.training.best import metric_for_best

EXAMPLES = 10  # rows in each examples table


def write_report(run_dir: Path, export: str = "best") -> Path:
    """Write RUN/report.md and RUN/report/*.png; returns the report's path."""
    if not (run_dir / "config.yaml").is_file():
        raise ConfigError(f"{run_dir}: no config.yaml; give a run folder, e.g. runs/NAME/TIME")
    if not (run_dir / export / "config.json").is_file():
        raise ConfigError(f"{run_dir}: no {export}/ export yet; report on a finished run (or --model final)")
    cfg = load_config(run_dir / "config.yaml")
    if cfg.task != "sequence_classification":
        raise ConfigError(f"ptrain report covers sequence_classification runs; {run_dir} is a {cfg.task} run")
    scored = score_export(cfg, str(run_dir / export), "validation")
    figures = run_dir / "report.tmp"
    shutil.rmtree(figures, ignore_errors=True)
    figures.mkdir()
    sections = [
        _data_section(scored, figures),
        _curves_section(run_dir, scored, figures),
        _scores_section(scored, figures),
        _examples_section(scored),
        _settings_section(run_dir, cfg),
    ]
    title = f"# Report: {cfg.name} ({run_dir.name})\n\n`{export}/` scored on the validation split by `ptrain report`."
    swap_folder(figures, run_dir / "report")
    path = run_dir / "report.md"
    write_text(path, "\n\n".join([title, *sections]) + "\n")
    return path


def _data_section(scored: Scored, figures: Path) -> str:
    context = scored.context
    summary = summarise_data(context.cfg, scored.raw, context.tokenizer, context.label_names, True)
    names = context.label_names
    rows = []
    for split, counts in summary.label_counts.items():
        total = sum(counts.values())
        shares = [f"{counts[n]:,} ({counts[n] / max(total, 1):.0%})" for n in names]
        rows.append([split, f"{total:,}", *shares, f"{summary.truncated_share(split):.1%}"])
    table = markdown_table(["split", "rows", *names, "cut at max_length"], rows)
    counts_png = save(label_counts_figure(summary.label_counts), figures / "label_counts.png")
    lengths_png = save(length_figure(summary.lengths, summary.max_length), figures / "token_lengths.png")
    return (
        f"## Data\n\n{table}\n\n![label counts per split](report/{counts_png})\n\n"
        f"![token lengths per split](report/{lengths_png})\n\n" + "\n".join(f"- {line}" for line in summary.lines())
    )


def _curves_section(run_dir: Path, scored: Scored, figures: Path) -> str:
    metric = metric_for_best(scored.context.cfg, scored.task)
    tags = ["train/loss", "eval/loss", f"eval/{metric}", "train/learning_rate"]
    curves = read_curves(run_dir, tags)
    if not curves:
        return "## Training curves\n\nThe run logged no scalars."
    png = save(curves_figure(curves, metric), figures / "curves.png")
    return f"## Training curves\n\n![training curves](report/{png})"


def _scores_section(scored: Scored, figures: Path) -> str:
    details, names = scored.result.details, scored.context.label_names
    preds, gold, k = details["predictions"], details["labels"], len(names)
    per_class = {
        "precision": multiclass_precision(preds, gold, k, average=None).tolist(),
        "recall": multiclass_recall(preds, gold, k, average=None).tolist(),
        "f1": multiclass_f1_score(preds, gold, k, average=None).tolist(),
    }
    support = torch.bincount(gold, minlength=k).tolist()
    metrics = " | ".join(f"{name} {value:.4f}" for name, value in scored.result.metrics.items())
    rows = [[n, *(f"{per_class[kind][i]:.3f}" for kind in per_class), f"{support[i]:,}"] for i, n in enumerate(names)]
    table = markdown_table(["class", "precision", "recall", "F1", "support"], rows)
    confusion_png = save(confusion_figure(details["confusion"], names), figures / "confusion.png")  # evaluate's
    per_class_png = save(per_class_figure(names, per_class), figures / "per_class.png")
    return (
        f"## Validation scores\n\n{metrics}\n\n### Confusion matrix\n\nRows are the gold labels, normalised to 1; "
        f"each cell also gives its count.\n\n![confusion matrix](report/{confusion_png})\n\n"
        f"### Per class\n\n{table}\n\n![per-class precision, recall and F1](report/{per_class_png})"
    )


def _examples_section(scored: Scored) -> str:
    rows = scored.task.prediction_rows(scored.result, scored.context)
    by_loss = sorted(rows, key=lambda row: row["loss"], reverse=True)
    pairs: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        if row["gold"] != row["predicted"]:
            pairs.setdefault((row["gold"], row["predicted"]), []).append(row)
    confused = sorted(pairs.items(), key=lambda item: len(item[1]), reverse=True)[:5]
    pair_rows = [
        [f"{gold} → {pred}", len(examples), _short(examples[0]["text"])] for (gold, pred), examples in confused
    ]
    return (
        f"## Examples\n\n### Highest loss (label noise shows here)\n\n{_examples_table(by_loss[:EXAMPLES])}\n\n"
        f"### Lowest loss\n\n{_examples_table(by_loss[::-1][:EXAMPLES])}\n\n"
        "### Most confused pairs\n\n" + markdown_table(["gold → predicted", "rows", "an example"], pair_rows)
    )


def _examples_table(rows: list[dict]) -> str:
    cells = [[f"{r['loss']:.3f}", r["gold"], r["predicted"], _short(r["text"])] for r in rows]
    return markdown_table(["loss", "gold", "predicted", "text"], cells, align="rlll")


def _short(text: str) -> str:
    """One line of at most 160 characters (markdown_table escapes the pipes)."""
    text = " ".join(str(text).split())
    return text if len(text) <= 160 else text[:157] + "..."


def _settings_section(run_dir: Path, cfg) -> str:
    flat = flatten_config(cfg.model_dump(mode="json"))
    keys = ["model.name_or_path", "train.learning_rate", "train.per_device_batch_size", "train.epochs"]
    keys += ["train.warmup_ratio", "train.weight_decay", "train.mixed_precision", "data.max_length", "train.seed"]
    table = "| key | value |\n|---|---|\n" + "\n".join(f"| {k} | {flat.get(k)} |" for k in keys)
    metrics = json.loads((run_dir / "metrics.json").read_text()) if (run_dir / "metrics.json").is_file() else {}
    trained = metrics.get("train", {})
    here = hardware_line(describe_hardware(torch.device("cpu")))
    hardware = f"Trained on {trained['hardware']}" if "hardware" in trained else "Trained on unrecorded hardware"
    wall = f" in {trained['wall_seconds']:.0f} s (wall time)" if "wall_seconds" in trained else ""
    return (
        f"## Hyperparameters\n\n{table}\n\nThe whole resolved config is `{run_dir.name}/config.yaml`.\n\n"
        f"## Hardware\n\n{hardware}{wall}; this report was made on {here}."
    )
