"""Weighted mixtures of training sources (data.mixture): rows drawn from source i with probability weight_i (seeded),
each tagged with its source so the loop counts the tokens every source gives. `mix_sources` takes map-style datasets
and streams alike, so a streamed mixture is drawn by the same call; the plan and counts a run reports."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from datasets import Dataset, DatasetInfo, IterableDataset, interleave_datasets

from ptrain.errors import DataError

SOURCE_COLUMN = "source"  # a mixture row's source, by its position in data.mixture; never given to the model


def normalised(weights: Sequence[float]) -> list[float]:
    """Weights as probabilities (summing to 1)."""
    total = float(sum(weights))
    return [weight / total for weight in weights]


def mix_sources(
    sources: dict[str, Dataset | IterableDataset],  # or objects with the stream methods (streaming.EpochStream)
    weights: Sequence[float],
    seed: int | Sequence[int],
    stopping_strategy: str = "all_exhausted",
) -> Dataset | StreamMixture:
    """The sources interleaved: each next row from source i with probability weight_i (normalised), the draws seeded
    by `seed`. Each row gets SOURCE_COLUMN, its source's position in `sources`. The mixture ends when every source
    has given each of its rows (all_exhausted: a source drawn beyond its size starts again) or when one runs out
    (first_exhausted).

    Map-style sources (datasets.interleave_datasets) give a map-style dataset whose rows, and length, are fixed by
    the seed; each source is first put in a seeded order, so the rows an epoch repeats or leaves out are a seeded
    choice, not a file's first or last ones (`seed`: an int). Streams give a StreamMixture, drawn as it is read and
    resumable (`seed` may be several ints: the seed and the process's rank)."""
    if not any(isinstance(ds, Dataset) for ds in sources.values()):  # streams (anything with their methods)
        return StreamMixture(list(sources.values()), normalised(weights), seed, stopping_strategy)
    tagged = [
        ds.add_column(SOURCE_COLUMN, np.full(len(ds), position, dtype=np.int32)).shuffle(
            generator=np.random.default_rng([seed, position])
        )
        for position, ds in enumerate(sources.values())
    ]
    return interleave_datasets(
        tagged, probabilities=normalised(weights), seed=seed, stopping_strategy=stopping_strategy
    )


class StreamMixture:
    """Streams (datasets.IterableDataset) mixed row by row: the next row from source i with probability p_i, drawn
    by a generator seeded with (seed, epoch). Its state between rows (the generator's, each source's own
    state_dict, which sources ran out) is exact, so a resumed mixture continues with the same draws and rows; it
    has the stream methods the streaming loader uses (set_epoch, state_dict, load_state_dict, iteration).
    datasets.interleave_datasets is not used for streams: it prefetches each source in a thread while reading the
    sources' states, and in datasets 5.2.0 a resumed interleaved stream continued at another row in 6 to 7 of 20 runs
    of a small test (tests/test_mixtures.py checks this class the same way)."""

    def __init__(
        self,
        streams: list[IterableDataset],
        probabilities: list[float],
        seed: int | Sequence[int],
        stopping_strategy: str,
    ):
        self.streams, self.probabilities, self.seed = streams, probabilities, seed
        self.stop = all if stopping_strategy == "all_exhausted" else any
        self.starts = [stream.state_dict() for stream in streams]  # each source's beginning, to start it again
        self.epoch, self.resume_from, self.live = 0, None, None
        sources = ", ".join(stream.info.description or "a stream" for stream in streams)
        self.info = DatasetInfo(description=f"a mixture of {sources}")  # what errors name

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        for stream in self.streams:
            stream.set_epoch(epoch)

    def state_dict(self) -> dict:
        """Where the mixture stands after the last row it gave (its start before the first)."""
        if self.live is None:
            return {"epoch": self.epoch, "rng": None, "exhausted": [False] * len(self.streams), "sources": None}
        rng, exhausted, loaded = self.live
        # a source not read since it was loaded still reports where its previous reading stopped
        sources = [stream.state_dict() if start is None else start for stream, start in zip(self.streams, loaded)]
        return {"epoch": self.epoch, "rng": rng.bit_generator.state, "exhausted": list(exhausted), "sources": sources}

    def load_state_dict(self, state: dict) -> None:
        self.resume_from = state

    def __iter__(self) -> Iterator[dict]:
        state, self.resume_from = self.resume_from, None
        if state is None or state["epoch"] != self.epoch:
            state = {"rng": None, "exhausted": [False] * len(self.streams), "sources": None}
        worker = torch.utils.data.get_worker_info()  # with data.num_workers: each worker draws its own sequence
        rng = np.random.default_rng([*np.atleast_1d(self.seed).tolist(), self.epoch, *([worker.id] if worker else [])])
        if state["rng"] is not None:
            rng.bit_generator.state = state["rng"]
        loaded = [state["sources"][i] if state["sources"] else self._start(i) for i in range(len(self.streams))]
        for stream, start in zip(self.streams, loaded):
            stream.load_state_dict(start)
        exhausted = list(state["exhausted"])
        iterators = [iter(stream) for stream in self.streams]
        self.live = (rng, exhausted, loaded)
        while not self.stop(exhausted):
            position = int(rng.choice(len(self.streams), p=self.probabilities))
            row = next(iterators[position], None)
            if row is None:  # this source has given each of its rows
                exhausted[position] = True
                if self.stop(exhausted):
                    return
                self.streams[position].load_state_dict(self._start(position))
                iterators[position] = iter(self.streams[position])
                row = next(iterators[position], None)
                if row is None:
                    source = self.streams[position].info.description or f"source {position}"
                    raise DataError(f"data.mixture: {source} has no rows (in this process's part of the stream)")
            loaded[position] = None  # read since loaded: its own state_dict is where it stands
            yield {**row, SOURCE_COLUMN: position}

    def _start(self, position: int) -> dict:
        return {**self.starts[position], "epoch": self.epoch}


@dataclass(frozen=True)
class MixturePlan:
    """What a map-style mixture's epoch holds, for the start line and metrics.json."""

    names: list[str]
    weights: list[float]  # normalised
    source_rows: list[int] | None  # rows each source holds (tokenized: packed blocks where the task packs)
    epoch_rows: list[int] | None  # rows drawn from each source for one epoch of the mixture; None: streams
    stopping_strategy: str
    seed: int

    @classmethod
    def of(
        cls, mixed: Dataset, names: list[str], weights: Sequence[float], source_rows: list[int], **how
    ) -> MixturePlan:
        drawn = np.bincount(mixed.with_format("numpy")[SOURCE_COLUMN], minlength=len(names)).tolist()
        return cls(names=names, weights=normalised(weights), source_rows=source_rows, epoch_rows=drawn, **how)

    @classmethod
    def streamed(cls, names: list[str], weights: Sequence[float], **how) -> MixturePlan:
        """A mixture of streams: drawn as read, so what an epoch holds is known only once it has passed."""
        return cls(names=names, weights=normalised(weights), source_rows=None, epoch_rows=None, **how)

    def describe(self) -> str:
        """The start line: each source's weight, its rows in an epoch and how often each of its rows comes."""
        if self.epoch_rows is None:
            weights = ", ".join(f"{name} {weight:.0%}" for name, weight in zip(self.names, self.weights))
            return (
                f"mixture of {len(self.names)} streams drawn as read ({self.stopping_strategy}, seed {self.seed}): "
                f"{weights}"
            )
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
        total_tokens = max(sum(tokens), 1)
        tokens = list(tokens) or [0] * len(self.names)
        sources = {
            name: {"weight": weight, "trained_tokens": int(count), "trained_token_share": count / total_tokens}
            for name, weight, count in zip(self.names, self.weights, tokens)
        }
        if self.epoch_rows is not None:
            total_rows = max(sum(self.epoch_rows), 1)
            for source, rows, drawn in zip(sources.values(), self.source_rows, self.epoch_rows):
                source.update(rows=rows, epoch_rows=drawn, epoch_row_share=drawn / total_rows)
        return {"stopping_strategy": self.stopping_strategy, "seed": self.seed, "sources": sources}


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
