"""Loading an exported model folder (ptrain's or any Hugging Face export) with its ptrain task."""

from __future__ import annotations

from pathlib import Path

from transformers import AutoConfig, AutoTokenizer

from ptrain.config.sources import resolve_model_path
from ptrain.errors import ModelError
from ptrain.tasks import task_of_export


def load_exported(model_dir: str):
    """A model folder written by ptrain (or any Hugging Face export): tokenizer, model and its ptrain task."""
    folder = resolve_model_path(model_dir)
    if (Path(folder) / "adapter_config.json").is_file() and not (Path(folder) / "config.json").is_file():
        raise ModelError(
            f"{model_dir}: a LoRA adapter without its base model; point --model at the merged export of the same "
            "run (its best/ or final/ folder)"
        )
    if not (Path(folder) / "config.json").is_file():
        raise ModelError(f"{model_dir}: no config.json here; point --model at an export such as runs/NAME/TIME/best")
    task = task_of_export(AutoConfig.from_pretrained(folder), model_dir)
    return AutoTokenizer.from_pretrained(folder), task.auto_class.from_pretrained(folder), task


def export_label_names(model) -> list[str]:
    """The label names in id order, from the export's id2label."""
    return [model.config.id2label[i] for i in range(model.config.num_labels)]
