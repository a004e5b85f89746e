"""`ptrain runs [DIR]`: every run folder under DIR with the hyperparameters that differ between them, best and
final metrics, steps, wall time and status; points of a sweep repeated over seeds or folds also as mean and std."""

from __future__ import annotations

import csv
import io
import json
import statistics
from pathlib import Path

import yaml

from ptrain.config import NOT_HYPERPARAMETERS, SEED_KEY, flatten_config
from ptrain.config.user_code import metric_name
from ptrain.errors import SweepError
from ptrain.experiments.tune_pruning import PRUNED_FILE
from ptrain.files.lock import holder
from ptrain.outputs.run_dir import RUNNING
from ptrain.tasks import TASKS
from ptrain.training.best import lower_is_better
from ptrain.training.checkpointing.checkpoint import latest_complete

EVAL_FILES = "data.eval_files."  # flattened config keys of the named evaluation sets

# Keys whose runs repeat one setting (another seed, another fold): ptrain runs averages over them.
REPLICATE_KEYS = {SEED_KEY: "seeds", "data.fold": "folds"}

PRECISION_KEY = "train.mixed_precision"  # shown in its own column, as resolved (fp32, bf16, fp16)


def runs_report(root: Path, sort: str | None) -> dict:
    """{"varied": keys, "runs": one row per run folder, "seed_groups": mean/std rows of runs that differ only
    in seed within one sweep}."""
    folders = sorted(p.parent for p in root.rglob("config.yaml")) if root.is_dir() else []
    if not folders:
        raise SweepError(f"no runs under {root} (a run folder holds config.yaml); give the output_dir of your runs")
    configs = {folder: flatten_config(yaml.safe_load((folder / "config.yaml").read_text())) for folder in folders}
    keys = sorted({k for config in configs.values() for k in config} - NOT_HYPERPARAMETERS - {PRECISION_KEY})
    varied = [k for k in keys if len({json.dumps(c.get(k), sort_keys=True) for c in configs.values()}) > 1]
    columns = metric_columns(configs.values())
    rows = [run_row(folder, root, configs[folder], varied, columns) for folder in folders]
    groups = seed_groups(rows, varied, columns)
    if sort:
        rows, groups = sort_rows(rows, sort, varied, columns), sort_rows(groups, sort, varied, columns)
    return {"varied": varied, "metric_columns": columns, "runs": rows, "seed_groups": groups}


def metric_columns(configs) -> list[str]:
    """best_NAME and final_NAME for every metric of the tasks these runs trained, in the tasks' order, then
    SET/NAME for the named evaluation sets (data.eval_files)."""
    names = []
    for config in configs:
        task = TASKS.get(config.get("task"))
        metrics = task.metrics_of(task.Options.model_construct(**section_of(config, task.name))) if task else ()
        sets = [key.removeprefix(EVAL_FILES) for key in config if key.startswith(EVAL_FILES)]
        metrics = (*metrics, *(metric_name(reference) for reference in config.get("train.metrics") or ()))
        names += [name for name in metrics if name not in names]
        names += [f"{s}/{name}" for s in sets for name in metrics if f"{s}/{name}" not in names]
    return [f"{kind}_{name}" for kind in ("best", "final") for name in names]


def section_of(config: dict, name: str) -> dict:
    """A task's section of a flattened saved config (unchecked: a saved config.yaml was validated when written)."""
    prefix = f"{name}."
    return {key.removeprefix(prefix): value for key, value in config.items() if key.startswith(prefix)}


def run_row(folder: Path, root: Path, config: dict, varied: list[str], columns: list[str]) -> dict:
    metrics = _read_json(folder / "metrics.json")
    checkpoint = latest_complete(folder) if not metrics else None
    name = str(folder.relative_to(root)) if folder != root else folder.name
    precision = {"no": "fp32"}.get(config.get(PRECISION_KEY), config.get(PRECISION_KEY))
    row = {
        "run": name,
        "status": status_of(folder, metrics),
        "precision": precision,
        **{k: config.get(k) for k in varied},
    }
    if metrics:
        row["steps"], row["wall_seconds"] = metrics["train"]["optimizer_steps"], metrics["train"]["wall_seconds"]
    else:
        row["steps"], row["wall_seconds"] = (checkpoint.step if checkpoint else None), None
    for column in columns:
        kind, name = column.split("_", 1)
        row[column] = (metrics or {}).get(kind, {}).get(name)
    return row


def status_of(folder: Path, metrics: dict | None) -> str:
    if (folder / PRUNED_FILE).is_file():  # a `ptrain tune` trial its pruner stopped early
        return "pruned"
    if metrics:
        return "finished"
    if holder(folder / RUNNING) is not None:
        return "running"
    return "resumable" if latest_complete(folder) is not None else "failed"


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def seed_groups(rows: list[dict], varied: list[str], columns: list[str]) -> list[dict]:
    """Runs in one folder that differ only in their replicate keys (train.seed, data.fold): mean and sample
    standard deviation of the finished ones."""
    replicates = [key for key in REPLICATE_KEYS if key in varied]
    if not replicates:
        return []
    others = [k for k in varied if k not in replicates]
    grouped: dict[tuple, list[dict]] = {}
    for row in rows:
        key = (str(Path(row["run"]).parent), *(json.dumps(row[k]) for k in others))
        grouped.setdefault(key, []).append(row)
    groups = []
    for (parent, *_), members in grouped.items():
        finished = [m for m in members if m["status"] == "finished"]
        if len(members) < 2:
            continue
        label = ", ".join(f"{k}={members[0][k]}" for k in others) or "all"
        group = {
            "run": label if parent == "." else f"{parent}: {label}",
            "status": f"{len(finished)}/{len(members)} finished",
            **{REPLICATE_KEYS[key]: [m[key] for m in members] for key in replicates},
            "precision": members[0]["precision"],
            **{k: members[0][k] for k in others},
        }
        for column in ("steps", "wall_seconds", *columns):
            values = [m[column] for m in finished if m[column] is not None]
            group[column] = statistics.mean(values) if values else None
            group[f"{column}_std"] = statistics.stdev(values) if len(values) > 1 else None
        groups.append(group)
    return groups


def sort_rows(rows: list[dict], column: str, varied: list[str], columns: list[str]) -> list[dict]:
    """Best first for metrics (lowest loss, highest scores); ascending for everything else. Blanks last."""
    if f"best_{column}" in columns:
        column = f"best_{column}"
    choices = ["steps", "wall_seconds", *columns, *varied]
    if column not in choices:
        raise SweepError(f"--sort {column}: not a column; choose one of {', '.join(choices)}")
    if column in columns:  # the direction of best_NAME and final_NAME is NAME's
        descending = not any(lower_is_better(task, column.split("_", 1)[1]) for task in TASKS.values())
    else:
        descending = False
    present = [r for r in rows if isinstance(r.get(column), (int, float))]
    blank = [r for r in rows if not isinstance(r.get(column), (int, float))]
    return sorted(present, key=lambda r: r[column], reverse=descending) + blank


def render(report: dict, form: str) -> str:
    if form == "json":
        return json.dumps(report, indent=2)
    metric_cols = report["metric_columns"]
    columns = ["run", "status", "precision", *report["varied"], "steps", "wall_seconds", *metric_cols]
    if form == "csv":
        out = io.StringIO()
        fields = ["kind", *columns, *(f"{c}_std" for c in ("steps", "wall_seconds", *metric_cols))]
        writer = csv.DictWriter(out, fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows({"kind": "run", **row} for row in report["runs"])
        writer.writerows({"kind": "seed_mean", **row} for row in report["seed_groups"])
        return out.getvalue().rstrip("\n")
    text = _table(columns, report["runs"])
    if report["seed_groups"]:
        group_columns = [c for c in columns if c not in REPLICATE_KEYS]
        over = " and ".join(name for key, name in REPLICATE_KEYS.items() if key in report["varied"])
        text += f"\n\nmean ± std over {over}\n" + _table(group_columns, report["seed_groups"], with_std=True)
    return text


def _table(columns: list[str], rows: list[dict], with_std: bool = False) -> str:
    cells = [[_cell(row.get(c), row.get(f"{c}_std") if with_std else None) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join(line.rstrip() for line in lines)


def _cell(value, std) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        text = f"{value:.4g}" if abs(value) < 1e-3 or abs(value) >= 1e4 else f"{value:.4f}"
        return text + (f"±{std:.4f}" if std is not None else "")
    return str(value)
