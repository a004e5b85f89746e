"""Generic cross-field config checks: what can be refused before a model, tokenizer or dataset is loaded (a task's
own checks are the task's: ptrain.tasks); `ptrain check CONFIG` runs only these and the task's."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

from ptrain.config.keys import MISSING, config_value, data_path
from ptrain.config.schema import DATA_DIR_ENV, Config
from ptrain.config.sources import resolve_model_path, saved_dataset_kind
from ptrain.config.stream_checks import check_streaming, expand_train_files
from ptrain.errors import ConfigError, ModelError

# What each train.report_to tracker but tensorboard (a dependency of ptrain) imports, and the pip install that gives it.
# MLflow's database stores (ptrain's default sqlite:///RUN/mlflow.db) need SQLAlchemy and Alembic beside mlflow-skinny.
TRACKER_PACKAGES = {
    "mlflow": (("mlflow",), "mlflow-skinny"),
    "wandb": (("wandb",), "wandb"),
    "trackio": (("trackio",), "trackio"),
    "comet_ml": (("comet_ml",), "comet_ml"),
    "aim": (("aim",), "aim"),
    "clearml": (("clearml",), "clearml"),
    "dvclive": (("dvclive",), "dvclive"),
    "swanlab": (("swanlab",), "swanlab"),
}
MLFLOW_DATABASE_PACKAGES = (("sqlalchemy", "alembic"), "mlflow-skinny sqlalchemy alembic")
MLFLOW_DATABASE_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")  # MLflow's SQL stores (scheme[+driver]://)


def check_config(cfg: Config, path: Path) -> None:
    """Cross-field checks that need no model, data or tokenizer loaded."""
    _check_model(cfg, path)
    check_streaming(cfg, path)  # first: a glob or list of train files is refused without streaming
    _check_data_files(cfg, path)
    _check_labels(cfg, path)
    train = cfg.train
    if train.warmup_steps is not None and train.max_steps is not None and train.warmup_steps >= train.max_steps:
        raise ConfigError(
            f"{path}: train.warmup_steps={train.warmup_steps} must be below train.max_steps={train.max_steps}"
        )
    for key in cfg.hparams:
        if config_value(cfg, key) is MISSING:
            raise ConfigError(f"{path}: hparams names '{key}', which is not a config key (e.g. train.learning_rate)")
    _check_writable(path, cfg.run_dir or cfg.output_dir)
    _check_trackers(train.report_to, path)
    if train.mixed_precision == "fp16" and not _has_cuda():
        raise ConfigError(
            f"{path}: train.mixed_precision=fp16 needs a GPU; "
            "use auto (bf16 where native, else fp32), bf16 or no on CPU"
        )


def _check_model(cfg: Config, path: Path) -> None:
    model = cfg.model
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
    if model.dtype == "float16" and cfg.train.mixed_precision == "fp16":
        raise ConfigError(
            f"{path}: model.dtype=float16 with train.mixed_precision=fp16: the grad scaler cannot unscale fp16 "
            "gradients; keep model.dtype=float32 (fp16 autocast over float32 weights)"
        )
    if model.lora is not None and model.freeze_encoder:
        raise ConfigError(
            f"{path}: model.lora trains adapters in the encoder, model.freeze_encoder freezes it; remove one of them"
        )
    if model.lora is not None and model.lora.quantize is not None:
        _check_quantize(cfg, path)
    for key, name in (("name_or_path", model.name_or_path), ("tokenizer", model.tokenizer)):
        if name is not None:
            try:
                resolve_model_path(name)
            except ModelError as err:
                raise ConfigError(f"{path}: model.{key}: {err}") from None
            if not model.trust_remote_code:
                _refuse_remote_code(path, key, resolve_model_path(name))


def _check_quantize(cfg: Config, path: Path) -> None:
    """model.lora.quantize (QLoRA) loads pretrained weights through bitsandbytes, whose kernels run on CUDA only."""
    quantize = cfg.model.lora.quantize
    if cfg.model.scratch_config is not None:
        raise ConfigError(
            f"{path}: model.lora.quantize={quantize} quantizes pretrained weights as they load; a scratch_config model "
            "has none: remove model.lora.quantize or set model.name_or_path"
        )
    missing = [need for need, ok in (("bitsandbytes", _has_bitsandbytes()), ("a CUDA device", _has_cuda())) if not ok]
    if missing:
        where = "on a GPU without bitsandbytes" if _has_cuda() else "on cpu"
        raise ConfigError(
            f"{path}: model.lora.quantize={quantize} needs bitsandbytes and a CUDA device; this run is {where}; remove "
            "model.lora.quantize or run on a GPU with bitsandbytes installed (pip install bitsandbytes)"
        )


def _has_bitsandbytes() -> bool:
    return importlib.util.find_spec("bitsandbytes") is not None


def _refuse_remote_code(path: Path, key: str, folder: str) -> None:
    """A model folder whose config names its own Python classes (auto_map) would need that code run: refused here,
    in one line and before any run folder, unless model.trust_remote_code is set (transformers refuses it too,
    with a traceback and after the run folder exists)."""
    for name in ("config.json", "tokenizer_config.json"):
        try:
            auto_map = json.loads((Path(folder) / name).read_text()).get("auto_map")
        except (OSError, ValueError, AttributeError):
            continue
        if auto_map:
            classes = ", ".join(sorted({str(v) for v in auto_map.values()}))
            raise ConfigError(
                f"{path}: model.{key}: {folder}/{name} names its own code ({classes}), which ptrain runs only with "
                "model.trust_remote_code=true; read that code first, or use a model folder without auto_map"
            )


def _check_data_files(cfg: Config, path: Path) -> None:
    data = cfg.data
    if data.mixture:
        _check_mixture(cfg, path)
    elif data.train_file is None and data.hub_dataset is None:
        raise ConfigError(f"{path}: set data.train_file (a local file) or data.hub_dataset (a Hub id)")
    if data.train_file is None and not data.mixture:
        return
    for key in ("validation_file", "test_file"):
        if data.split_column and getattr(data, key):
            raise ConfigError(f"{path}: data.split_column takes every split from train_file; set data.{key}=null")
    if data.num_folds and data.validation_file:
        raise ConfigError(
            f"{path}: data.num_folds holds out a fold of the training rows for validation; "
            "set data.validation_file=null"
        )
    for key in ("train_file", "validation_file", "test_file"):
        if key == "train_file" and (data.streaming or isinstance(data.train_file, list)):
            continue  # files, globs or a folder: stream_checks.py
        _check_file(cfg, path, f"data.{key}", getattr(data, key))


def _check_file(cfg: Config, path: Path, key: str, name: str | None) -> None:
    file = data_path(cfg, name)
    if file is None or file.is_file() or (file.is_dir() and saved_dataset_kind(file)):
        return
    if file.is_dir():
        raise ConfigError(
            f"{path}: {key} {file} is a folder but not one written by datasets' save_to_disk (no state.json "
            "or dataset_dict.json); name a data file, or save the rows with Dataset.save_to_disk"
        )
    raise ConfigError(
        f"{path}: {key} {file} does not exist; fix the path, or point data.data_dir "
        f"(or ${DATA_DIR_ENV}) at your copy of the data"
    )


def _check_mixture(cfg: Config, path: Path) -> None:
    """A mixture's sources replace data.train_file (and a Hub dataset's train split); each is read as a train file."""
    data = cfg.data
    for key in ("train_file", "hub_dataset", "split_column"):
        if getattr(data, key) is not None:
            raise ConfigError(
                f"{path}: data.mixture names the training rows and data.{key} does too; keep one (e.g. data.{key}=null)"
            )
    if data.streaming and data.validation_file is None:
        raise ConfigError(f"{path}: a streamed data.mixture holds out no validation rows; set data.validation_file")
    for name, source in data.mixture.items():
        if data.streaming:  # a file, a glob or a save_to_disk folder, as a streamed data.train_file
            expand_train_files(
                cfg.model_copy(update={"data": data.model_copy(update={"train_file": source.file})}), path
            )
        else:
            _check_file(cfg, path, f"data.mixture.{name}.file", source.file)


def _check_labels(cfg: Config, path: Path) -> None:
    names, weights = cfg.data.label_names, cfg.train.class_weights
    if isinstance(weights, list) and names is not None and len(weights) != len(names):
        raise ConfigError(
            f"{path}: train.class_weights has {len(weights)} values but data.label_names has {len(names)} labels"
        )
    if names is not None and len(set(names)) != len(names):
        raise ConfigError(f"{path}: data.label_names has duplicates: {names}")


def _check_writable(path: Path, output_dir: str) -> None:
    """The nearest existing folder on the way to output_dir must be a writable folder."""
    target = Path(output_dir).expanduser().absolute()
    existing = next(p for p in (target, *target.parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        raise ConfigError(f"{path}: output_dir {output_dir} cannot be created ({existing} is not a writable folder)")


def _check_trackers(names: list[str], path: Path) -> None:
    """A tracker whose package is missing is refused now, not after the model and data are loaded (Accelerate
    itself would leave it out with a debug line)."""
    for name in names:
        if name == "tensorboard":
            continue
        modules, install = TRACKER_PACKAGES[name]
        if name == "mlflow" and _mlflow_database(os.environ.get("MLFLOW_TRACKING_URI", "")):
            modules, install = modules + MLFLOW_DATABASE_PACKAGES[0], MLFLOW_DATABASE_PACKAGES[1]
        missing = [module for module in modules if importlib.util.find_spec(module) is None]
        if missing:
            raise ConfigError(
                f"{path}: train.report_to names {name}, which needs {' and '.join(missing)} (not installed): "
                f"pip install {install}"
            )


def _mlflow_database(tracking_uri: str) -> bool:
    """Whether MLflow stores runs in a database: ptrain's default (no MLFLOW_TRACKING_URI) or a database URI."""
    return not tracking_uri or tracking_uri.partition(":")[0].partition("+")[0] in MLFLOW_DATABASE_SCHEMES


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()
