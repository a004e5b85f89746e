"""data.max_tokens_per_batch with data.streaming: a process's streamed rows cut into micro-batches by the token budget
as the shuffle buffer hands them out, by the rule of map-style budgets (token_budget.budget_batches), resumable
exactly: the row that overflowed a batch opens the next one and is saved with the stream's state."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import torch

from ptrain.data.token_budget import budget_batches, padded_length
from ptrain.errors import ConfigError

PENDING = "budget_pending"  # the state's key for the rows read past the last batch


class StreamBudgetBatches(torch.utils.data.IterableDataset):
    """Lists of rows of at most `max_tokens` padded tokens (rows x the longest padded row; `multiple`: the collator's
    pad multiple) from an endless stateful stream of rows (streaming.ShuffleBuffer), cut greedily in the stream's
    order: no length grouping, a stream's lengths are not known ahead. A cut needs one row of look-ahead: the row
    that did not fit waits here for the next batch. The state (state_dict / load_state_dict, as torchdata's
    StatefulDataLoader asks of a dataset, one per worker with data.num_workers) is the stream's own, with that row
    under PENDING; it is whole between batches."""

    def __init__(self, rows: torch.utils.data.IterableDataset, max_tokens: int, multiple: int | None) -> None:
        self.rows, self.max_tokens, self.multiple = rows, max_tokens, multiple
        self.pending: list[dict] = []  # rows taken from the stream that no batch holds yet

    def __iter__(self) -> Iterator[list[dict]]:
        restored, self.pending = self.pending, []

        def taken() -> Iterator[tuple[int, int]]:
            for row in itertools.chain(restored, self.rows):
                self.pending.append(row)
                # the row's encoder index names it if it is over the budget; a seq2seq row's length is its source's
                yield row.get("idx", -1), len(row["input_ids"])

        # budget_batches yields a batch once it has taken the row after it: that row stays pending
        for batch in budget_batches(taken(), self.max_tokens, self.multiple):
            rows, self.pending = self.pending[: len(batch)], self.pending[len(batch) :]
            yield rows

    def state_dict(self) -> dict:
        return {**self.rows.state_dict(), PENDING: [dict(row) for row in self.pending]}

    def load_state_dict(self, state: dict) -> None:
        state = dict(state)
        self.pending = [dict(row) for row in state.pop(PENDING, [])]
        self.rows.load_state_dict(state)


def packed_rows_per_batch(max_tokens: int, block_size: int, multiple: int | None, key: str) -> int:
    """Packed blocks (all of `block_size` tokens, padded to `multiple` by the collator) in each micro-batch of a
    budget: a fixed number, so a streamed run's tokens per step are exact. `key`: the block size's config key."""
    padded = padded_length(block_size, multiple)
    if padded > max_tokens:
        raise ConfigError(
            f"data.max_tokens_per_batch={max_tokens} holds no packed block of {key}={block_size} tokens"
            f"{f' (padded to {padded})' if padded != block_size else ''}: raise it to at least {padded} or lower {key}"
        )
    return max_tokens // padded


def streamed_budget(loader) -> StreamBudgetBatches | None:
    """The budget batches a streamed training loader reads, or None (rows batched by train.per_device_batch_size)."""
    dataset = getattr(loader, "dataset", None)
    return dataset if isinstance(dataset, StreamBudgetBatches) else None
