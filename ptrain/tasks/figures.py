"""What a person looks at after an evaluation: the confusion-matrix figure and the highest-loss examples."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # no display on training machines
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402


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


def highest_loss_table(details: dict, texts: list[str], label_names: list[str], count: int) -> str:
    """A markdown table of the `count` examples the model got most wrong (TensorBoard renders it); `details`
    holds per-example losses, rows, labels and predictions."""
    order = torch.argsort(details["losses"], descending=True)[:count].tolist()
    lines = ["| loss | gold | predicted | text |", "|---:|---|---|---|"]
    for i in order:
        text = texts[int(details["rows"][i])].replace("|", "\\|").replace("\n", " ")
        gold, pred = label_names[int(details["labels"][i])], label_names[int(details["predictions"][i])]
        lines.append(f"| {details['losses'][i]:.3f} | {gold} | {pred} | {text} |")
    return "\n".join(lines)
