"""What a person looks at after a regression or multi-label evaluation: a predicted-vs-gold scatter, the
largest errors, per-label precision/recall/F1."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # no display on training machines
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

MAX_SCATTER_POINTS = 5000  # more only hides the shape and slows TensorBoard


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


def largest_errors_table(details: dict, texts: list[str], count: int) -> str:
    """Markdown table of the `count` rows with the largest absolute error."""
    errors = (details["predictions"] - details["labels"].float()).abs()
    lines = ["| abs error | gold | predicted | text |", "|---:|---:|---:|---|"]
    for i in torch.argsort(errors, descending=True)[:count].tolist():
        text = _cell(texts[int(details["rows"][i])])
        lines.append(f"| {errors[i]:.3f} | {details['labels'][i]:.3f} | {details['predictions'][i]:.3f} | {text} |")
    return "\n".join(lines)


def per_label_table(scores: dict[str, torch.Tensor], support: torch.Tensor, label_names: list[str]) -> str:
    """Markdown table: one row per label with precision, recall, F1 and the gold count."""
    lines = ["| label | precision | recall | f1 | support |", "|---|---:|---:|---:|---:|"]
    for i, name in enumerate(label_names):
        p, r, f = (scores[k][i].item() for k in ("precision", "recall", "f1"))
        lines.append(f"| {name} | {p:.3f} | {r:.3f} | {f:.3f} | {int(support[i])} |")
    return "\n".join(lines)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
