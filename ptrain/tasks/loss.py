"""CrossEntropyLoss on the model's logits, normalised by the real targets of a whole accumulation window."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ptrain.config.references import load_reference
from ptrain.errors import TrainingError

IGNORE_INDEX = -100


class ClassificationLoss:
    """Summed cross entropy; `target_weight` gives the matching denominator (the weighted target count).

    Summing per micro-batch and dividing by the window's total makes gradient accumulation and several
    processes give exactly the gradient of one big batch, the same value PyTorch's weighted mean gives.
    """

    def __init__(self, label_smoothing: float = 0.0, class_weights: torch.Tensor | None = None):
        self.class_weights = class_weights
        self.criterion = nn.CrossEntropyLoss(
            weight=class_weights, reduction="sum", label_smoothing=label_smoothing, ignore_index=IGNORE_INDEX
        )

    def to(self, device: torch.device) -> ClassificationLoss:
        if self.class_weights is not None:
            self.class_weights = self.class_weights.to(device)
            self.criterion.weight = self.class_weights
        return self

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.criterion(logits.float(), labels)

    def target_weight(self, labels: torch.Tensor) -> torch.Tensor:
        real = labels != IGNORE_INDEX
        if self.class_weights is None:
            return real.sum().float()
        # every label's weight, zero where ignored: no boolean indexing, whose data-dependent shape reads the host
        return (self.class_weights[labels.clamp(min=0)] * real).sum()


class TokenLoss(ClassificationLoss):
    """ClassificationLoss over every position of a sequence (NER tags, LM and seq2seq targets): summed over the
    real targets (labels != -100), `target_weight` counts them.

    shift=True (causal LM): the logits at position t predict the label at t+1, so both are shifted by one and
    the count is of targets after the shift.
    """

    def __init__(self, label_smoothing: float = 0.0, class_weights: torch.Tensor | None = None, shift: bool = False):
        super().__init__(label_smoothing, class_weights)
        self.shift = shift

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        logits, labels = self._align(logits, labels)
        return super().__call__(logits.flatten(0, -2), labels.flatten())

    def target_weight(self, labels: torch.Tensor) -> torch.Tensor:
        return super().target_weight(labels[:, 1:] if self.shift else labels)

    def per_example(self, logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Unweighted, unsmoothed summed cross entropy and target count of each row (for perplexity)."""
        logits, labels = self._align(logits, labels)
        losses = F.cross_entropy(logits.transpose(1, 2).float(), labels, reduction="none", ignore_index=IGNORE_INDEX)
        return losses.sum(-1), (labels != IGNORE_INDEX).sum(-1)

    def _align(self, logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return (logits[:, :-1], labels[:, 1:]) if self.shift else (logits, labels)


def balanced_class_weights(labels: list[int], num_labels: int) -> torch.Tensor:
    """n_samples / (n_classes * count(class)), as scikit-learn's class_weight='balanced'."""
    counts = torch.bincount(torch.tensor(labels), minlength=num_labels).float()
    return len(labels) / (num_labels * counts.clamp(min=1))


class UserLoss:
    """train.loss: the user's function (or nn.Module) of (fp32 logits, labels) -> the loss summed over the batch.
    The task's own loss still gives the denominator (target_weight), so the window normalisation holds."""

    def __init__(self, function, reference: str, task_loss):
        self.function, self.reference, self.task_loss = function, reference, task_loss

    def to(self, device: torch.device) -> UserLoss:
        if isinstance(self.function, nn.Module):
            self.function.to(device)
        self.task_loss = self.task_loss.to(device)
        return self

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        loss = self.function(logits.float(), labels)
        if not isinstance(loss, torch.Tensor) or loss.ndim != 0:
            shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
            raise TrainingError(
                f"train.loss: {self.reference} returned {shape}; return one scalar tensor, the loss summed "
                "over the batch (ptrain divides by the targets of the accumulation window)"
            )
        return loss

    def target_weight(self, labels: torch.Tensor) -> torch.Tensor:
        return self.task_loss.target_weight(labels)


def with_user_loss(train_cfg, task_loss):
    """train.loss in place of the task's loss (whose target_weight it keeps), or the task's loss."""
    if train_cfg.loss is None:
        return task_loss
    function = load_reference(train_cfg.loss, "train.loss")
    if isinstance(function, type):  # a class (an nn.Module): one instance, made with no arguments
        function = function()
    return UserLoss(function, train_cfg.loss, task_loss)
