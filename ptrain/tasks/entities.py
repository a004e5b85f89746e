"""Word tags for token classification: label names, sub-token alignment, and entity-level scores (seqeval)."""

from __future__ import annotations

from itertools import chain

import pyarrow as pa
import pyarrow.compute as pc
from datasets import ClassLabel, Dataset

from ptrain.data.labels import source_name
from ptrain.errors import DataError
from ptrain.tasks.loss import IGNORE_INDEX
from ptrain.tasks.tables import markdown_table

OUTSIDE = "O"


def tag_names(cfg, train: Dataset) -> list[str]:
    """Tag id order: data.label_names, else the dataset's ClassLabel, else the training tags sorted with O first."""
    if cfg.data.label_names is not None:
        return list(cfg.data.label_names)
    column = cfg.data.label_column
    feature = getattr(train.features[column], "feature", None)
    if isinstance(feature, ClassLabel):
        return list(feature.names)
    values = set(chain.from_iterable(train[column]))
    if any(not isinstance(v, str) for v in values):
        raise DataError(
            f"{source_name(train, 'train')}: data.label_column '{column}' holds integer tags; set "
            f"data.label_names (e.g. [O, B-PER, I-PER, ...]) so entity types are known"
        )
    return sorted(values, key=lambda tag: (tag != OUTSIDE, tag))


def check_word_columns(ds: Dataset, split: str, words: str, tags: str) -> None:
    """Both columns hold lists, of the same length in every row."""
    for key, column in (("text_column", words), ("label_column", tags)):
        kind = ds.data.column(column).type
        if not (pa.types.is_list(kind) or pa.types.is_large_list(kind)):
            raise DataError(
                f"{source_name(ds, split)}: data.{key} '{column}' holds {kind}, not a list per row; "
                f"token_classification needs lists of words and tags (or data.format=conll)"
            )
    lengths = [pc.list_value_length(ds.data.column(column)) for column in (words, tags)]
    differs = pc.not_equal(*lengths).to_pylist()
    if any(differs):
        row = differs.index(True)
        raise DataError(
            f"{source_name(ds, split)}: row {row} has {lengths[0][row]} words but {lengths[1][row]} tags; "
            f"every word needs one tag"
        )


def tag_to_id(ds: Dataset, split: str, column: str, names: list[str]) -> dict:
    """Every tag value of `ds` -> its id, or fail naming the first unknown tag and its row."""
    values = set(chain.from_iterable(ds[column]))
    by_position = all(isinstance(v, int) for v in values)
    mapping = {i: i for i in range(len(names))} if by_position else {name: i for i, name in enumerate(names)}
    unknown = sorted((v for v in values if v not in mapping), key=repr)
    if unknown:
        row = next(i for i, tags in enumerate(ds[column]) if unknown[0] in tags)
        raise DataError(
            f"{source_name(ds, split)}: tag {unknown[0]!r} at row {row} is not one of the tags {names}; "
            f"fix the row or add the tag to data.label_names"
        )
    return mapping


def align_to_subtokens(word_ids: list[int | None], word_labels: list[int]) -> list[int]:
    """A word's label on its first sub-token; IGNORE_INDEX on its other sub-tokens and on special tokens."""
    aligned, previous = [], None
    for word in word_ids:
        aligned.append(IGNORE_INDEX if word is None or word == previous else word_labels[word])
        previous = word
    return aligned


def entity_scores(gold: list[list[str]], predicted: list[list[str]], types: list[str]) -> tuple[dict, dict]:
    """Entity-level micro precision/recall/F1 overall and per type, and tag accuracy.

    seqeval's default mode, which scores as the CoNLL conlleval script does (an I- tag after O starts an
    entity); the usual way CoNLL-2003 F1 is reported. Returns (metrics, the per-type report with support)."""
    from seqeval.metrics import accuracy_score, classification_report  # with scikit-learn: 0.5 s, NER only

    report = classification_report(gold, predicted, output_dict=True, zero_division=0)
    overall = report["micro avg"]
    metrics = {
        "f1": overall["f1-score"],
        "precision": overall["precision"],
        "recall": overall["recall"],
        "accuracy": accuracy_score(gold, predicted),
    }
    for kind in types:
        if kind in report:
            for name, key in (("precision", "precision"), ("recall", "recall"), ("f1", "f1-score")):
                metrics[f"{name}_{kind}"] = report[kind][key]
    return metrics, {kind: report[kind] for kind in [*types, "micro avg"] if kind in report}


def entity_types(label_names: list[str]) -> list[str]:
    """PER, ORG, ... from B-PER, I-ORG, ... (IOB2 or IOB1 tags; O has none)."""
    return sorted({name.split("-", 1)[1] for name in label_names if "-" in name})


def report_table(report: dict) -> str:
    """Per-type precision, recall, F1 and gold-entity count as a markdown table (TensorBoard renders it)."""
    rows = (
        [
            "all (micro)" if kind == "micro avg" else kind,
            *(f"{row[key]:.4f}" for key in ("precision", "recall", "f1-score")),
            int(row["support"]),
        ]
        for kind, row in report.items()
    )
    return markdown_table(["type", "precision", "recall", "f1", "support"], rows, align="lrrrr")


def worst_sentences_table(details: dict, words: list[list[str]], count: int) -> str:
    """The `count` sentences with the highest mean loss per word, with gold and predicted entities."""
    order = sorted(range(len(details["losses"])), key=details["losses"].__getitem__, reverse=True)[:count]
    rows = []
    for i in order:
        sentence = words[details["rows"][i]]
        gold, pred = (entity_spans(tags, sentence) for tags in (details["gold"][i], details["predicted"][i]))
        rows.append([f"{details['losses'][i]:.3f}", gold, pred, " ".join(sentence)])
    return markdown_table(["loss", "gold entities", "predicted entities", "sentence"], rows, align="rlll")


def entity_spans(tags: list[str], words: list[str]) -> str:
    """`TYPE: words; TYPE: words` of a sentence's BIO tags, or (none)."""
    from seqeval.metrics.sequence_labeling import get_entities

    spans = "; ".join(f"{kind}: {' '.join(words[start : end + 1])}" for kind, start, end in get_entities(tags))
    return spans or "(none)"
