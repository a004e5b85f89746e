"""Token-budget batches (data.max_tokens_per_batch): rows cut into micro-batches of at most a number of padded
tokens, from any iterable of (row, length) (a map-style split here; a stream's buffer can feed the same cut), and
the batch sampler of a map-style training split."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow.compute as pc
import torch
from datasets import Dataset

from ptrain.errors import DataError


def padded_length(length: int, multiple: int | None) -> int:
    """A row's length as its collator pads it (to a multiple of 8 for mixed precision on a GPU)."""
    return -(-length // multiple) * multiple if multiple else length


def budget_batches(
    rows: Iterable[tuple[int, int]], max_tokens: int, multiple: int | None = None
) -> Iterator[list[int]]:
    """The rows in their order, cut greedily into batches whose padded size (rows x longest padded row) is at most
    `max_tokens`. A row longer than the budget alone is refused: a batch over the budget is what it rules out."""
    batch: list[int] = []
    longest = 0
    for row, length in rows:
        padded = padded_length(length, multiple)
        if padded > max_tokens:
            raise DataError(
                f"data.max_tokens_per_batch={max_tokens} is below training row {row}'s {padded} tokens"
                f"{' (padded to a multiple of ' + str(multiple) + ')' if multiple else ''}: raise it to at least "
                f"{padded}, or shorten the rows (data.max_length, or the task's block_size when packing)"
            )
        if batch and (len(batch) + 1) * max(longest, padded) > max_tokens:
            yield batch
            batch, longest = [], 0
        batch.append(row)
        longest = max(longest, padded)
    if batch:
        yield batch


def row_lengths(ds: Dataset) -> np.ndarray:
    """Tokens of each row's input_ids (a seq2seq row: its source), read from Arrow without building Python lists."""
    column = ds.with_format("arrow")["input_ids"]
    return pc.list_value_length(column).to_numpy(zero_copy_only=False).astype(np.int64)


@dataclass(frozen=True)
class BudgetSummary:
    """What the start line says of the built batches."""

    batches: int
    rows: int
    padded_tokens: int
    real_tokens: int

    def describe(self, max_tokens: int) -> str:
        padding = 1 - self.real_tokens / max(self.padded_tokens, 1)
        return (
            f"up to {max_tokens:,} padded tokens ({self.batches:,} batches of {self.rows / max(self.batches, 1):.1f} "
            f"rows on average, {padding:.1%} padding)"
        )


class TokenBudgetBatches:
    """A DataLoader batch_sampler: the batches are cut once, from the row order drawn with `seed` (with
    `group_by_length`, that order sorted by length, ties kept in their drawn order, so each batch holds rows of
    nearly one length), so their number, and the step plan, is the same every epoch; `shuffle`, the loader's
    generator that the loop seeds with (seed, epoch), orders them at each pass, so a resumed run sees the same
    order and skips the batches it consumed. It has no batch_size: Accelerate then shards it by whole batches,
    process i taking batches i, i + n, ... and repeating the first ones when the count does not divide (even_batches),
    so every process runs the same number of batches."""

    def __init__(
        self,
        lengths: np.ndarray,
        max_tokens: int,
        seed: int,
        shuffle: torch.Generator,
        group_by_length: bool = True,
        multiple: int | None = None,
    ) -> None:
        order = torch.randperm(len(lengths), generator=torch.Generator().manual_seed(seed)).numpy()
        if group_by_length:
            order = order[np.argsort(lengths[order], kind="stable")]
        rows = zip(order.tolist(), lengths[order].tolist(), strict=True)
        sizes = [len(batch) for batch in budget_batches(rows, max_tokens, multiple)]
        # the batches as slices of one array: 8 bytes a row, not a Python list per batch
        self.order, self.bounds = order, np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])
        self.shuffle = shuffle
        longest = np.maximum.reduceat(lengths[order], self.bounds[:-1]) if sizes else np.zeros(0, np.int64)
        if multiple:
            longest = -(-longest // multiple) * multiple
        self.summary = BudgetSummary(
            batches=len(sizes),
            rows=len(lengths),
            padded_tokens=int((np.asarray(sizes) * longest).sum()),
            real_tokens=int(lengths.sum()),
        )

    def __len__(self) -> int:
        return len(self.bounds) - 1

    def __iter__(self) -> Iterator[list[int]]:
        for batch in torch.randperm(len(self), generator=self.shuffle).tolist():
            yield self.order[self.bounds[batch] : self.bounds[batch + 1]].tolist()


def budget_sampler(loader) -> TokenBudgetBatches | None:
    """The token-budget batch sampler inside a (prepared: sharded, skipping) loader, or None."""
    sampler = getattr(loader, "batch_sampler", None)
    while sampler is not None and not isinstance(sampler, TokenBudgetBatches):
        sampler = getattr(sampler, "batch_sampler", None)
    return sampler
