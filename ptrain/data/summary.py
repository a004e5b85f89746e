"""What a user looks at before training: the label counts of each split, each split's token lengths (before
truncation) and the share data.max_length cuts. Shown in TensorBoard at the start of training (data/...) and in
`ptrain report`."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from datasets import Dataset, DatasetDict

LENGTH_BATCH = 1000


@dataclass
class DataSummary:
    max_length: int
    label_counts: dict[str, Counter] = field(default_factory=dict)  # split -> label name -> rows
    lengths: dict[str, list[int]] = field(default_factory=dict)  # split -> tokens per row, before truncation

    def truncated_share(self, split: str) -> float:
        lengths = self.lengths[split]
        return sum(length > self.max_length for length in lengths) / max(len(lengths), 1)

    def lines(self) -> list[str]:
        """One line per split: rows, label counts, median and 95th-percentile length, the truncated share."""
        out = []
        for split, lengths in self.lengths.items():
            ordered = sorted(lengths)
            median, p95 = ordered[len(ordered) // 2], ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
            labels = ", ".join(f"{name} {count:,}" for name, count in self.label_counts.get(split, {}).items())
            out.append(
                f"{split}: {len(lengths):,} rows; tokens median {median}, 95th percentile {p95}, "
                f"{self.truncated_share(split):.1%} cut at {self.max_length}"
                + (f"; labels: {labels}" if labels else "")
            )
        return out


def summarise_data(cfg, raw: DatasetDict, tokenizer, label_names: list[str], counts_labels: bool) -> DataSummary:
    """Label counts (when the task has one named label per row) and token lengths of every split."""
    summary = DataSummary(max_length=cfg.data.max_length)
    for split, ds in raw.items():
        if counts_labels:
            counted = Counter(_label_name(value, label_names) for value in ds[cfg.data.label_column])
            summary.label_counts[split] = Counter({name: counted.get(name, 0) for name in label_names} | counted)
        lengths = token_lengths(ds, cfg.data.text_column, cfg.data.text_pair_column, tokenizer)
        if lengths is not None:
            summary.lengths[split] = lengths
    return summary


def token_lengths(ds: Dataset, column: str, pair_column: str | None, tokenizer) -> list[int] | None:
    """Tokens per row with special tokens and no truncation; None when the column holds no plain texts."""
    if column not in ds.column_names:  # a task reading other columns (chat's conversations)
        return None
    texts = ds[column]
    if not texts or not isinstance(texts[0], str):
        return None
    pairs = ds[pair_column] if pair_column else None
    lengths = []
    for start in range(0, len(texts), LENGTH_BATCH):
        chunk = texts[start : start + LENGTH_BATCH]
        second = pairs[start : start + LENGTH_BATCH] if pairs else None
        encoded = tokenizer(chunk, second, truncation=False, verbose=False)["input_ids"]
        lengths += [len(ids) for ids in encoded]
    return lengths


def _label_name(value, label_names: list[str]) -> str:
    """A label as its name: names stay, ids become the name at that index."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(label_names):
        return label_names[value]
    return str(value)
