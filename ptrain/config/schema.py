"""The typed config tree: every default lives in its classes (the train section and the top level below, the data
and model sections in their modules), each key with its description, and code reads `cfg.train.learning_rate`,
never `cfg.get(...)`. A task's own keys live in a section named after the task, whose class the task declares
(ptrain.tasks); `config_class` adds those sections to the tree."""

from __future__ import annotations

import difflib
import functools
import typing
from typing import Any, Literal

from pydantic import BaseModel, Field, create_model, field_validator, model_validator

from ptrain.config.data_section import DataConfig
from ptrain.config.model_section import ModelConfig
from ptrain.config.optim_section import OptimisationKeys
from ptrain.config.strict import Strict

DATA_DIR_ENV = "PTRAIN_DATA_DIR"
# train.report_to: ptrain's own TensorBoard writer, and the trackers Accelerate's tracker classes drive
TrackerName = Literal["tensorboard", "mlflow", "wandb", "trackio", "comet_ml", "aim", "clearml", "dvclive", "swanlab"]
TRACKERS: tuple[str, ...] = typing.get_args(TrackerName)


class TrainConfig(OptimisationKeys):
    epochs: int = Field(3, gt=0, description="Passes over the training rows (train.max_steps, when set, replaces it).")
    max_steps: int | None = Field(
        None, gt=0, description="Optimizer steps to run; when set it replaces train.epochs as the length of the run."
    )
    max_tokens: int | None = Field(
        None,
        gt=0,
        description="With data.streaming and packed rows (the task's packing: every token real): the run's length in "
        "training tokens, as optimizer steps of block_size x per_device_batch_size (with data.max_tokens_per_batch: "
        "the blocks it holds) x gradient_accumulation_steps x processes tokens, rounded up; instead of "
        "train.max_steps.",
    )
    per_device_batch_size: int = Field(32, gt=0, description="Training rows per micro-batch on each process.")
    eval_batch_size: int = Field(
        64, gt=0, description="Rows per batch on each process when evaluating (and generating)."
    )
    gradient_accumulation_steps: int = Field(
        1,
        gt=0,
        description="Micro-batches per optimizer step; the global batch is per_device_batch_size x this x processes.",
    )
    max_grad_norm: float | None = Field(
        1.0,
        gt=0,
        description="Clip the gradients' global L2 norm to this before each optimizer step; null: no clipping.",
    )
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = Field(
        "auto",
        description="Autocast precision over float32 master weights; auto: bf16 on GPUs and CPUs with native bf16, "
        "fp16 on GPUs without, fp32 elsewhere (ptrain/runtime/precision.py).",
    )
    label_smoothing: float = Field(
        0.0, ge=0, lt=1, description="Label smoothing of the cross-entropy loss (classification tasks)."
    )
    class_weights: Literal["balanced"] | list[float] | None = Field(
        None,
        description="Cross-entropy weight per label, in data.label_names order, or balanced: n_rows / (n_labels x "
        "label count) from the training rows, as scikit-learn's.",
    )
    seed: int = Field(
        42, description="Seed of weight initialisation, dropout, the shuffle (with the epoch) and the validation split."
    )
    log_every_steps: int = Field(
        20, gt=0, description="Optimizer steps between training logs (loss, learning rate, gradient norm)."
    )
    eval_every_steps: int | None = Field(
        None, gt=0, description="Optimizer steps between evaluations; evaluation also runs at every epoch end."
    )
    metric_for_best: str | None = Field(
        None,
        description="The evaluation metric that picks the best checkpoint and drives early stopping; default the "
        "task's headline metric (weighted_f1, ...). <name>/<metric> names a data.eval_files set.",
    )
    early_stopping_patience: int | None = Field(
        None, gt=0, description="Stop after this many evaluations without improvement of train.metric_for_best."
    )
    stop_at_metric: float | None = Field(
        None, description="Stop once train.metric_for_best reaches this value (time-to-target runs)."
    )
    highest_loss_examples: int = Field(
        20, ge=0, description="Rows in the TensorBoard table of highest-loss examples at each evaluation."
    )
    checkpoint_every_steps: int | None = Field(None, gt=0, description="Optimizer steps between resumable checkpoints.")
    checkpoint_at_epoch_end: bool = Field(True, description="Write a resumable checkpoint at the end of every epoch.")
    keep_checkpoints: int = Field(
        2, gt=0, description="Newest checkpoints kept, plus the one taken at the best evaluation."
    )
    resume: str | None = Field(
        None,
        description="Resume from a run or checkpoint folder, or auto: the newest checkpoint of this config's name.",
    )
    on_checkpoint_error: Literal["stop", "warn"] = Field(
        "stop",
        description="A periodic checkpoint that cannot be written (a full disk): stop (exit 1, resumable) or warn and "
        "go on.",
    )
    eval_at_start: bool = Field(
        False, description='Also evaluate before the first step (the "before" figure of a fine-tune).'
    )
    nonfinite: Literal["skip", "stop"] = Field(
        "skip", description="A non-finite loss or gradient norm: drop that step (skip), or stop the run (stop)."
    )
    max_consecutive_nonfinite: int = Field(
        5, gt=0, description="With train.nonfinite=skip: stop after this many skipped steps in a row."
    )
    ema_decay: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="Keep an exponential moving average of the weights, with this decay per step; evaluate and "
        "export it.",
    )
    gradient_checkpointing: bool = Field(
        False,
        description="Recompute each layer's activations in backward (non-reentrant): less memory, more compute.",
    )
    loss: str | None = Field(
        None,
        description="file.py:Name or module:Name, a function (logits, labels) -> the loss summed over the batch, "
        "replacing the task's loss.",
    )
    metrics: list[str] = Field(
        [],
        description="file.py:Name references: functions of the gathered predictions -> a float, evaluated with the "
        "task's own metrics.",
    )
    callbacks: list[str] = Field(
        [],
        description="file.py:Name references: classes with on_<event> methods (ptrain/training/callbacks.py).",
    )
    fast_paths: bool = Field(
        True,
        description="Exact speed-ups (`ptrain/fast_paths/__init__.py`); false runs the plain model, for comparison.",
    )
    compile: bool = Field(
        False,
        description="torch.compile (inductor) the model for training and evaluation, lengths dynamic; the CPU fast "
        "paths are off under it. For GPUs: on the CPU it measured slower than eager (docs/engines.md).",
    )
    collective_timeout_seconds: float = Field(
        300,
        gt=0,
        description="Launched runs: a collective (all-reduce, barrier) that waits longer than this for another "
        "process ends the run in one line (a frozen node, a cut network); waits for a process writing a cache allow "
        "30 minutes.",
    )
    report_to: list[TrackerName] = Field(
        ["tensorboard"],
        description="Trackers that get the run's scalars and hyperparameters: tensorboard (ptrain's own, with the "
        "figures, tables and HPARAMS), and through Accelerate's trackers mlflow (store: sqlite:///RUN/mlflow.db, "
        "or $MLFLOW_TRACKING_URI), wandb, trackio, comet_ml, aim, clearml, dvclive, swanlab; [] for none "
        "(RUN/metrics.jsonl is written whatever this says).",
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


class Config(Strict):
    name: str = Field(
        description="The run's name: runs go to output_dir/name/<timestamp>/, and train.resume=auto looks there."
    )
    task: str = Field(
        "sequence_classification",
        description="A registered task (ptrain.tasks); the section named after it holds its own keys.",
    )
    output_dir: str = Field("runs", description="The folder under which each run gets output_dir/name/<timestamp>/.")
    run_dir: str | None = Field(
        None, description="A fixed run folder instead of output_dir/name/<timestamp>/ (a sweep sets it)."
    )
    hparams: list[str] = Field(
        [],
        description="Dotted config keys added to TensorBoard's HPARAMS tab (a sweep adds the keys it varies).",
    )
    data: DataConfig = Field(description="Where the rows come from and how they are read, split and tokenized.")
    model: ModelConfig = Field(description="The model and tokenizer to train, and how (dtype, attention, LoRA).")
    train: TrainConfig = Field(
        TrainConfig(), description="The optimizer, schedule, evaluation, checkpoints and training loop."
    )


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

    fields: dict[str, Any] = {
        name: (section | None, Field(None, description=f"The keys of task {name}.")) for name, section in sections
    }
    validators = {"own_section_only": model_validator(mode="after")(own_section_only)}
    return create_model("Config", __base__=Config, __validators__=validators, **fields)
