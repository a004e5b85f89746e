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


def label_counts_figure(label_counts: dict[str, dict[str, int]]):
    """Rows per label, one bar group per label and one bar per split; shares on top of each bar."""
    splits = list(label_counts)
    names = list(dict.fromkeys(name for counts in label_counts.values() for name in counts))
    width = 0.8 / max(len(splits), 1)
    fig, ax = plt.subplots(figsize=(1.5 + 1.1 * len(names), 4))
    for i, split in enumerate(splits):
        counts = [label_counts[split].get(name, 0) for name in names]
        total = max(sum(counts), 1)
        positions = [j + (i - (len(splits) - 1) / 2) * width for j in range(len(names))]
        bars = ax.bar(positions, counts, width, label=split)
        ax.bar_label(bars, [f"{c / total:.0%}" for c in counts], fontsize=7)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_ylabel("rows")
    ax.legend()
    fig.tight_layout()
    return fig


def length_figure(lengths: dict[str, list[int]], max_length: int):
    """Token lengths before truncation per split (normalised histograms); the dashed line is data.max_length."""
    fig, ax = plt.subplots(figsize=(7, 4))
    longest = max(max(values) for values in lengths.values())
    bins = range(0, longest + 2, max(1, (longest + 1) // 60))
    for split, values in lengths.items():
        cut = sum(value > max_length for value in values) / max(len(values), 1)
        ax.hist(values, bins=bins, density=True, histtype="step", linewidth=1.5, label=f"{split} ({cut:.1%} cut)")
    ax.axvline(max_length, color="grey", linestyle="--", linewidth=1)
    ax.set_xlabel(f"tokens per row (dashed: data.max_length {max_length})")
    ax.set_ylabel("share of rows")
    ax.legend()
    fig.tight_layout()
    return fig
