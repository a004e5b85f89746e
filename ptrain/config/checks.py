"""Cross-field config checks: everything that can be refused before a model, tokenizer or dataset is loaded
(`ptrain check CONFIG` runs only these)."""

from __future__ import annotations

import os
from pathlib import Path

from ptrain.config import DATA_DIR_ENV, MISSING, Config, config_value, data_path
from ptrain.errors import ConfigError, ModelError
from ptrain.sources import resolve_model_path


def check_config(cfg: Config, path: Path) -> None:
    """Cross-field checks that need no model, data or tokenizer loaded."""
    data, model, train = cfg.data, cfg.model, cfg.train
    if (model.name_or_path is None) == (model.scratch_config is None):
        raise ConfigError(f"{path}: set exactly one of model.name_or_path or model.scratch_config")
    if model.scratch_config is not None:
        if "model_type" not in model.scratch_config:
            raise ConfigError(f"{path}: model.scratch_config needs a model_type (e.g. bert)")
        if (model.tokenizer is None) == (model.train_tokenizer is None):
            raise ConfigError(
                f"{path}: a model.scratch_config model needs model.tokenizer or model.train_tokenizer (one of them)"
            )
    elif model.train_tokenizer is not None:
        raise ConfigError(
            f"{path}: model.train_tokenizer is for scratch_config models; {model.name_or_path} has its vocabulary"
        )
    if data.train_file is None and data.hub_dataset is None:
        raise ConfigError(f"{path}: set data.train_file (a local file) or data.hub_dataset (a Hub id)")
    if data.train_file is not None:
        for key in ("train_file", "validation_file", "test_file"):
            file = data_path(cfg, getattr(data, key))
            if file is not None and not file.is_file():
                raise ConfigError(
                    f"{path}: data.{key} {file} does not exist; fix the path, or point data.data_dir "
                    f"(or ${DATA_DIR_ENV}) at your copy of the data"
                )
    if isinstance(train.class_weights, list) and data.label_names is not None:
        if len(train.class_weights) != len(data.label_names):
            raise ConfigError(
                f"{path}: train.class_weights has {len(train.class_weights)} values but data.label_names "
                f"has {len(data.label_names)} labels"
            )
    if data.label_names is not None and len(set(data.label_names)) != len(data.label_names):
        raise ConfigError(f"{path}: data.label_names has duplicates: {data.label_names}")
    if train.warmup_steps is not None and train.max_steps is not None and train.warmup_steps >= train.max_steps:
        raise ConfigError(
            f"{path}: train.warmup_steps={train.warmup_steps} must be below train.max_steps={train.max_steps}"
        )
    for key, name in (("name_or_path", model.name_or_path), ("tokenizer", model.tokenizer)):
        if name is not None:
            try:
                resolve_model_path(name)
            except ModelError as err:
                raise ConfigError(f"{path}: model.{key}: {err}") from None
    for key in cfg.hparams:
        if config_value(cfg, key) is MISSING:
            raise ConfigError(f"{path}: hparams names '{key}', which is not a config key (e.g. train.learning_rate)")
    _check_writable(path, cfg.run_dir or cfg.output_dir)
    _check_task_metric(cfg, path)
    _check_token_classification(cfg, path)
    _check_heads(cfg, path)
    _check_seq2seq(cfg, path)
    _check_language_modeling(cfg, path)
    if train.mixed_precision == "fp16" and not _has_cuda():
        raise ConfigError(
            f"{path}: train.mixed_precision=fp16 needs a GPU; "
            "use auto (bf16 where native, else fp32), bf16 or no on CPU"
        )


def _check_task_metric(cfg: Config, path: Path) -> None:
    from ptrain.tasks import get_task  # the task modules import torch and transformers: only when checking

    metrics = get_task(cfg.task).metrics
    if cfg.train.metric_for_best is not None and cfg.train.metric_for_best not in metrics:
        raise ConfigError(
            f"{path}: train.metric_for_best '{cfg.train.metric_for_best}' is not a {cfg.task} metric; "
            f"choose one of {', '.join(metrics)}"
        )


def _check_token_classification(cfg: Config, path: Path) -> None:
    """CoNLL files hold word and tag lists, which only token classification reads; it reads one list per row."""
    if cfg.data.format == "conll" and cfg.task != "token_classification":
        raise ConfigError(f"{path}: data.format=conll gives word and tag lists; use task: token_classification")
    if cfg.task == "token_classification" and cfg.data.text_pair_column is not None:
        raise ConfigError(f"{path}: token_classification tags one list of words per row; unset data.text_pair_column")


def _check_heads(cfg: Config, path: Path) -> None:
    """Regression and multi-label: keys that they would silently ignore are refused."""
    data, train = cfg.data, cfg.train
    if cfg.task == "regression" and (data.label_names is not None or train.class_weights is not None):
        raise ConfigError(
            f"{path}: task regression has one numeric target; remove data.label_names and train.class_weights"
        )
    if cfg.task in ("regression", "multi_label_classification") and train.label_smoothing:
        raise ConfigError(f"{path}: train.label_smoothing applies to sequence_classification only")
    if data.label_separator is not None and cfg.task != "multi_label_classification":
        raise ConfigError(
            f"{path}: data.label_separator is for task multi_label_classification (the task is {cfg.task})"
        )
    if data.label_separator == "":
        raise ConfigError(
            f"{path}: data.label_separator is empty; quote it (a bare | is YAML's block-scalar sign), "
            "e.g. label_separator: '|'"
        )
    if cfg.task == "multi_label_classification" and train.class_weights is not None:
        raise ConfigError(
            f"{path}: train.class_weights is for sequence_classification; multi-label losses are unweighted"
        )


def _check_seq2seq(cfg: Config, path: Path) -> None:
    data = cfg.data
    if cfg.task != "seq2seq":
        if data.target_column is not None:
            raise ConfigError(f"{path}: data.target_column is for task seq2seq (the task is {cfg.task})")
        return
    if data.target_column is None:
        raise ConfigError(f"{path}: task seq2seq needs data.target_column, the column of target texts")
    if data.target_column == data.text_column:
        raise ConfigError(f"{path}: data.target_column and data.text_column are both '{data.text_column}'")
    if cfg.train.class_weights is not None:
        raise ConfigError(f"{path}: train.class_weights is for classification; remove it for task seq2seq")


def _check_language_modeling(cfg: Config, path: Path) -> None:
    data, scratch = cfg.data, cfg.model.scratch_config or {}
    if data.prompt_column is not None and (cfg.task != "causal_lm" or data.packing):
        raise ConfigError(
            f"{path}: data.prompt_column is for causal_lm without data.packing (packed blocks cut across prompts)"
        )
    if data.packing and cfg.task not in ("masked_lm", "causal_lm"):
        raise ConfigError(f"{path}: data.packing is for the masked_lm and causal_lm tasks, not {cfg.task}")
    positions = scratch.get("n_positions") or scratch.get("max_position_embeddings")
    if data.packing and positions is not None and data.block_size > positions:
        raise ConfigError(
            f"{path}: data.block_size {data.block_size} exceeds the model's {positions} positions "
            f"(model.scratch_config); lower data.block_size"
        )


def _check_writable(path: Path, output_dir: str) -> None:
    """The nearest existing folder on the way to output_dir must be a writable folder."""
    target = Path(output_dir).expanduser().absolute()
    existing = next(p for p in (target, *target.parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        raise ConfigError(f"{path}: output_dir {output_dir} cannot be created ({existing} is not a writable folder)")


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()
