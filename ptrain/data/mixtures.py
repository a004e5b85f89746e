"""Weighted mixtures of training sources (data.mixture): rows drawn from source i with probability weight_i (seeded),
each tagged with its source so the loop counts the tokens every source gives. `mix_sources` takes map-style datasets
and streams alike (datasets.interleave_datasets does), so a streamed mixture interleaves with the same call."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from datasets import Dataset, IterableDataset, interleave_datasets

SOURCE_COLUMN = "source"  # a mixture row's source, by its position in data.mixture; never given to the model


def normalised(weights: Sequence[float]) -> list[float]:
    """Weights as probabilities (summing to 1)."""
    total = float(sum(weights))
    return [weight / total for weight in weights]


def mix_sources(
    sources: dict[str, Dataset | IterableDataset],
    weights: Sequence[float],
    seed: int,
    stopping_strategy: str = "all_exhausted",
    shuffle_sources: bool = True,
) -> Dataset | IterableDataset:
    """The sources interleaved: each next row from source i with probability weight_i (normalised), the draws seeded
    by `seed`; rows of a source in its own order. Each row gets SOURCE_COLUMN, its source's position in `sources`.
    Map-style sources give a map-style dataset whose length is fixed by the seed: until every source has given
    each of its rows (all_exhausted; a source drawn beyond its size starts again from its first row) or until one
    runs out (first_exhausted); with `shuffle_sources`, each map-style source is first put in a seeded order.
    Streams give a stream, drawn as it is read (datasets keeps the draws' generator in
    the stream's state_dict, so a resumed stream continues the same draws)."""
    tagged = [_tagged(ds, position) for position, ds in enumerate(sources.values())]
    if shuffle_sources:  # so the rows an epoch repeats or leaves out are a seeded choice, not a file's first or last
        tagged = [
            ds if isinstance(ds, IterableDataset) else ds.shuffle(generator=np.random.default_rng([seed, position]))
            for position, ds in enumerate(tagged)
        ]
    return interleave_datasets(
        tagged, probabilities=normalised(weights), seed=seed, stopping_strategy=stopping_strategy
    )


def _tagged(ds: Dataset | IterableDataset, position: int) -> Dataset | IterableDataset:
    if isinstance(ds, IterableDataset):
        return ds.map(lambda batch: {SOURCE_COLUMN: [position] * len(next(iter(batch.values())))}, batched=True)
    return ds.add_column(SOURCE_COLUMN, np.full(len(ds), position, dtype=np.int32))


@dataclass(frozen=True)
class MixturePlan:
    """What a map-style mixture's epoch holds, for the start line and metrics.json."""

    names: list[str]
    weights: list[float]  # normalised
    source_rows: list[int]  # rows each source holds (tokenized: packed blocks where the task packs)
    epoch_rows: list[int]  # rows drawn from each source for one epoch of the mixture
    stopping_strategy: str
    seed: int

    @classmethod
    def of(
        cls, mixed: Dataset, names: list[str], weights: Sequence[float], source_rows: list[int], **how
    ) -> MixturePlan:
        drawn = np.bincount(np.asarray(mixed[SOURCE_COLUMN]), minlength=len(names)).tolist()
        return cls(names=names, weights=normalised(weights), source_rows=source_rows, epoch_rows=drawn, **how)

    def describe(self) -> str:
        """The start line: each source's weight, its rows in an epoch and how often each of its rows comes."""
        total = sum(self.epoch_rows)
        parts = [
            f"{name} {weight:.0%} ({drawn:,} rows, {drawn / max(total, 1):.1%}; "
            f"{drawn / max(rows, 1):.2f}x its {rows:,})"
            for name, weight, drawn, rows in zip(self.names, self.weights, self.epoch_rows, self.source_rows)
        ]
        return (
            f"mixture of {len(self.names)} sources, {total:,} rows an epoch ({self.stopping_strategy}, seed "
            f"{self.seed}): {', '.join(parts)}"
        )

    def record(self, tokens: Sequence[int]) -> dict:
        """metrics.json's `mixture`: per source its weight, rows and the real tokens it gave to the trained steps."""
        total_rows, total_tokens = max(sum(self.epoch_rows), 1), max(sum(tokens), 1)
        tokens = list(tokens) or [0] * len(self.names)
        return {
            "stopping_strategy": self.stopping_strategy,
            "seed": self.seed,
            "sources": {
                name: {
                    "weight": weight,
                    "rows": rows,
                    "epoch_rows": drawn,
                    "epoch_row_share": drawn / total_rows,
                    "trained_tokens": int(count),
                    "trained_token_share": count / total_tokens,
                }
                for name, weight, rows, drawn, count in zip(
                    self.names, self.weights, self.source_rows, self.epoch_rows, tokens
                )
            },
        }


def source_scalars(names: Sequence[str], interval: Sequence[int], trained: Sequence[int]) -> dict[str, float]:
    """The logged scalars: each source's share of the real tokens trained since the last log, and its tokens so far."""
    total = max(sum(interval), 1)
    shares = {f"source_share/{name}": count / total for name, count in zip(names, interval)}
    return {**shares, **{f"source_tokens/{name}": float(count) for name, count in zip(names, trained)}}


class SourceCollator:
    """A training collator for mixture rows: each row's source is taken out before the task's collator pads the
    rows, and handed on as a one-hot [rows, sources] tensor, so the meter adds up each source's tokens on the
    device (one-hot rows times real tokens) without reading anything back to the host."""

    def __init__(self, collator, sources: int) -> None:
        self.collator, self.sources = collator, sources

    def __call__(self, rows: list[dict]) -> dict:
        positions = torch.tensor([row.pop(SOURCE_COLUMN) for row in rows], dtype=torch.long)
        batch = self.collator(rows)
        batch[SOURCE_COLUMN] = torch.nn.functional.one_hot(positions, self.sources)
        return batch
