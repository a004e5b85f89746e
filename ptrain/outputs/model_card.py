"""The model card (README.md) of every export, laid out as the Hub's cards are: YAML metadata written with
huggingface_hub's ModelCardData (library, pipeline tag, base model, datasets, metrics as a model-index naming the
data each set was scored on), then the model, its intended use, the data, the training hyperparameters, the
scores and the framework versions."""

from __future__ import annotations

from pathlib import Path

import accelerate
import torch
import transformers
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ptrain.config import data_path
from ptrain.config.sources import PACKAGE_PREFIX
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


HEADER_ORDER = ["library_name", "pipeline_tag", "tags", "base_model", "datasets"]  # then the model-index


def model_card(run, scores: dict[str, dict[str, float]], step: int) -> str:
    """The card's text. It is parsed back with huggingface_hub before it is written, so metadata the Hub would
    refuse (a malformed model-index) fails the export here instead of the upload later."""
    cfg, task = run.cfg, run.task
    base = cfg.model.name_or_path or "a randomly initialised model (model.scratch_config)"
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
    metadata = card_metadata(cfg, task, scores).to_yaml(original_order=HEADER_ORDER)
    return str(ModelCard(f"---\n{metadata}\n---\n\n" + "\n\n".join(sections) + "\n"))


def card_metadata(cfg, task, scores: dict[str, dict[str, float]]) -> ModelCardData:
    """The Hub's metadata: base_model and datasets only where they are Hub ids; one model-index result per scored
    set and metric (huggingface_hub groups them by set)."""
    name, data = cfg.model.name_or_path, cfg.data
    from_hub = data.train_file is None and not data.mixture
    return ModelCardData(
        library_name="transformers",
        pipeline_tag=task.pipeline,
        tags=["ptrain", task.name],
        base_model=name if name and _is_hub_id(name) else None,
        datasets=[data.hub_dataset] if from_hub else None,
        model_name=cfg.name,
        eval_results=[
            EvalResult(
                task_type=task.pipeline or task.name,
                metric_type=metric,
                metric_value=round(float(value), 4),
                **scored_dataset(cfg, split),
            )
            for split, metrics in scores.items()
            for metric, value in metrics.items()
        ],
    )


def scored_dataset(cfg, split: str) -> dict[str, str | None]:
    """model-index's dataset of a scored set: the Hub dataset and its split when the data came from the Hub, else
    the file the set was read from (as the config names it), which is the train file for a validation split cut
    out of it (data.validation_fraction, data.num_folds, data.split_column)."""
    data = cfg.data
    if split not in data.eval_files and data.train_file is None and not data.mixture:
        return {
            "dataset_type": data.hub_dataset,
            "dataset_name": data.hub_dataset,
            "dataset_config": data.hub_config,
            "dataset_split": split,
        }
    file = data.eval_files.get(split) or getattr(data, f"{split}_file", None) or data.train_file
    if data.split_column:
        file = data.train_file
    if file is None:  # held out from each data.mixture source
        file = "+".join(Path(source.file).name for source in data.mixture.values())
    shown = Path(file).name if Path(file).is_absolute() else file  # an absolute path would name the user's folders
    return {"dataset_type": shown, "dataset_name": shown, "dataset_split": split}


def _is_hub_id(name: str) -> bool:
    """A model named by its Hub id, not a local folder nor an installed package (the Hub only links ids)."""
    return not name.startswith(PACKAGE_PREFIX) and not Path(name).expanduser().exists()


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
        # a token budget replaces the row count of a training batch
        "per_device_batch_size": train.per_device_batch_size if cfg.data.max_tokens_per_batch is None else None,
        "max_tokens_per_batch": cfg.data.max_tokens_per_batch,
        "gradient_accumulation_steps": train.gradient_accumulation_steps,
        "epochs": train.epochs,
        "max_steps": train.max_steps,
        "optimizer": f"{_optimizer(train)}, weight decay {train.weight_decay}",
        "schedule": f"{_schedule(train)} after a linear warmup of "
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


def _optimizer(train) -> str:
    if train.optimizer == "sgd":
        return f"SGD (momentum {train.sgd_momentum}{', Nesterov' if train.sgd_nesterov else ''})"
    if train.optimizer == "adafactor":
        return "Adafactor (no relative step or parameter scaling)"
    return f"AdamW (betas {train.adam_beta1}, {train.adam_beta2}, eps {train.adam_epsilon})"


def _schedule(train) -> str:
    floor = f"{train.min_lr_ratio:g} x the peak"
    return {
        "linear": "linear decay to 0",
        "cosine": f"cosine decay to {floor}",
        "constant": "constant",
        "wsd": f"constant, then a cosine decay to {floor} over the last {train.wsd_decay_ratio:.0%} of the steps "
        "after warmup",
        "polynomial": f"polynomial decay (power {train.poly_power:g}) to {floor}",
    }[train.lr_schedule]
