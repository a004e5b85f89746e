"""Markdown tables for TensorBoard's text tab: one table writer with one cell escaping, and the tables of the
text-head tasks (highest-loss examples, largest errors, per-label scores)."""

from __future__ import annotations

import textwrap
from collections.abc import Iterable

import torch

SEPARATORS = {"l": "---", "r": "---:"}  # r: numbers, right-aligned
# A long text cell is broken into lines of this many characters: unbroken, it claims the whole table width and
# TensorBoard's text tab (which breaks words anywhere) squeezes the narrow columns to "lo ss" and "go ld".
TEXT_LINE = 70


def wrapped(text: str, width: int = TEXT_LINE) -> str:
    """The text as lines of at most `width` characters (a markdown_table with line_break="<br>" shows them)."""
    return "\n".join(textwrap.wrap(text, width)) or text


def cell(text: str, line_break: str = " ") -> str:
    """A cell's text: `|` would end the cell and a newline the row (`line_break` replaces it, e.g. "<br>")."""
    return text.replace("|", "\\|").replace("\n", line_break)


def markdown_table(header: list[str], rows: Iterable[list], align: str = "", line_break: str = " ") -> str:
    """A header, a separator and one line per row; `align` has one letter per column (l, r; default l), and every
    cell (str() of it) is escaped with `cell`."""
    align = align or "l" * len(header)
    lines = [_line(header, line_break), "|" + "|".join(SEPARATORS[a] for a in align) + "|"]
    lines += (_line(row, line_break) for row in rows)
    return "\n".join(lines)


def _line(cells: list, line_break: str) -> str:
    return "| " + " | ".join(cell(str(value), line_break) for value in cells) + " |"


def highest_loss_table(details: dict, texts: list[str], label_names: list[str], count: int) -> str:
    """A markdown table of the `count` examples the model got most wrong (TensorBoard renders it); `details`
    holds per-example losses, rows, labels and predictions."""
    order = torch.argsort(details["losses"], descending=True)[:count].tolist()
    rows = (
        [
            f"{details['losses'][i]:.3f}",
            label_names[int(details["labels"][i])],
            label_names[int(details["predictions"][i])],
            wrapped(texts[int(details["rows"][i])]),
        ]
        for i in order
    )
    return markdown_table(["loss", "gold", "predicted", "text"], rows, align="rlll", line_break="<br>")


def largest_errors_table(details: dict, texts: list[str], count: int) -> str:
    """Markdown table of the `count` rows with the largest absolute error."""
    errors = (details["predictions"] - details["labels"].float()).abs()
    rows = (
        [
            f"{errors[i]:.3f}",
            f"{details['labels'][i]:.3f}",
            f"{details['predictions'][i]:.3f}",
            wrapped(texts[int(details["rows"][i])]),
        ]
        for i in torch.argsort(errors, descending=True)[:count].tolist()
    )
    return markdown_table(["abs error", "gold", "predicted", "text"], rows, align="rrrl", line_break="<br>")


def per_label_table(scores: dict[str, torch.Tensor], support: torch.Tensor, label_names: list[str]) -> str:
    """Markdown table: one row per label with precision, recall, F1 and the gold count."""
    rows = (
        [name, *(f"{scores[k][i].item():.3f}" for k in ("precision", "recall", "f1")), int(support[i])]
        for i, name in enumerate(label_names)
    )
    return markdown_table(["label", "precision", "recall", "f1", "support"], rows, align="lrrrr")
