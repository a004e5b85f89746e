"""The Task interface: every hook the recipe, evaluation, export and `ptrain predict` call for one task. Torch-free
(annotations only): a task's declaration (ptrain/tasks/declarations.py) is a Task without its hooks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ptrain.config import NoOptions, Strict
from ptrain.errors import ConfigError

if TYPE_CHECKING:
    import torch


@dataclass
class EvalContext:
    """What an evaluation may need besides the model and the batches."""

    cfg: Any  # ptrain.config.schema.Config
    tokenizer: Any
    label_names: list[str]
    raw: Any = None  # the untokenized split (datasets.Dataset), for texts shown in TensorBoard


@dataclass
class EvalResult:
    metrics: dict[str, float]  # the task's `metrics`, every one of them
    real_tokens: int  # non-pad input tokens evaluated, all processes
    seconds: float
    details: Any = None  # task-specific per-example results for `Task.track`


class Task:
    """One task's choices. The recipe calls only these hooks, so a new task is one new module (and one line in
    the registry, ptrain/tasks/__init__.py). A built-in task declares what config loading and `ptrain runs` read
    (name, metrics, metrics_of, lower_is_better, Options, moved_keys, reads_word_lists, recipe, metric_inputs,
    peft_task_type, check) in ptrain/tasks/declarations.py, torch-free; its module subclasses that declaration with
    the rest."""

    name: str
    metrics: tuple[str, ...]  # every evaluation reports these (unless metrics_of selects); the first is the default
    # train.metric_for_best
    lower_is_better: frozenset[str] = frozenset({"loss"})
    metrics_key: str | None = None  # the key of the task's section that selects what metrics_of reports
    pipeline: str | None  # the transformers.pipeline() task that loads the export (None: no v5 pipeline does)
    uses_label_names: bool = False  # label ids named by data.label_names and the export's id2label
    auto_class: Any  # AutoModelFor...
    Options: type[Strict] = NoOptions  # the task's own config keys: the section named after the task
    moved_keys: dict[str, str] = {}  # an old dotted key of the config -> its key in the task's section
    reads_word_lists: bool = False  # trains on data.format=conll rows (a list of words and tags per row)
    recipe: str = "loop"  # how `ptrain train` trains it: the optimizer loop, or "linear_probe" (ptrain.training)
    problem_types: tuple[str | None, ...] | None = None  # config.problem_type values of its exports (None: any)
    stratified: bool = False  # seeded samples and k-fold keep each label's share (single-label classification)
    metric_inputs: tuple[str, ...] = ()  # gathered tensors (evaluate's details) offered to train.metrics functions
    reads_pairs: bool = False  # its models read a text and a second text (data.text_pair_column)
    refuses_empty_texts: bool = True  # data.empty_texts applies to its columns (chat: chat.bad_rows decides)
    peft_task_type: str | None = None  # model.lora wraps its model as this peft TaskType; None: model.lora is refused
    predict_columns: tuple[str, str | None] = ("text", None)  # `ptrain predict`'s default input columns

    def options(self, cfg) -> Any:
        """The task's section of a config (an instance of Options)."""
        return getattr(cfg, self.name)

    def metrics_of(self, options) -> tuple[str, ...]:
        """The metrics a run reports, given the task's config section (an instance of Options): `metrics`, unless
        the section selects them (seq2seq.metrics); the first is the default train.metric_for_best."""
        return self.metrics

    def check(self, cfg, path) -> None:
        """Cross-field checks of the task's keys against the rest of the config, before any heavy work;
        a refusal is a ConfigError naming `path`, the key and the fix."""

    def columns(self, cfg) -> list[tuple[str, str]]:
        """(dotted config key, column name) pairs every split must have; empty values in them are refused or
        dropped; text columns read as text (a text of digits stays a string)."""
        raise NotImplementedError

    def label_names(self, cfg, train) -> list[str]:
        """Label id order (empty for tasks without named labels)."""
        return []

    def tokenizer_texts(self, cfg, train):
        """The texts a model.train_tokenizer tokenizer learns from (an iterator over the train split)."""
        return (text for text in train[cfg.data.text_column] if text)

    def encoder(self, cfg, tokenizer, label_names: list[str], ds, split: str) -> Callable:
        """A batched `datasets.map` function (batch, indices) -> model columns. Its output may depend on the data,
        the tokenizer, the label names, the data section and the task's own section only: the tokenization cache
        key is derived from exactly those (ptrain/data/tokenize.py)."""
        raise NotImplementedError

    def finish_split(self, cfg, split: str, ds, raw) -> tuple[Any, dict | None]:
        """The tokenized split (`raw`: its rows before tokenization) after the task's own policies and packing, run
        at every start (not cached); and its counts for data_line (None: nothing to say)."""
        return ds, None

    def data_line(self, cfg, counts: dict[str, dict]) -> str:
        """A start-up line about the data, from finish_split's counts per split."""
        return ""

    def collator(self, cfg, tokenizer, device: torch.device):
        """A callable list of encoded rows -> batch of tensors."""
        raise NotImplementedError

    def load_model(self, cfg, label_names: list[str], tokenizer):
        raise NotImplementedError

    def logits(self, outputs) -> torch.Tensor:
        """What the loss reads of the model's outputs (question answering: start and end scores, stacked)."""
        return outputs.logits

    def build_loss(self, cfg, splits):
        """An object with __call__(logits, labels) -> summed loss and target_weight(labels) -> its denominator.
        Only tasks trained by the optimizer loop have one."""
        if self.recipe != "loop":
            raise ConfigError(
                f"task {self.name} is trained by its own recipe ({self.recipe}), not the optimizer loop "
                "that ptrain bench and train.resume need"
            )
        raise NotImplementedError

    def evaluate(self, model, loader, accelerator, context: EvalContext) -> EvalResult:
        raise NotImplementedError

    def track(self, tracker, result: EvalResult, context: EvalContext, step: int) -> None:
        """Figures, tables and texts of one evaluation, beyond the scalars the recipe logs."""

    def predict(
        self, model, tokenizer, texts: list[str], batch_size: int, pairs: list[str] | None = None
    ) -> list[dict]:
        """One output row per text (and its pair, when the task reads_pairs), in input order (`ptrain predict`)."""
        raise NotImplementedError

    def prediction_rows(self, result: EvalResult, context: EvalContext) -> list[dict] | None:
        """`ptrain eval --predictions`: one row per evaluated example, in file order: its text(s), gold,
        predicted, per-example loss (whose mean is the evaluation's loss) and what else the task has; None when
        the task writes none."""
        return None

    def trainer_rows(self, ds):
        """A tokenized split as transformers' Trainer reads it (`ptrain bench --compare-hf`): the model's columns and
        `labels`."""
        return ds.remove_columns(["idx"])

    def matches_export(self, config) -> bool:
        """Whether an exported model's config (config.json) is this task's: the architecture of its auto class,
        and one of its problem types."""
        head = self.auto_class.__name__.removeprefix("AutoModel")
        if not any(name.endswith(head) for name in config.architectures or []):
            return False
        return self.problem_types is None or getattr(config, "problem_type", None) in self.problem_types


def example_texts(cfg, raw) -> Callable[[int], dict]:
    """row -> {text, text_pair} of the raw split (each column read once)."""
    texts = raw[cfg.data.text_column]
    pairs = raw[cfg.data.text_pair_column] if cfg.data.text_pair_column else None
    return lambda row: {"text": texts[row], **({"text_pair": pairs[row]} if pairs is not None else {})}


def file_order(details: dict) -> list[int]:
    """Positions of the gathered examples, sorted by their raw-split row."""
    return details["rows"].argsort().tolist()
