"""Evaluation figures for TensorBoard: the confusion matrix (classification, the linear probe) and the
predicted-vs-gold scatter (regression)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # no display on training machines
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

MAX_SCATTER_POINTS = 5000  # more only hides the shape and slows TensorBoard


def confusion_figure(confusion: torch.Tensor, label_names: list[str]):
    """Rows are gold labels, normalised to sum to 1; each cell also shows its count."""
    counts = confusion.float()
    shares = counts / counts.sum(dim=1, keepdim=True).clamp(min=1)
    size = 1.2 + 0.7 * len(label_names)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(shares.numpy(), cmap="Blues", vmin=0, vmax=1)
    ticks = range(len(label_names))
    ax.set_xticks(ticks, label_names, rotation=45, ha="right")
    ax.set_yticks(ticks, label_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    for gold in ticks:
        for pred in ticks:
            color = "white" if shares[gold, pred] > 0.5 else "black"
            text = f"{shares[gold, pred]:.2f}\n{int(counts[gold, pred])}"
            ax.text(pred, gold, text, ha="center", va="center", color=color, fontsize=8)
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig


def scatter_figure(gold: torch.Tensor, predicted: torch.Tensor):
    """Each evaluated row as a point; the diagonal is a perfect prediction."""
    gold, predicted = gold[:MAX_SCATTER_POINTS].numpy(), predicted[:MAX_SCATTER_POINTS].numpy()
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(gold, predicted, s=6, alpha=0.4)
    low, high = float(min(gold.min(), predicted.min())), float(max(gold.max(), predicted.max()))
    ax.plot([low, high], [low, high], color="grey", linewidth=1)
    ax.set_xlabel("gold")
    ax.set_ylabel("predicted")
    fig.tight_layout()
    return fig
