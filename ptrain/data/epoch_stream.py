"""A process's part of a training stream, encoded as it is read, and reopened at each epoch with that epoch's shard
order (EpochStream), as the shuffle buffer and a mixture read it (ptrain/data/streaming.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from datasets import IterableDataset
from datasets.distributed import split_dataset_by_node

from ptrain.data.batching import MODEL_COLUMNS
from ptrain.data.stream_rows import BAD_ROW_COLUMN


def encoded_stream(stream: IterableDataset, encode: Callable, sample: dict, rank: int, world_size: int):
    """This process's part of `stream`, tokenized by the task's batched encoder as it is read; only the model's
    columns are kept. `sample`: a batch of the stream's first rows (column -> values), which tells the columns before
    and after encoding without reading the stream."""
    outputs = encode(sample, list(range(len(next(iter(sample.values()))))))
    part = split_dataset_by_node(stream, rank=rank, world_size=world_size)
    encoded = part.map(encode, batched=True, with_indices=True, remove_columns=list(sample))
    return encoded.select_columns([column for column in (*MODEL_COLUMNS, BAD_ROW_COLUMN) if column in outputs])


class EpochStream:
    """This process's encoded rows of a source opened anew at each epoch (`open_source(epoch)`: the source with its
    shards in that epoch's order), with the stream methods the shuffle buffer and a mixture use: set_epoch,
    state_dict / load_state_dict (datasets' own, which carry the epoch: loading one of another epoch opens that
    epoch's order first), iteration and info.

    In a DataLoader worker (data.num_workers) it reads the worker's own shards (every num_workers-th: datasets'
    `shard`) through datasets' `iter`, not its worker split: datasets 5.2 loads a worker's saved position into the
    whole stream before taking the worker's shards, which fails (IndexError) when a checkpoint fell inside a shard."""

    def __init__(self, open_source: Callable, encode: Callable, sample: dict, rank: int, world_size: int) -> None:
        self.open_source, self.encoding = open_source, (encode, sample, rank, world_size)
        self.epoch, self.source = 0, open_source(0)
        self.current, self.worker_part = encoded_stream(self.source, *self.encoding), False
        self.info = self.source.info

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch, self.source = epoch, self.open_source(epoch)
            self.current, self.worker_part = encoded_stream(self.source, *self.encoding), False
        self._take_worker_part()
        self.current.set_epoch(epoch)

    def state_dict(self) -> dict:
        self._take_worker_part()
        return self.current.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.set_epoch(state["epoch"])
        self.current.load_state_dict(state)

    def __iter__(self) -> Iterator[dict]:
        self._take_worker_part()
        if not self.worker_part:
            yield from self.current
            return
        for batch in self.current.iter(batch_size=1):  # one row a batch: {column: [value]}
            yield {column: values[0] for column, values in batch.items()}

    def _take_worker_part(self) -> None:
        worker = torch.utils.data.get_worker_info()
        if worker is not None and not self.worker_part:
            self.current = self.current.shard(worker.num_workers, worker.id, contiguous=False)
            self.current.set_epoch(self.epoch)
            self.worker_part = True
