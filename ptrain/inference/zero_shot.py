"""`ptrain predict --candidate-labels`: zero-shot classification of a file's texts with an NLI export, through
transformers' zero-shot-classification pipeline (each text paired with a hypothesis per candidate label)."""

from __future__ import annotations

import argparse
import sys

from ptrain.errors import DataError, ModelError

DEFAULT_TEMPLATE = "This example is {}."  # the pipeline's own default


def add_zero_shot_options(sub) -> None:
    sub.add_argument(
        "--candidate-labels",
        metavar="A,B,C",
        help="zero-shot: score these comma-separated labels with an NLI export (one with an entailment label)",
    )
    sub.add_argument(
        "--hypothesis-template",
        help=f"with --candidate-labels: the hypothesis, {{}} standing for a label (default {DEFAULT_TEMPLATE!r})",
    )


def run_zero_shot(args: argparse.Namespace) -> int:
    """`ptrain predict --candidate-labels ...`: the pipeline's label and scores for every text of --input."""
    labels, template = zero_shot_options(args)
    text_column = args.text_column or "text"
    count = zero_shot_file(
        args.model, args.input, args.output, text_column, labels, template, args.batch_size, args.precision
    )
    if args.output != "-":
        print(f"ptrain: {count} zero-shot predictions written to {args.output}", file=sys.stderr)
    return 0


def zero_shot_options(args: argparse.Namespace) -> tuple[list[str], str]:
    """The candidate labels and the hypothesis template, or a one-line refusal."""
    if args.candidate_labels is None:
        raise DataError("--hypothesis-template needs --candidate-labels (zero-shot); add them or leave it out")
    labels = [label.strip() for label in args.candidate_labels.split(",") if label.strip()]
    if not labels:
        raise DataError("--candidate-labels is empty; give comma-separated labels, e.g. --candidate-labels joy,anger")
    if len(set(labels)) < len(labels):
        raise DataError(f"--candidate-labels {args.candidate_labels!r} repeats a label; give each once")
    template = args.hypothesis_template or DEFAULT_TEMPLATE
    try:
        formats = "{}" in template and template.format("x") != template
    except (IndexError, KeyError, ValueError):
        formats = False
    if not formats:
        raise DataError(
            f"--hypothesis-template {template!r} has no {{}} where the label goes; e.g. {DEFAULT_TEMPLATE!r}"
        )
    if args.text_pair_column:
        raise DataError("--text-pair-column: zero-shot pairs each text with the hypotheses itself; leave it out")
    return labels, template


def zero_shot_file(
    model_dir: str,
    input_path: str,
    output: str,
    text_column: str,
    labels: list[str],
    template: str,
    batch_size: int,
    precision: str = "auto",
) -> int:
    """One row per text, in input order: the likeliest candidate label, its score and every label's score, as
    pipeline("zero-shot-classification") gives them (--precision no: exactly; auto may autocast to bf16)."""
    from pathlib import Path

    from transformers import pipeline

    from ptrain.inference.exports import load_exported
    from ptrain.inference.predict import read_texts, write_rows
    from ptrain.runtime.precision import autocast, inference_precision

    tokenizer, model, _ = load_exported(model_dir)
    check_entailment_label(model.config, model_dir)
    texts = list(read_texts(Path(input_path), text_column)[0])  # a list: the pipeline reads anything else as one text
    classifier = pipeline("zero-shot-classification", model=model, tokenizer=tokenizer)
    with autocast(inference_precision(precision)):
        results = classifier(texts, candidate_labels=labels, hypothesis_template=template, batch_size=batch_size)
    results = [results] if isinstance(results, dict) else results
    write_rows([zero_shot_row(text, result, labels) for text, result in zip(texts, results)], output)
    return len(texts)


def check_entailment_label(config, model_dir: str) -> None:
    """The pipeline scores the label whose name starts with "entail" (any case); an export without one is refused."""
    names = list(config.label2id)
    if not any(name.lower().startswith("entail") for name in names):
        raise ModelError(
            f"--candidate-labels: {model_dir} has no entailment label (its labels: {names}); zero-shot needs an "
            "NLI export, e.g. one trained with configs/sick_nli.yaml"
        )


def zero_shot_row(text: str, result: dict, labels: list[str]) -> dict:
    """The row of one text: the best label, its score, and `prob_<label>` in the order the labels were given."""
    scores = dict(zip(result["labels"], result["scores"]))
    return {"text": text, "label": result["labels"][0], "score": result["scores"][0]} | {
        f"prob_{label}": scores[label] for label in labels
    }
