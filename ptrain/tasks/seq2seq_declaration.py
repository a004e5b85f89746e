"""The seq2seq task's declaration (ptrain/tasks/declarations.py lists it): its config section, the generation
metrics a config may select, and its checks, torch-free; ptrain/tasks/seq2seq.py adds the hooks."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ptrain.config import Strict
from ptrain.errors import ConfigError
from ptrain.tasks.base import Task

# Scores of generated text against the references, 0-100: sacrebleu's corpus BLEU and chrF, rouge-score's mean
# F-measures (ptrain/tasks/generation_scores.py computes them).
GENERATION_METRICS = ("bleu", "chrf", "rouge1", "rouge2", "rougeL", "rougeLsum")
GenerationMetric = Literal["bleu", "chrf", "rouge1", "rouge2", "rougeL", "rougeLsum"]
TEACHER_FORCED_METRICS = ("loss", "perplexity")


class Seq2SeqOptions(Strict):
    target_column: str | None = Field(
        None, description="Required: the column of target texts (data.text_column holds the sources)."
    )
    max_target_length: int = Field(
        128, gt=1, description="Tokens per target text at most (EOS included); longer targets are truncated."
    )
    source_prefix: str = Field(
        "",
        description="Text put before every source before tokenization, e.g. 'summarize: ' for a pretrained T5 (quote "
        "it in YAML); saved as the export's config.json `prefix`, which `ptrain predict` puts before its texts too.",
    )
    metrics: list[GenerationMetric] = Field(
        ["bleu", "chrf"],
        min_length=1,
        description="Scores of the generated rows at each evaluation (0-100), reported with loss and perplexity: "
        "bleu, chrf (sacrebleu), rouge1, rouge2, rougeL, rougeLsum (rouge-score, Porter-stemmed F-measure); the first "
        "is the default train.metric_for_best.",
    )
    generation_eval_rows: int = Field(
        200, gt=0, description="The first N rows of each evaluation also scored by generation (seq2seq.metrics)."
    )
    generation_max_new_tokens: int = Field(
        64,
        gt=0,
        description="Generated tokens at most, in evaluation and in the export's generation settings (ptrain predict).",
    )
    generation_num_beams: int = Field(1, gt=0, description="Beam search width; 1 is greedy decoding.")
    generation_length_penalty: float = Field(
        1.0,
        description="Beam search only: beam scores are divided by length to this power; above 1 favours longer "
        "outputs, below 1 shorter ones. Saved with the export's generation settings.",
    )
    generation_examples: int = Field(
        10, ge=0, description="Rows of source, reference and generated text shown in TensorBoard at each evaluation."
    )


class SequenceToSequenceDeclaration(Task):
    name = "seq2seq"
    metrics = ("bleu", "chrf", *TEACHER_FORCED_METRICS)  # with the default seq2seq.metrics
    lower_is_better = frozenset(TEACHER_FORCED_METRICS)
    Options = Seq2SeqOptions
    metrics_key = "metrics"
    moved_keys = {
        "data.target_column": "target_column",
        "data.max_target_length": "max_target_length",
        **{f"train.{key}": key for key in ("generation_eval_rows", "generation_max_new_tokens")},
        **{f"train.{key}": key for key in ("generation_num_beams", "generation_examples")},
    }

    def metrics_of(self, options: Seq2SeqOptions) -> tuple[str, ...]:
        return (*dict.fromkeys(options.metrics), *TEACHER_FORCED_METRICS)

    def check(self, cfg, path) -> None:
        options = self.options(cfg)
        if options.target_column is None:
            raise ConfigError(f"{path}: task seq2seq needs seq2seq.target_column, the column of target texts")
        if options.target_column == cfg.data.text_column:
            raise ConfigError(f"{path}: seq2seq.target_column and data.text_column are both '{options.target_column}'")
        if cfg.train.class_weights is not None:
            raise ConfigError(f"{path}: train.class_weights is for classification; remove it for task seq2seq")
