"""The figures of `ptrain report` that TensorBoard does not already draw: the training curves from a run's
events, and per-class precision, recall and F1."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read_curves(run_dir: Path, tags: list[str]) -> dict[str, tuple[list[int], list[float]]]:
    """(steps, values) of each scalar tag the run logged (a resumed run's events read as one run)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir), {"scalars": 0}).Reload()
    present = set(events.Tags()["scalars"])
    return {
        tag: ([e.step for e in events.Scalars(tag)], [e.value for e in events.Scalars(tag)])
        for tag in tags
        if tag in present
    }


def curves_figure(curves: dict[str, tuple[list[int], list[float]]], metric: str):
    """Loss (training and evaluation), the evaluation metric and the learning rate against optimizer steps."""
    panels = [
        ("loss", ["train/loss", "eval/loss"]),
        (metric, [f"eval/{metric}"]),
        ("learning rate", ["train/learning_rate"]),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    for ax, (title, tags) in zip(axes, panels):
        for tag in tags:
            if tag in curves:
                steps, values = curves[tag]
                ax.plot(steps, values, marker="o" if tag.startswith("eval") else None, markersize=3, label=tag)
        ax.set_title(title)
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
        if len(tags) > 1:
            ax.legend()
    fig.tight_layout()
    return fig


def per_class_figure(names: list[str], scores: dict[str, list[float]]):
    """Precision, recall and F1 of each class, side by side."""
    fig, ax = plt.subplots(figsize=(1.5 + 1.2 * len(names), 4))
    width = 0.8 / len(scores)
    for i, (kind, values) in enumerate(scores.items()):
        positions = [j + (i - (len(scores) - 1) / 2) * width for j in range(len(names))]
        ax.bar(positions, values, width, label=kind)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_ylim(0, 1.18)  # room above the bars for the legend
    ax.legend(loc="upper center", ncol=len(scores), frameon=False)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def save(fig, path: Path) -> str:
    """Write a figure as PNG (150 dpi) and close it; returns the file name for the Markdown."""
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return path.name
