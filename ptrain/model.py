"""Tokenizer and model: from a folder, a Hub id, an installed model package, or a random scratch config."""

from __future__ import annotations

from pathlib import Path

from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

from ptrain.config import Config
from ptrain.errors import ModelError
from ptrain.sources import resolve_model_path

def load_tokenizer(cfg: Config):
    name = cfg.model.tokenizer or cfg.model.name_or_path
    return AutoTokenizer.from_pretrained(resolve_model_path(name), trust_remote_code=cfg.model.trust_remote_code)


def load_classifier(cfg: Config, label_names: list[str]):
    """AutoModelForSequenceClassification with id2label/label2id taken from the label names."""
    labels = {
        "num_labels": len(label_names),
        "id2label": dict(enumerate(label_names)),
        "label2id": {name: i for i, name in enumerate(label_names)},
    }
    if cfg.model.scratch_config is not None:
        options = dict(cfg.model.scratch_config)
        config = AutoConfig.for_model(options.pop("model_type"), **options, **labels)
        model = AutoModelForSequenceClassification.from_config(config, attn_implementation=cfg.model.attention)
    else:
        model = AutoModelForSequenceClassification.from_pretrained(
            resolve_model_path(cfg.model.name_or_path), trust_remote_code=cfg.model.trust_remote_code,
            attn_implementation=cfg.model.attention, **labels,
        )
    if cfg.model.freeze_encoder:
        for param in model.base_model.parameters():
            param.requires_grad = False
    return model


def load_exported(model_dir: str):
    """A model folder written by ptrain (or any sequence-classification export) with its tokenizer."""
    folder = resolve_model_path(model_dir)
    if not (Path(folder) / "config.json").is_file():
        raise ModelError(f"{model_dir}: no config.json here; point --model at an export such as runs/NAME/TIME/best")
    return AutoTokenizer.from_pretrained(folder), AutoModelForSequenceClassification.from_pretrained(folder)
