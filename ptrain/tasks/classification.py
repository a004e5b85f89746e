"""Single-label sequence classification (sentiment, emotion, stance): cross entropy, accuracy and F1,
a confusion matrix and the highest-loss examples in TensorBoard."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_confusion_matrix,
    multiclass_f1_score,
)
from transformers import AutoModelForSequenceClassification

from ptrain.data.collate import padding_collator
from ptrain.data.labels import label_to_id, resolve_label_names
from ptrain.model.loading import load_head_model
from ptrain.tasks.base import EvalContext, EvalResult, example_texts, file_order
from ptrain.tasks.declarations import SequenceClassificationDeclaration, TextTaskDeclaration
from ptrain.tasks.figures import confusion_figure
from ptrain.tasks.gather import gather_outputs
from ptrain.tasks.loss import ClassificationLoss, balanced_class_weights
from ptrain.tasks.tables import highest_loss_table


class TextTask(TextTaskDeclaration):
    """What the sequence-level text tasks share: a text (and text pair) column and a label column, labels named
    by data.label_names (or the training data), a sequence-classification head. Each text task's class comes
    before its declaration, e.g. Regression(TextTask, RegressionDeclaration): the declaration's facts are the
    task's, and these hooks are its unless it has its own."""

    pipeline = "text-classification"
    reads_pairs = True
    uses_label_names = True
    auto_class = AutoModelForSequenceClassification

    def columns(self, cfg) -> list[tuple[str, str]]:
        wanted = [("data.text_column", cfg.data.text_column), ("data.label_column", cfg.data.label_column)]
        if cfg.data.text_pair_column:
            wanted.append(("data.text_pair_column", cfg.data.text_pair_column))
        return wanted

    def label_names(self, cfg, train) -> list[str]:
        return resolve_label_names(cfg, train)

    def encoder(self, cfg, tokenizer, label_names, ds, split):
        mapping = label_to_id(ds, split, cfg.data.label_column, label_names)
        return text_encoder(cfg, tokenizer, lambda values: [mapping[value] for value in values])

    def collator(self, cfg, tokenizer, device: torch.device):
        return padding_collator(tokenizer, cfg.train.mixed_precision, device)


class SequenceClassification(TextTask, SequenceClassificationDeclaration):
    problem_types = (None, "single_label_classification")
    stratified = True

    def load_model(self, cfg, label_names, tokenizer):
        return load_head_model(cfg, self.auto_class, tokenizer, **label_maps(label_names))

    def build_loss(self, cfg, splits) -> ClassificationLoss:
        weights = cfg.train.class_weights
        if weights == "balanced":
            weights = balanced_class_weights(splits.tokenized["train"]["labels"], len(splits.label_names))
        elif weights is not None:
            weights = torch.tensor(weights, dtype=torch.float32)
        return ClassificationLoss(cfg.train.label_smoothing, weights)

    def evaluate(self, model, loader, accelerator, context: EvalContext) -> EvalResult:
        """Every example exactly once (gather_outputs), scored with torchmetrics."""

        def outputs(logits, labels):
            losses = F.cross_entropy(logits, labels, reduction="none")
            return {"predictions": logits.argmax(-1), "losses": losses, "probabilities": logits.softmax(-1)}

        num_labels = len(context.label_names)
        details, tokens, seconds = gather_outputs(model, loader, accelerator, outputs)
        preds, labels = details["predictions"], details["labels"]
        scores = label_scores(preds, labels, num_labels)
        scores["loss"] = details["losses"].mean().item()  # unsmoothed, unweighted cross entropy per example
        metrics = {name: scores[name] for name in self.metrics}
        details["confusion"] = multiclass_confusion_matrix(preds, labels, num_labels)  # [gold, predicted] counts
        return EvalResult(metrics, tokens, seconds, details)

    def prediction_rows(self, result: EvalResult, context: EvalContext) -> list[dict]:
        details, names, text = result.details, context.label_names, example_texts(context.cfg, context.raw)
        labels, predictions = details["labels"].tolist(), details["predictions"].tolist()
        probabilities, losses = details["probabilities"].tolist(), details["losses"].tolist()
        return [
            {
                **text(int(details["rows"][i])),
                "gold": names[labels[i]],
                "predicted": names[predictions[i]],
                **{f"prob_{name}": p for name, p in zip(names, probabilities[i])},
                "loss": losses[i],
            }
            for i in file_order(details)
        ]

    def track(self, tracker, result: EvalResult, context: EvalContext, step: int) -> None:
        names = context.label_names
        tracker.figure("eval/confusion_matrix", confusion_figure(result.details["confusion"], names), step)
        count = context.cfg.train.highest_loss_examples
        if count and context.raw is not None:
            texts = context.raw[context.cfg.data.text_column]
            tracker.text("eval/highest_loss_examples", highest_loss_table(result.details, texts, names, count), step)

    @torch.no_grad()
    def predict(self, model, tokenizer, texts: list[str], batch_size: int, pairs=None) -> list[dict]:
        """Label and per-class probabilities, rows in input order."""
        names = [model.config.id2label[i] for i in range(model.config.num_labels)]
        return label_rows(texts, predict_logits(model, tokenizer, texts, batch_size, pairs).softmax(-1), names)


def text_encoder(cfg, tokenizer, labels_of: Callable[[list], list]) -> Callable:
    """The batched map function of the text tasks: tokenized text (and pair), labels_of(label values), idx."""
    text, pair, label, max_length = (
        cfg.data.text_column,
        cfg.data.text_pair_column,
        cfg.data.label_column,
        cfg.data.max_length,
    )

    def encode(batch: dict, indices: list[int]) -> dict:
        encoded = tokenizer(batch[text], batch[pair] if pair else None, truncation=True, max_length=max_length)
        encoded["labels"] = labels_of(batch[label])
        encoded["idx"] = indices  # row in the raw split, to show the text of an evaluated example
        return encoded

    return encode


def label_maps(label_names: list[str]) -> dict:
    """num_labels, id2label and label2id for a model config: the export then predicts label names."""
    return {
        "num_labels": len(label_names),
        "id2label": dict(enumerate(label_names)),
        "label2id": {name: i for i, name in enumerate(label_names)},
    }


def label_rows(texts: list[str], probs: torch.Tensor, names: list[str]) -> list[dict]:
    """`ptrain predict` rows: the likeliest label, its probability, and every label's probability."""
    rows = []
    for text, p in zip(texts, probs.tolist()):
        best = max(range(len(names)), key=p.__getitem__)
        rows.append(
            {"text": text, "label": names[best], "score": p[best], **{f"prob_{n}": v for n, v in zip(names, p)}}
        )
    return rows


@torch.no_grad()
def predict_logits(model, tokenizer, texts: list[str], batch_size: int, pairs=None) -> torch.Tensor:
    """fp32 logits of every text (and pair), in input order; batches of similar length (sorted), so padding
    stays small; cut at the tokenizer's model_max_length (an export's: the data.max_length it trained with)."""
    model.eval()
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    logits = torch.empty(len(texts), model.config.num_labels)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        second = [pairs[i] for i in chunk] if pairs is not None else None
        encoded = tokenizer([texts[i] for i in chunk], second, padding=True, truncation=True, return_tensors="pt")
        logits[chunk] = model(**encoded).logits.float()
    return logits


def label_scores(predictions: torch.Tensor, labels: torch.Tensor, num_labels: int) -> dict[str, float]:
    """Accuracy, macro and weighted F1 (torchmetrics), for ptrain's evaluation, the linear probe and the HF side of
    `ptrain bench`."""
    return {
        "accuracy": multiclass_accuracy(predictions, labels, num_labels, average="micro").item(),
        "macro_f1": multiclass_f1_score(predictions, labels, num_labels, average="macro").item(),
        "weighted_f1": multiclass_f1_score(predictions, labels, num_labels, average="weighted").item(),
    }
