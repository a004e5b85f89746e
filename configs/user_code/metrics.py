"""Extra metrics for ptrain (train.metrics): functions of the gathered tensors they name, returning a float."""

from torchmetrics.functional.classification import multiclass_recall


def balanced_accuracy(predictions, labels, probabilities):
    """The mean of the per-class recalls: accuracy that each class counts for equally."""
    return multiclass_recall(predictions, labels, num_classes=probabilities.shape[-1], average="macro").item()
