"""Multi-label classification (any number of labels per text): summed binary cross entropy on multi-hot
targets, one decision threshold, micro/macro F1 and subset accuracy, per-label scores in TensorBoard."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchmetrics.functional.classification import (
    multilabel_exact_match,
    multilabel_f1_score,
    multilabel_precision,
    multilabel_recall,
)

from ptrain.data.labels import source_name
from ptrain.errors import DataError
from ptrain.model.loading import load_head_model
from ptrain.tasks.base import EvalContext, EvalResult, example_texts, file_order
from ptrain.tasks.classification import TextTask, label_maps, predict_logits, text_encoder
from ptrain.tasks.declarations import MultiLabelClassificationDeclaration
from ptrain.tasks.gather import gather_outputs
from ptrain.tasks.tables import per_label_table

PROBLEM_TYPE = "multi_label_classification"
PREDICTED_SEPARATOR = "|"  # between the predicted label names in `ptrain predict` output


class BinaryCrossEntropyLoss:
    """Summed BCE-with-logits over rows x labels; `target_weight` is rows x labels, so the window mean is the
    per-(row, label) mean that torch's BCEWithLogitsLoss and the exported model's own loss compute."""

    def to(self, device: torch.device) -> BinaryCrossEntropyLoss:
        return self

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits.float(), labels.float(), reduction="sum")

    def target_weight(self, labels: torch.Tensor) -> torch.Tensor:
        return torch.full((), float(labels.numel()), device=labels.device)  # a fill on the device: no host copy


class MultiLabelClassification(TextTask, MultiLabelClassificationDeclaration):
    """The label column holds a list of label names per row (json/jsonl/parquet), or a string of names split
    by multi_label_classification.label_separator; an empty list means no label."""

    problem_types = (PROBLEM_TYPE,)

    def label_names(self, cfg, train) -> list[str]:
        if cfg.data.label_names is not None:
            return list(cfg.data.label_names)
        return sorted({name for names in label_lists(cfg, train, "train") for name in names})

    def encoder(self, cfg, tokenizer, label_names, ds, split):
        index = {name: i for i, name in enumerate(label_names)}
        for row, names in enumerate(label_lists(cfg, ds, split)):
            unknown = [name for name in names if name not in index]
            if unknown:
                raise DataError(
                    f"{source_name(ds, split)}: label {unknown[0]!r} at row {row} is not one of the labels "
                    f"{label_names}; fix the row or add the label to data.label_names"
                )
        separator = self.options(cfg).label_separator

        def multi_hot(values: list) -> list[list[float]]:
            rows = []
            for value in values:
                target = [0.0] * len(index)
                for name in parse_labels(value, separator):
                    target[index[name]] = 1.0
                rows.append(target)
            return rows

        return text_encoder(cfg, tokenizer, multi_hot)

    def load_model(self, cfg, label_names, tokenizer):
        model = load_head_model(cfg, self.auto_class, tokenizer, problem_type=PROBLEM_TYPE, **label_maps(label_names))
        # saved in config.json; `ptrain predict` uses it
        model.config.decision_threshold = self.options(cfg).decision_threshold
        return model

    def build_loss(self, cfg, splits) -> BinaryCrossEntropyLoss:
        return BinaryCrossEntropyLoss()

    def evaluate(self, model, loader, accelerator, context: EvalContext) -> EvalResult:
        def outputs(logits, labels):
            losses = F.binary_cross_entropy_with_logits(logits, labels.float(), reduction="none").mean(-1)
            return {"probabilities": logits.sigmoid(), "losses": losses}

        details, tokens, seconds = gather_outputs(model, loader, accelerator, outputs)
        probs, gold = details["probabilities"], details["labels"].int()
        options = {"num_labels": gold.shape[1], "threshold": self.options(context.cfg).decision_threshold}
        metrics = {
            "micro_f1": multilabel_f1_score(probs, gold, average="micro", **options).item(),
            "macro_f1": multilabel_f1_score(probs, gold, average="macro", **options).item(),
            "subset_accuracy": multilabel_exact_match(probs, gold, **options).item(),  # all labels of a row right
            "loss": details["losses"].mean().item(),  # BCE per (row, label)
        }
        details["per_label"] = {
            "precision": multilabel_precision(probs, gold, average="none", **options),
            "recall": multilabel_recall(probs, gold, average="none", **options),
            "f1": multilabel_f1_score(probs, gold, average="none", **options),
        }
        return EvalResult(metrics, tokens, seconds, details)

    def track(self, tracker, result: EvalResult, context: EvalContext, step: int) -> None:
        names, per_label = context.label_names, result.details["per_label"]
        tracker.scalars({f"eval_f1_per_label/{name}": per_label["f1"][i].item() for i, name in enumerate(names)}, step)
        support = result.details["labels"].sum(0)
        tracker.text("eval/per_label_scores", per_label_table(per_label, support, names), step)

    def prediction_rows(self, result: EvalResult, context: EvalContext) -> list[dict]:
        details, names, text = result.details, context.label_names, example_texts(context.cfg, context.raw)
        threshold = self.options(context.cfg).decision_threshold
        gold, probabilities, losses = details["labels"].tolist(), details["probabilities"].tolist(), details["losses"]
        rows = []
        for i in file_order(details):
            rows.append(
                {
                    **text(int(details["rows"][i])),
                    "gold": PREDICTED_SEPARATOR.join(n for n, g in zip(names, gold[i]) if g),
                    "predicted": PREDICTED_SEPARATOR.join(n for n, p in zip(names, probabilities[i]) if p > threshold),
                    **{f"prob_{name}": p for name, p in zip(names, probabilities[i])},
                    "loss": losses[i].item(),  # BCE averaged over the labels: its mean is the printed loss
                }
            )
        return rows

    def predict(self, model, tokenizer, texts: list[str], batch_size: int, pairs=None) -> list[dict]:
        """Every label whose probability passes the export's decision threshold, and all probabilities."""
        names = [model.config.id2label[i] for i in range(model.config.num_labels)]
        threshold = getattr(model.config, "decision_threshold", 0.5)
        probs = predict_logits(model, tokenizer, texts, batch_size, pairs).sigmoid()
        rows = []
        for text, p in zip(texts, probs.tolist()):
            chosen = PREDICTED_SEPARATOR.join(n for n, v in zip(names, p) if v > threshold)
            rows.append({"text": text, "labels": chosen, **{f"prob_{n}": v for n, v in zip(names, p)}})
        return rows


def label_lists(cfg, ds, split: str) -> list[list[str]]:
    """The label names of every row; a string column without data.label_separator is refused."""
    column, separator = cfg.data.label_column, cfg.multi_label_classification.label_separator
    values = ds[column]
    for row, value in enumerate(values):
        if isinstance(value, str) and separator is None:
            raise DataError(
                f"{source_name(ds, split)}: label {value!r} at row {row} is a string; give a list of label "
                f"names (json/jsonl/parquet) or set multi_label_classification.label_separator (e.g. '|')"
            )
        if not isinstance(value, (str, list)):
            raise DataError(
                f"{source_name(ds, split)}: label {value!r} at row {row} is not a list of label names; "
                f"task multi_label_classification needs one per row in data.label_column ('{column}')"
            )
    return [parse_labels(value, separator) for value in values]


def parse_labels(value, separator: str | None) -> list[str]:
    if isinstance(value, str):
        return [name.strip() for name in value.split(separator) if name.strip()]
    return [str(name) for name in value]
