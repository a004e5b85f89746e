"""What each built-in task declares to a config: its name and metrics, its config section with the keys that
moved into it, and its cross-field checks. Torch-free, so `ptrain check` and `ptrain runs` answer without
importing torch; each task's module (e.g. ptrain/tasks/seq2seq.py) adds the model, data and evaluation hooks."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ptrain.config import Strict
from ptrain.errors import ConfigError
from ptrain.tasks.base import Task
from ptrain.tasks.chat_declaration import ChatDeclaration
from ptrain.tasks.packing import PACKING_MOVED_KEYS, PackingOptions, check_block_size
from ptrain.tasks.qa_declaration import QuestionAnsweringDeclaration
from ptrain.tasks.seq2seq_declaration import SequenceToSequenceDeclaration


class TextTaskDeclaration(Task):
    """The sequence-level text tasks (a text, a label column, a sequence-classification head)."""

    peft_task_type = "SEQ_CLS"


class SequenceClassificationDeclaration(TextTaskDeclaration):
    name = "sequence_classification"
    metrics = ("weighted_f1", "loss", "accuracy", "macro_f1")
    metric_inputs = ("predictions", "labels", "probabilities", "losses")


class TokenClassificationDeclaration(Task):
    name = "token_classification"
    metrics = ("f1", "loss", "precision", "recall", "accuracy")  # entity-level micro scores; accuracy per word
    peft_task_type = "TOKEN_CLS"
    reads_word_lists = True  # data.format=conll

    def check(self, cfg, path) -> None:
        if cfg.data.text_pair_column is not None:
            raise ConfigError(
                f"{path}: token_classification tags one list of words per row; unset data.text_pair_column"
            )


class RegressionDeclaration(TextTaskDeclaration):
    name = "regression"
    metrics = ("pearson", "spearman", "loss", "mae")  # loss is the mean squared error
    lower_is_better = frozenset({"loss", "mae"})
    metric_inputs = ("predictions", "labels")

    def check(self, cfg, path) -> None:
        data, train = cfg.data, cfg.train
        if data.label_names is not None or train.class_weights is not None:
            raise ConfigError(
                f"{path}: task regression has one numeric target; remove data.label_names and train.class_weights"
            )
        if train.label_smoothing:
            raise ConfigError(f"{path}: train.label_smoothing applies to sequence_classification only")


class MultiLabelOptions(Strict):
    label_separator: str | None = Field(
        None,
        description='A label string holds several names split by this, e.g. "|" (quote it in YAML); without it the '
        "label column must hold lists of names (json, jsonl, parquet).",
    )
    decision_threshold: float = Field(
        0.5, gt=0, lt=1, description="A label is predicted when its sigmoid probability is above this."
    )


class MultiLabelClassificationDeclaration(TextTaskDeclaration):
    name = "multi_label_classification"
    metrics = ("micro_f1", "macro_f1", "subset_accuracy", "loss")
    metric_inputs = ("probabilities", "labels", "losses")
    Options = MultiLabelOptions
    moved_keys = {"data.label_separator": "label_separator", "train.decision_threshold": "decision_threshold"}

    def check(self, cfg, path) -> None:
        if self.options(cfg).label_separator == "":
            raise ConfigError(
                f"{path}: multi_label_classification.label_separator is empty; quote it (a bare | is YAML's "
                "block-scalar sign), e.g. label_separator: '|'"
            )
        if cfg.train.class_weights is not None:
            raise ConfigError(
                f"{path}: train.class_weights is for sequence_classification; multi-label losses are unweighted"
            )
        if cfg.train.label_smoothing:
            raise ConfigError(f"{path}: train.label_smoothing applies to sequence_classification only")


class LinearProbeOptions(Strict):
    pooling: Literal["cls", "mean"] = Field(
        "cls",
        description="The sentence feature: the [CLS] hidden state (cls), or the masked mean of the last hidden states "
        "(mean).",
    )
    regularization_c: float = Field(
        1.0, gt=0, description="scikit-learn's C of the logistic regression: the inverse L2 strength."
    )
    max_iter: int = Field(1000, gt=0, description="LBFGS iterations of the logistic regression at most.")
    projector_rows: int = Field(
        2000, ge=0, description="Validation rows sent to TensorBoard's embedding projector; 0: none."
    )


class LinearProbeDeclaration(TextTaskDeclaration):
    name = "linear_probe"
    metrics = ("accuracy", "macro_f1", "weighted_f1")
    lower_is_better = frozenset()
    recipe = "linear_probe"
    Options = LinearProbeOptions
    peft_task_type = None  # the encoder stays frozen: nothing for adapters to train
    moved_keys = {
        "model.pooling": "pooling",
        "train.probe_regularization_c": "regularization_c",
        "train.probe_max_iter": "max_iter",
        "train.projector_rows": "projector_rows",
    }


class MaskedLMOptions(PackingOptions):
    mlm_probability: float = Field(
        0.15,
        gt=0,
        lt=1,
        description="Share of tokens chosen for prediction: 80% become [MASK], 10% a random token, 10% stay.",
    )


class MaskedLMDeclaration(Task):
    name = "masked_lm"
    metrics = ("perplexity", "loss")
    lower_is_better = frozenset({"loss", "perplexity"})
    Options = MaskedLMOptions
    moved_keys = {**PACKING_MOVED_KEYS, "train.mlm_probability": "mlm_probability"}

    def check(self, cfg, path) -> None:
        check_block_size(cfg, self.options(cfg), path)


class CausalLMOptions(PackingOptions):
    prompt_column: str | None = Field(
        None,
        description="Without packing: a column of prompts, read before data.text_column (the response); its tokens "
        "get no loss.",
    )
    sample_prompts: list[str] = Field(
        [], description="Prompts whose generated continuations go to TensorBoard at each evaluation."
    )
    sample_max_new_tokens: int = Field(40, gt=0, description="Tokens generated per sample prompt.")


class CausalLMDeclaration(Task):
    name = "causal_lm"
    metrics = ("perplexity", "loss")
    lower_is_better = frozenset({"loss", "perplexity"})
    Options = CausalLMOptions
    peft_task_type = "CAUSAL_LM"
    moved_keys = {
        **PACKING_MOVED_KEYS,
        "data.prompt_column": "prompt_column",
        "train.sample_prompts": "sample_prompts",
        "train.sample_max_new_tokens": "sample_max_new_tokens",
    }

    def check(self, cfg, path) -> None:
        options = self.options(cfg)
        if options.prompt_column is not None and options.packing:
            raise ConfigError(
                f"{path}: causal_lm.prompt_column is for causal_lm without causal_lm.packing (packed blocks cut "
                "across prompts)"
            )
        check_block_size(cfg, options, path)


# In the registry's order (error messages list tasks in it).
DECLARATIONS: tuple[Task, ...] = (
    SequenceClassificationDeclaration(),
    TokenClassificationDeclaration(),
    RegressionDeclaration(),
    MultiLabelClassificationDeclaration(),
    LinearProbeDeclaration(),
    MaskedLMDeclaration(),
    CausalLMDeclaration(),
    ChatDeclaration(),
    SequenceToSequenceDeclaration(),
    QuestionAnsweringDeclaration(),
)
