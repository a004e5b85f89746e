"""DataLoaders: seeded shuffling, optional length-grouped batches for training, length-sorted evaluation."""

from __future__ import annotations

import torch
from datasets import Dataset
from torch.utils.data import DataLoader, RandomSampler
from transformers.trainer_pt_utils import LengthGroupedSampler

from ptrain.config import Config

MODEL_COLUMNS = ["input_ids", "attention_mask", "token_type_ids", "labels", "idx"]


def train_loader(cfg: Config, ds: Dataset, collator) -> tuple[DataLoader, torch.Generator]:
    """Shuffled by its own generator (returned, for seeding per epoch), never by the global RNG, so the
    batch order does not depend on dropout draws; with group_by_length, batches of similar length."""
    generator = torch.Generator().manual_seed(cfg.train.seed)
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


def eval_loader(cfg: Config, ds: Dataset, collator) -> DataLoader:
    """Sorted by length so batches carry little padding; the order does not change the metrics."""
    lengths = [len(ids) for ids in ds["input_ids"]]
    order = sorted(range(len(ds)), key=lengths.__getitem__)
    return DataLoader(
        _model_columns(ds).select(order),
        batch_size=cfg.train.eval_batch_size,
        collate_fn=collator,
        num_workers=cfg.data.num_workers,
        pin_memory=torch.cuda.is_available(),
        generator=torch.Generator().manual_seed(0),  # leaves the global RNG (dropout) untouched
    )


def _model_columns(ds: Dataset) -> Dataset:
    return ds.select_columns([c for c in MODEL_COLUMNS if c in ds.column_names])
