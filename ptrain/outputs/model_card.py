"""The model card (README.md) of every export, laid out as the Hub's cards are: YAML metadata (library,
pipeline tag, base model, metrics as a model-index), then the model, its intended use, the data, the training
hyperparameters, the scores and the framework versions."""

from __future__ import annotations

from pathlib import Path

import accelerate
import torch
import transformers
import yaml

from ptrain.config import data_path
from ptrain.files.atomic import write_text
from ptrain.files.integrity import add_to_export_manifest
from ptrain.tasks.tables import markdown_table


def write_model_card(run, folder: Path, scores: dict[str, dict[str, float]], step: int) -> None:
    """README.md in an export folder (main process): scores maps a split (validation, test, a named set) to
    its metrics."""
    if run.runtime.accelerator.is_main_process:
        write_text(folder / "README.md", model_card(run, scores, step))
        add_to_export_manifest(folder, ["README.md"])


def scores_by_set(metrics: dict[str, float]) -> dict[str, dict[str, float]]:
    """An evaluation's flat metrics ("weighted_f1", "heldout/weighted_f1") by set: validation and named sets."""
    sets: dict[str, dict[str, float]] = {}
    for key, value in metrics.items():
        name, _, metric = key.rpartition("/")
        sets.setdefault(name or "validation", {})[metric] = value
    return sets


def model_card(run, scores: dict[str, dict[str, float]], step: int) -> str:
    cfg, task = run.cfg, run.task
    base = cfg.model.name_or_path or "a randomly initialised model (model.scratch_config)"
    header = {"library_name": "transformers", "tags": ["ptrain", task.name]}
    if task.pipeline:
        header["pipeline_tag"] = task.pipeline
    if cfg.model.name_or_path:
        header["base_model"] = cfg.model.name_or_path
    header["model-index"] = [{"name": cfg.name, "results": [_result(task, split, m) for split, m in scores.items()]}]
    sections = [
        f"# {cfg.name}\n\nA {task.name.replace('_', ' ')} model fine-tuned from {base} with ptrain "
        f"(step {step}, {step / run.optim.plan.steps_per_epoch:.2f} epochs).",
        "## Intended uses and limitations\n\n" + _intended_use(task, run.data.splits.label_names),
        "## Training and evaluation data\n\n" + _data(cfg, run.data.splits),
        "## Training hyperparameters\n\n" + _hyperparameters(cfg),
        "## Results\n\n" + _results(scores),
        "## Framework versions\n\n"
        f"- ptrain\n- Transformers {transformers.__version__}\n- PyTorch {torch.__version__}\n"
        f"- Accelerate {accelerate.__version__}",
    ]
    return "---\n" + yaml.safe_dump(header, sort_keys=False) + "---\n\n" + "\n\n".join(sections) + "\n"


def _result(task, split: str, metrics: dict[str, float]) -> dict:
    return {
        "task": {"type": task.pipeline or task.name},
        "dataset": {"name": split, "type": split},
        "metrics": [{"type": name, "value": round(float(value), 4)} for name, value in metrics.items()],
    }


def _intended_use(task, label_names: list[str]) -> str:
    use = f'Loads with `transformers.pipeline("{task.pipeline}", model=FOLDER)`. ' if task.pipeline else ""
    labels = f"It predicts one of: {', '.join(label_names)}. " if label_names else ""
    return (
        f"{use}{labels}It was trained and scored on the data below only; check it on your own data before "
        "relying on it, and expect its errors to follow that data's biases."
    )


def _data(cfg, splits) -> str:
    lines = []
    for split, ds in splits.tokenized.items():
        file = getattr(cfg.data, f"{split}_file", None) if split in ("train", "validation", "test") else None
        source = f" from `{data_path(cfg, file).name}`" if file else ""
        lines.append(f"- {split}: {len(ds):,} rows{source}")
    lines.append(f"- texts cut at {cfg.data.max_length} tokens (the export's tokenizer keeps this length)")
    return "\n".join(lines)


def _hyperparameters(cfg) -> str:
    train = cfg.train
    values = {
        "learning_rate": train.learning_rate,
        "per_device_batch_size": train.per_device_batch_size,
        "gradient_accumulation_steps": train.gradient_accumulation_steps,
        "epochs": train.epochs,
        "max_steps": train.max_steps,
        "optimizer": f"AdamW (betas {train.adam_beta1}, {train.adam_beta2}, eps {train.adam_epsilon}), "
        f"weight decay {train.weight_decay}",
        "schedule": "linear decay to 0 after a linear warmup of "
        + (
            f"{train.warmup_steps} steps"
            if train.warmup_steps is not None
            else f"{train.warmup_ratio or 0:.0%} of the steps"
        ),
        "mixed_precision": train.mixed_precision,
        "seed": train.seed,
    }
    return "\n".join(f"- {key}: {value}" for key, value in values.items() if value is not None)


def _results(scores: dict[str, dict[str, float]]) -> str:
    names = list(dict.fromkeys(name for metrics in scores.values() for name in metrics))
    rows = [
        [split, *(f"{metrics[n]:.4f}" if n in metrics else "-" for n in names)] for split, metrics in scores.items()
    ]
    return markdown_table(["split", *names], rows)
