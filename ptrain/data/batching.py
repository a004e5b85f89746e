"""DataLoaders: seeded shuffling, optional length-grouped or token-budget batches for training, length-sorted
evaluation."""

from __future__ import annotations

import torch
from datasets import Dataset
from torch.utils.data import DataLoader, RandomSampler
from transformers import DataCollatorForSeq2Seq, DataCollatorForTokenClassification, DataCollatorWithPadding
from transformers.trainer_pt_utils import LengthGroupedSampler

from ptrain.config import Config
from ptrain.data.collate import pad_multiple
from ptrain.data.mixtures import SOURCE_COLUMN
from ptrain.data.splits import EVAL_SET_PREFIX
from ptrain.data.token_budget import TokenBudgetBatches, row_lengths

# What a loader hands the collator; offset_mapping: question answering's evaluation windows (characters per token);
# SOURCE_COLUMN: a mixture row's source (data.mixture), counted by the loop and never given to the model
MODEL_COLUMNS = [
    "input_ids",
    "attention_mask",
    "token_type_ids",
    "position_ids",
    "labels",
    "idx",
    "offset_mapping",
    SOURCE_COLUMN,
]
PADDING_COLLATORS = (DataCollatorWithPadding, DataCollatorForTokenClassification, DataCollatorForSeq2Seq)


def train_loader(
    cfg: Config, ds: Dataset, collator, device: torch.device | None = None
) -> tuple[DataLoader, torch.Generator]:
    """Shuffled by its own generator (returned, for seeding per epoch), never by the global RNG, so the
    batch order does not depend on dropout draws; with group_by_length, batches of similar length; with
    data.max_tokens_per_batch, batches by a token budget (padded as the collator pads on `device`)."""
    generator = torch.Generator().manual_seed(cfg.train.seed)
    if cfg.data.max_tokens_per_batch is not None:
        return budget_loader(cfg, ds, collator, generator, device or torch.device("cpu")), generator
    if cfg.data.group_by_length:
        lengths = [len(ids) for ids in ds["input_ids"]]
        sampler = LengthGroupedSampler(cfg.train.per_device_batch_size, lengths=lengths, generator=generator)
    else:
        sampler = RandomSampler(ds, generator=generator)
    loader = DataLoader(
        _model_columns(ds),
        batch_size=cfg.train.per_device_batch_size,
        sampler=sampler,
        collate_fn=collator,
        num_workers=cfg.data.num_workers,
        pin_memory=torch.cuda.is_available(),  # page-locked batches: non-blocking copies to the GPU
        generator=generator,  # worker seeds too
    )
    return loader, generator


def budget_loader(cfg: Config, ds: Dataset, collator, generator: torch.Generator, device: torch.device) -> DataLoader:
    """Batches of at most data.max_tokens_per_batch padded tokens (token_budget.py), ordered by `generator`."""
    batches = TokenBudgetBatches(
        row_lengths(ds),
        cfg.data.max_tokens_per_batch,
        seed=cfg.train.seed,
        shuffle=generator,
        group_by_length=cfg.data.group_by_length,
        multiple=pad_multiple(cfg.train.mixed_precision, device),
    )
    return DataLoader(
        _model_columns(ds),
        batch_sampler=batches,
        collate_fn=collator,
        num_workers=cfg.data.num_workers,
        pin_memory=torch.cuda.is_available(),
        generator=generator,
    )


def eval_loader(cfg: Config, ds: Dataset, collator) -> DataLoader:
    """Sorted by length so batches carry little padding; the order does not change the metrics."""
    lengths = [len(ids) for ids in ds["input_ids"]]
    order = sorted(range(len(ds)), key=lengths.__getitem__)
    rows, collate = _model_columns(ds).select(order), collator
    if cfg.data.num_workers == 0 and same_every_call(collator):  # in-process: kept for the next evaluation
        rows, collate = _Positions(len(rows)), CollatedOnce(rows, collator)
    return DataLoader(
        rows,
        batch_size=cfg.train.eval_batch_size,
        collate_fn=collate,
        num_workers=cfg.data.num_workers,
        pin_memory=torch.cuda.is_available(),
        generator=torch.Generator().manual_seed(0),  # leaves the global RNG (dropout) untouched
    )


def evaluation_loaders(cfg: Config, tokenized, collator) -> tuple[DataLoader, dict[str, DataLoader]]:
    """The validation loader and one per data.eval_files set, by name (their splits are eval_<name>)."""
    sets = {name: eval_loader(cfg, tokenized[EVAL_SET_PREFIX + name], collator) for name in cfg.data.eval_files}
    return eval_loader(cfg, tokenized["validation"], collator), sets


def same_every_call(collator) -> bool:
    """Whether a collator pads the same rows to the same batch every time: transformers' padding collators, or
    one that says so with a true `same_every_call` attribute (the masked-LM collator while its masks are fixed).
    Any other, a task's own included, is collated afresh at every evaluation."""
    declared = getattr(collator, "same_every_call", None)
    return bool(declared) if declared is not None else isinstance(collator, PADDING_COLLATORS)


class _Positions(torch.utils.data.Dataset):
    """Row positions 0..n-1: the DataLoader batches positions, CollatedOnce reads the rows."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, position: int) -> int:
        return position


class CollatedOnce:
    """An evaluation loader's collate_fn that reads and pads each batch once and hands out copies after: every
    evaluation of a run sees the same batches, so later ones skip the Arrow reads and the padding (3-5% of an
    evaluation pass on MiniLM). Batches are kept until they hold MAX_BYTES in all. Used only for collators that
    are the same every call (same_every_call)."""

    MAX_BYTES = 512 * 2**20

    def __init__(self, rows: Dataset, collator) -> None:
        self.rows, self.collator, self.kept, self.kept_bytes = rows, collator, {}, 0

    def __call__(self, positions: list[int]) -> dict:
        if not same_every_call(self.collator):  # e.g. the masked-LM collator outside its evaluation
            return self.collator(self.rows.__getitems__(positions))
        key = tuple(positions)
        batch = self.kept.get(key)
        if batch is None:
            batch = dict(self.collator(self.rows.__getitems__(positions)))  # what the DataLoader itself reads
            size = sum(value.nbytes for value in batch.values() if torch.is_tensor(value))
            if self.kept_bytes + size <= self.MAX_BYTES:
                self.kept[key], self.kept_bytes = batch, self.kept_bytes + size
        return dict(batch)  # the pass pops labels and idx from its own copy


def _model_columns(ds: Dataset) -> Dataset:
    return ds.select_columns([c for c in MODEL_COLUMNS if c in ds.column_names])
