"""The typed config tree with every default, strict YAML loading, `base:` inheritance, dotted overrides and the
generic cross-field checks. Imports nothing of data, model, tasks or training: tasks pass their sections in."""

from ptrain.config.keys import MISSING, NOT_HYPERPARAMETERS, SEED_KEY, config_value, data_path, flatten_config
from ptrain.config.loading import read_config, to_yaml
from ptrain.config.model_section import LoraSettings
from ptrain.config.schema import (
    DATA_DIR_ENV,
    Config,
    DataConfig,
    ModelConfig,
    NoOptions,
    Strict,
    TrainConfig,
)

__all__ = [
    "DATA_DIR_ENV",
    "MISSING",
    "NOT_HYPERPARAMETERS",
    "SEED_KEY",
    "Config",
    "DataConfig",
    "LoraSettings",
    "ModelConfig",
    "NoOptions",
    "Strict",
    "TrainConfig",
    "config_value",
    "data_path",
    "flatten_config",
    "read_config",
    "to_yaml",
]
