"""What extractive question answering declares to a config (torch-free): its section `question_answering` (the
columns, the windows over long contexts, the answer search, unanswerable questions) and its checks."""

from __future__ import annotations

from pydantic import Field

from ptrain.config import Strict
from ptrain.errors import ConfigError
from ptrain.tasks.base import Task


class QuestionAnsweringOptions(Strict):
    question_column: str = Field("question", description="The column of questions.")
    context_column: str = Field("context", description="The column of the passages that hold the answers.")
    answers_column: str = Field(
        "answers",
        description="The column of answers: SQuAD's {text: [...], answer_start: [...]} per question (data.format="
        "squad, JSON, Parquet, the Hub's squad), or one answer text per row (CSV, JSONL), located by "
        "question_answering.answer_start_column or else at its first occurrence in the context. Training learns "
        "the first answer; evaluation scores against every answer.",
    )
    answer_start_column: str | None = Field(
        None,
        description="With one answer text per row: the column of its character offset in the context.",
    )
    doc_stride: int = Field(
        128,
        gt=0,
        description="A context longer than data.max_length (with its question) is read in windows that share this "
        "many tokens, so an answer cut by one window's end is whole in the next.",
    )
    max_answer_length: int = Field(30, gt=0, description="Tokens in a predicted answer at most.")
    n_best: int = Field(
        20,
        gt=0,
        description="Start and end tokens considered per window (the highest-scoring of each); the answer is the "
        "best-scoring valid span they form over all windows of the question.",
    )
    unanswerable: bool = Field(
        False,
        description="Questions without an answer (SQuAD 2.0) are data: they train towards the first ([CLS]) token, "
        "and the prediction is no answer when that token's score beats the best span by more than "
        "question_answering.null_score_margin. Without it a row with no answer is refused.",
    )
    null_score_margin: float = Field(
        0.0, description="With question_answering.unanswerable: how much the no-answer score must beat the best span."
    )


class QuestionAnsweringDeclaration(Task):
    name = "question_answering"
    metrics = ("f1", "exact_match", "loss")  # the official SQuAD scores, 0-100; loss per window (start and end)
    Options = QuestionAnsweringOptions
    peft_task_type = "QUESTION_ANS"

    def check(self, cfg, path) -> None:
        options, data = self.options(cfg), cfg.data
        if options.doc_stride >= data.max_length // 2:
            raise ConfigError(
                f"{path}: question_answering.doc_stride={options.doc_stride} must be below half of data.max_length="
                f"{data.max_length} (windows would barely advance); lower it (e.g. {data.max_length // 3})"
            )
        if options.null_score_margin and not options.unanswerable:
            raise ConfigError(f"{path}: question_answering.null_score_margin needs question_answering.unanswerable")
        if data.text_pair_column is not None:
            raise ConfigError(
                f"{path}: question_answering reads question_answering.question_column and context_column; unset "
                "data.text_pair_column"
            )
        if cfg.train.class_weights is not None:
            raise ConfigError(f"{path}: train.class_weights is for classification; remove it")
