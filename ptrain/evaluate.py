"""Evaluation over all processes: per-example predictions gathered without duplicates, torchmetrics scores."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_confusion_matrix,
    multiclass_f1_score,
)

METRICS = ("loss", "accuracy", "macro_f1", "weighted_f1")
LOWER_IS_BETTER = {"loss"}


@dataclass
class EvalResult:
    metrics: dict[str, float]
    predictions: torch.Tensor  # per example, in the order gathered
    labels: torch.Tensor
    losses: torch.Tensor  # unsmoothed, unweighted cross entropy per example
    probabilities: torch.Tensor
    rows: torch.Tensor  # row of each example in its raw split
    confusion: torch.Tensor  # [gold, predicted] counts
    real_tokens: int
    seconds: float


@torch.no_grad()
def evaluate(model, loader, accelerator, num_labels: int) -> EvalResult:
    """Every example exactly once: gather_for_metrics drops the samples added to even out the last batch."""
    start = time.perf_counter()
    was_training = model.training
    model.eval()
    parts: dict[str, list[torch.Tensor]] = {"preds": [], "labels": [], "losses": [], "probs": [], "rows": []}
    real_tokens = torch.zeros((), device=accelerator.device)
    for batch in loader:
        labels, rows = batch.pop("labels"), batch.pop("idx")
        logits = model(**batch).logits.float()
        real_tokens += batch["attention_mask"].sum()
        losses = F.cross_entropy(logits, labels, reduction="none")
        gathered = accelerator.gather_for_metrics((logits.argmax(-1), labels, losses, logits.softmax(-1), rows))
        for key, value in zip(parts, gathered):
            parts[key].append(value.cpu())
    model.train(was_training)
    preds, labels, losses, probs, rows = (torch.cat(parts[key]) for key in parts)
    metrics = {
        "loss": losses.mean().item(),
        "accuracy": multiclass_accuracy(preds, labels, num_labels, average="micro").item(),
        "macro_f1": multiclass_f1_score(preds, labels, num_labels, average="macro").item(),
        "weighted_f1": multiclass_f1_score(preds, labels, num_labels, average="weighted").item(),
    }
    confusion = multiclass_confusion_matrix(preds, labels, num_labels)
    tokens = int(accelerator.reduce(real_tokens, "sum").item())
    return EvalResult(metrics, preds, labels, losses, probs, rows, confusion, tokens, time.perf_counter() - start)


def is_improvement(metric: str, value: float, best: float | None) -> bool:
    if best is None:
        return True
    return value < best if metric in LOWER_IS_BETTER else value > best
