"""Tokenizer and model: from a folder, a Hub id, an installed model package, or a random scratch config."""

from __future__ import annotations

from pathlib import Path

from transformers import AutoConfig, AutoTokenizer

from ptrain.errors import ModelError
from ptrain.sources import resolve_model_path


def load_tokenizer(cfg):
    name = cfg.model.tokenizer or cfg.model.name_or_path
    return AutoTokenizer.from_pretrained(resolve_model_path(name), trust_remote_code=cfg.model.trust_remote_code)


def from_config_or_pretrained(cfg, auto_class, **config_kwargs):
    """auto_class (an AutoModelFor...) from model.name_or_path, or with random weights from model.scratch_config;
    config_kwargs (label maps, problem_type) go into the model config."""
    if cfg.model.scratch_config is not None:
        options = dict(cfg.model.scratch_config)
        config = AutoConfig.for_model(options.pop("model_type"), **options, **config_kwargs)
        return auto_class.from_config(config, attn_implementation=cfg.model.attention)
    return auto_class.from_pretrained(
        resolve_model_path(cfg.model.name_or_path), trust_remote_code=cfg.model.trust_remote_code,
        attn_implementation=cfg.model.attention, **config_kwargs,
    )  # fmt: skip


def freeze_encoder(model) -> None:
    """Train the task head only."""
    for param in model.base_model.parameters():
        param.requires_grad = False


def load_exported(model_dir: str):
    """A model folder written by ptrain (or any Hugging Face export): tokenizer, model and its ptrain task."""
    from ptrain.tasks import task_of_export

    folder = resolve_model_path(model_dir)
    if not (Path(folder) / "config.json").is_file():
        raise ModelError(f"{model_dir}: no config.json here; point --model at an export such as runs/NAME/TIME/best")
    task = task_of_export(AutoConfig.from_pretrained(folder), model_dir)
    return AutoTokenizer.from_pretrained(folder), task.auto_class.from_pretrained(folder), task
