"""data.streaming: the training rows of each process read, tokenized and shuffled as training goes, resumable
exactly.

- Sharing out: datasets' split_dataset_by_node gives each process whole shards when their count divides by the
  process count, else every Nth row of every shard (each process then reads every file and tokenizes its rows only).
  Each row goes to one process: none is repeated or dropped within an epoch. Processes may hold different numbers
  of rows; each starts its next epoch when its part ends (a stream has no common epoch end to wait for), so
  training never waits on a process that ran out.
- Order: each epoch opens the source again with its files (or a saved folder's shards) in an order drawn from
  (train.seed, epoch) (`EpochStream`). Not datasets' shuffle: its buffer, even of one row, re-orders each Arrow block
  it reads, and reading 64 JSONL shards of 80 MB through it peaked at 716 MiB RSS against 364 MiB without. Then each
  process's rows pass through a seeded buffer of data.shuffle_buffer_size tokenized rows (`ShuffleBuffer`, not
  datasets' shuffle, whose buffer is lost on resume); the buffer drains at the end of each epoch, so an epoch holds
  each row once. Length grouping needs every length up front: it does not apply to a stream.
- Resume: the buffer, its generator and the position of the stream (datasets' IterableDataset.state_dict: the shard
  and the row in it) are what StatefulDataLoader (torchdata) saves; each process writes its own into the checkpoint
  (stream_state_<rank>.json). Resuming opens the current shard at its start and reads past the rows already taken
  (parsed, not tokenized); earlier shards are not opened.
"""

from __future__ import annotations

import copy
import json
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from accelerate.utils import send_to_device
from datasets import IterableDataset
from torchdata.stateful_dataloader import StatefulDataLoader

from ptrain.config import Config
from ptrain.data.collate import pad_multiple
from ptrain.data.epoch_stream import EpochStream
from ptrain.data.mixtures import StreamMixture, mix_sources
from ptrain.data.stream_bad_rows import PASS_KEY, FirstPass, PassCollator, SkippingEncoder, StreamLedger
from ptrain.data.stream_budget import PENDING, StreamBudgetBatches
from ptrain.data.stream_source import READ_ERRORS, read_failure
from ptrain.errors import CheckpointError, DataError

STATE_FILE = "stream_state_{rank}.json"  # in each checkpoint folder, one per process
SNAPSHOT_STEPS = 100  # with data.num_workers and no train.checkpoint_every_steps: optimizer steps between snapshots


class ShuffleBuffer(torch.utils.data.IterableDataset):
    """A process's rows through a seeded shuffle buffer, epoch after epoch without end. Its state (epoch, the
    stream's position, the buffer's rows and generator) is whole between rows: state_dict / load_state_dict, as
    torchdata's StatefulDataLoader expects of a dataset (with data.num_workers, one per worker)."""

    def __init__(
        self, rows: EpochStream | StreamMixture, size: int, seed: int, rank: int, first_pass: FirstPass | None = None
    ) -> None:
        self.rows, self.size, self.seed, self.rank = rows, size, seed, rank
        self.first_pass = first_pass  # data.bad_rows=skip: drops the marked rows, counts and hands them on
        self.epoch, self.buffer, self.stream_done, self.rows_taken = 0, [], False, 0
        self.rng: np.random.Generator | None = None  # made per worker at the first iteration
        self.position: dict | None = None  # the stream's state_dict where reading resumes; None: the epoch's start
        self.reading = False  # inside the stream's iteration: its live state_dict is the position

    def __iter__(self) -> Iterator[dict]:
        while True:
            fresh, count = self.position is None and not self.stream_done, 0
            for row in self.epoch_rows():
                count += 1
                yield row if self.first_pass is None else self.first_pass.attach(row)
            if fresh and not count:  # a whole epoch without a row: the next would be the same
                if torch.utils.data.get_worker_info() is not None:
                    return  # a worker without shards (more workers than shards): the other workers go on
                raise DataError(
                    f"{self.rows.info.description or 'the training stream'}: process {self.rank}'s part of the "
                    "stream has no rows; give it at least as many rows (or shards) as processes"
                )
            self.epoch, self.position, self.stream_done = self.epoch + 1, None, False

    def epoch_rows(self) -> Iterator[dict]:
        """The rest of the current epoch's rows: its stream read from where the state stands, then the buffer."""
        if self.rng is None:  # per process and worker
            worker = torch.utils.data.get_worker_info()
            self.rng = np.random.default_rng([self.seed, self.rank, worker.id if worker else 0])
        self.rows.set_epoch(self.epoch)
        if not self.stream_done:
            if self.position is not None:
                self.rows.load_state_dict(self.position)
            self.reading = True  # the stream's own state_dict is the position (taken only when asked)
            for row in self._read():
                if self.first_pass is not None and (row := self.first_pass.take(row, self.epoch)) is None:
                    continue
                self.rows_taken += 1
                if self.size <= 1:
                    yield row
                elif len(self.buffer) < self.size:
                    self.buffer.append(row)
                else:
                    position = int(self.rng.integers(self.size))
                    out, self.buffer[position] = self.buffer[position], row
                    yield out
            self.position, self.reading, self.stream_done = self.rows.state_dict(), False, True
            if self.first_pass is not None:
                self.first_pass.end_of_pass(self.epoch)
        while self.buffer:  # the epoch's last rows, in random order
            position = int(self.rng.integers(len(self.buffer)))
            self.buffer[position], self.buffer[-1] = self.buffer[-1], self.buffer[position]
            yield self.buffer.pop()

    def _read(self) -> Iterator[dict]:
        """The stream's rows; what stops the reading (a file that does not parse, shards of different columns) in
        one line naming the source and how far this process read."""
        try:
            yield from self.rows
        except READ_ERRORS as err:
            where = f"in epoch {self.epoch} after {self.rows_taken:,} rows of process {self.rank}"
            raise read_failure(self.rows.info.description or "the training stream", where, err) from None

    def state_dict(self) -> dict:
        return {
            "epoch": self.epoch,
            "position": self.rows.state_dict() if self.reading else copy.deepcopy(self.position),
            "stream_done": self.stream_done,
            "buffer": [dict(row) for row in self.buffer],
            "rng": None if self.rng is None else self.rng.bit_generator.state,
            "rows_taken": self.rows_taken,
            **({"first_pass": self.first_pass.state()} if self.first_pass is not None else {}),
        }

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.position, self.stream_done = state["epoch"], state["position"], state["stream_done"]
        self.reading = False
        self.buffer, self.rows_taken = [dict(row) for row in state["buffer"]], state["rows_taken"]
        if self.first_pass is not None and "first_pass" in state:
            self.first_pass.load(state["first_pass"])
        if state["rng"] is not None:
            self.rng = np.random.default_rng()
            self.rng.bit_generator.state = state["rng"]


class TrainStream:
    """The training batches of this process from its ShuffleBuffer through a StatefulDataLoader (the task's
    collator pads each batch: dynamic padding), on the device; saved into and restored from a checkpoint folder."""

    def __init__(
        self,
        rows: ShuffleBuffer,
        loader: StatefulDataLoader,
        device: torch.device,
        description: str,
        ledger: StreamLedger | None = None,
    ):
        self.rows, self.loader, self.device, self.description = rows, loader, device, description
        self.ledger = ledger  # data.bad_rows=skip: the rows skipped in the batches taken (stream_bad_rows.py)

    def batches(self) -> Iterator[dict]:
        """Batches without end, from where the stream stands (a restored state: the next unseen row)."""
        for batch in self.loader:
            if self.ledger is not None:
                self.ledger.add(batch.pop(PASS_KEY, None))
            yield send_to_device(batch, self.device, non_blocking=self.device.type == "cuda")

    def save(self, folder: Path, rank: int) -> None:
        (folder / STATE_FILE.format(rank=rank)).write_text(json.dumps(self.loader.state_dict()))
        if self.ledger is not None:
            self.ledger.save(folder, rank)

    def load(self, folder: Path, rank: int) -> str:
        """The state saved in a checkpoint folder, in force from the next batch; says where the stream stands."""
        path = folder / STATE_FILE.format(rank=rank)
        if not path.is_file():
            raise CheckpointError(
                f"checkpoint {folder} has no {path.name} (a run without data.streaming, or with fewer processes, "
                "wrote it); resume it with the config and launch that wrote it"
            )
        text = path.read_text()
        if f'"{PENDING}"' in text and not isinstance(self.loader.dataset, StreamBudgetBatches):
            raise CheckpointError(  # its row waiting for the next budget batch would be lost
                f"checkpoint {folder} was written with data.max_tokens_per_batch, and its stream holds a row read for "
                "the next budget batch; resume it with data.max_tokens_per_batch set"
            )
        state = json.loads(text)
        self.loader.load_state_dict(state)
        skipped = self.ledger.load(folder, rank) if self.ledger is not None else ""
        rows = state.get("dataset_state") or {}  # with data.num_workers: one state per worker
        if not rows:
            return f"the training stream continues where its {self.loader.num_workers} workers stood{skipped}"
        pending = f" and {len(rows[PENDING])} waiting for its budget batch" if rows.get(PENDING) else ""
        return (
            f"the training stream continues in its epoch {rows['epoch']} after {rows['rows_taken']:,} rows read "
            f"({len(rows['buffer']):,} of them in the shuffle buffer{pending}, restored), rank {rank}{skipped}"
        )

    def describe(self) -> str:
        return self.description


def train_stream(
    cfg: Config,
    open_source: Callable | dict[str, Callable],
    encode: Callable | dict[str, Callable],
    sample: dict,
    collator,
    device: torch.device,
    rank: int,
    world: int,
) -> TrainStream:
    """This process's stream of training batches: the source (`open_source(epoch)`: opened with that epoch's shard
    order) shared out, encoded, shuffled by the buffer, batched (`sample`: a batch of its first rows, column ->
    values). A data.mixture gives an opener, an encoder and a sample per source (dicts by name): each source is
    shared out and encoded, then they are mixed (mixtures.py)."""
    data, train = cfg.data, cfg.train
    skip = data.bad_rows == "skip"  # marked rows pass the encoder by; the shuffle buffer drops and counts them
    sources = _epoch_streams(open_source, encode, sample, skip, rank, world)
    if isinstance(open_source, dict):
        if data.num_workers:
            _check_worker_shards(sources, rank, world, data.num_workers)
        weights = [source.weight for source in data.mixture.values()]
        # each process draws its own sequence of sources: (seed, rank)
        encoded = mix_sources(sources, weights, [data.sample_seed, rank], data.mixture_stopping_strategy)
    else:
        encoded = sources[""]
    described = {name: s.info.description or "the training stream" for name, s in sources.items()}
    names = [f"{name}: {description}" if name else description for name, description in described.items()]
    first_pass = FirstPass(names, data.max_bad_row_fraction, rank) if skip else None
    rows = ShuffleBuffer(encoded, data.shuffle_buffer_size, train.seed, rank, first_pass)
    batches, batch_size = rows, train.per_device_batch_size
    if data.max_tokens_per_batch is not None:  # lists of rows cut by the budget, each collated as one batch
        multiple = pad_multiple(train.mixed_precision, device)
        batches, batch_size = StreamBudgetBatches(rows, data.max_tokens_per_batch, multiple), None
    # workers copy their state (the buffer) at every Nth batch, not at each: a checkpoint between snapshots
    # replays the batches since the last one (torchdata fast-forwards)
    every = (train.checkpoint_every_steps or SNAPSHOT_STEPS) * train.gradient_accumulation_steps
    with warnings.catch_warnings():  # torchdata 0.11 calls torch.set_vital, deprecated since: nothing to act on
        warnings.filterwarnings("ignore", message="'set_vital' is deprecated")
        loader = StatefulDataLoader(
            batches,
            batch_size=batch_size,
            collate_fn=PassCollator(collator) if skip else collator,
            num_workers=data.num_workers,
            pin_memory=torch.cuda.is_available(),
            snapshot_every_n_steps=every,
            generator=torch.Generator().manual_seed(train.seed),  # each iter() draws a seed: not from the global RNG
        )
    read = "; ".join(f"{name}{': ' if name else ''}{_streamed_from(s.source, world)}" for name, s in sources.items())
    description = f"train streamed from {read}; shuffle buffer {data.shuffle_buffer_size:,} rows"
    description += "; its bad rows skipped as read, counted at the end (data.bad_rows=skip)" if skip else ""
    return TrainStream(rows, loader, device, description, StreamLedger(names) if skip else None)


def _epoch_streams(open_source, encode, sample, skip: bool, rank: int, world: int) -> dict[str, EpochStream]:
    """An EpochStream per source (one named "" without a mixture); with data.bad_rows=skip its encoder passes the
    marked rows by."""
    several = isinstance(open_source, dict)
    openers = open_source if several else {"": open_source}
    encoders, samples = (encode, sample) if several else ({"": encode}, {"": sample})
    return {
        name: EpochStream(
            opener,
            SkippingEncoder(encoders[name], samples[name]) if skip else encoders[name],
            samples[name],
            rank,
            world,
        )
        for name, opener in openers.items()
    }


def _streamed_from(stream: IterableDataset, world: int) -> str:
    split = "whole shards" if stream.n_shards % world == 0 else f"one row in {world} of each shard"
    return (
        f"{stream.info.description or 'the stream'} ({stream.n_shards} shard(s), this process reads "
        f"{split if world > 1 else 'all'})"
    )


def _check_worker_shards(sources: dict[str, EpochStream], rank: int, world: int, workers: int) -> None:
    """With data.num_workers each worker mixes its own shards (every num_workers-th) of every source: a source with
    fewer shards than workers would leave a worker without it (refused in one line)."""
    for name, stream in sources.items():
        if stream.source.n_shards < workers:
            raise DataError(
                f"data.mixture.{name}: {stream.info.description or 'the source'} has {stream.source.n_shards} "
                f"shard(s) for data.num_workers={workers} workers, and each worker reads its own shards of every "
                f"source; give it at least {workers} shards (split its files), or set data.num_workers=0"
            )
