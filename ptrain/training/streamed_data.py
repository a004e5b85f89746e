"""The run's data with data.streaming: the evaluation splits read and tokenized whole (cached, as without
streaming), the training rows a stream of this process's part (ptrain/data/streaming.py), read from its first rows
only before the first step."""

from __future__ import annotations

import math
from functools import partial

import torch
from accelerate import Accelerator
from datasets import ClassLabel

from ptrain.config import Config
from ptrain.data import batching
from ptrain.data.collate import pad_multiple
from ptrain.data.mixture_splits import concatenated, source_config
from ptrain.data.mixtures import MixturePlan, SourceCollator
from ptrain.data.stream_budget import packed_rows_per_batch
from ptrain.data.stream_source import load_eval_splits, open_train_stream, read_head
from ptrain.data.streaming import train_stream
from ptrain.data.tokenize import tokenize_splits
from ptrain.errors import ConfigError, DataError
from ptrain.model.loading import load_tokenizer
from ptrain.runtime.nodes import caches_first
from ptrain.tasks import Task
from ptrain.training.optim import StepPlan, plan_steps
from ptrain.training.run import RunData


def prepare_streamed_data(cfg: Config, task: Task, accelerator: Accelerator) -> RunData:
    """Tokenizer, the evaluation splits and loaders (prepared by Accelerate) and this process's training stream
    (not prepared: datasets shares the stream out, and Accelerate would share it out again)."""
    refuse_whole_split_tasks(task)
    configs, openers, heads = open_streams(cfg, task)
    head = concatenated(list(heads.values()), list(heads)) if cfg.data.mixture else heads[None]
    with caches_first(accelerator):
        raw, bad_rows = load_eval_splits(cfg, task)
        tokenizer = load_tokenizer(cfg, task, head)
        label_names = stream_label_names(cfg, task, head)
        splits = tokenize_splits(cfg, raw, tokenizer, task, label_names)
    splits.bad_rows = bad_rows
    for split in list(splits.tokenized):
        splits.tokenized[split], counts = task.finish_split(cfg, split, splits.tokenized[split], raw[split])
        if counts is not None:
            splits.counts[split] = counts
    tokenizer.model_max_length = cfg.data.max_length
    collator = task.collator(cfg, tokenizer, accelerator.device)
    encode = {name: task.encoder(configs[name], tokenizer, label_names, heads[name], "train") for name in heads}
    sample = {name: rows[:8] for name, rows in heads.items()}  # first rows: the columns before and after encoding
    on = (accelerator.device, accelerator.process_index, accelerator.num_processes)
    if cfg.data.mixture:
        weights = [source.weight for source in cfg.data.mixture.values()]
        how = {"stopping_strategy": cfg.data.mixture_stopping_strategy, "seed": cfg.data.sample_seed}
        splits.mixture = MixturePlan.streamed(list(openers), weights, **how)
        stream = train_stream(cfg, openers, encode, sample, SourceCollator(collator, len(openers)), *on)
    else:
        stream = train_stream(cfg, openers[None], encode[None], sample[None], collator, *on)
    eval_loader, eval_sets = batching.evaluation_loaders(cfg, splits.tokenized, collator)
    eval_loader = accelerator.prepare(eval_loader)
    eval_sets = {name: accelerator.prepare(loader) for name, loader in eval_sets.items()}
    return RunData(
        tokenizer=tokenizer,
        splits=splits,
        train_loader=stream.loader,
        eval_loader=eval_loader,
        shuffle=torch.Generator(),  # unused: the stream shuffles with its own seeded buffer
        eval_sets=eval_sets,
        stream=stream,
    )


def open_streams(cfg: Config, task: Task) -> tuple[dict, dict, dict]:
    """By source (one per data.mixture source, read with its own config, else one under the name None): the config
    it is read with, its opener (epoch -> the stream in that epoch's order) and its first rows."""
    configs = {name: source_config(cfg, name) for name in cfg.data.mixture} or {None: cfg}
    openers = {
        name: partial(open_train_stream, config, columns=task.columns(config) if task.refuses_empty_texts else [])
        for name, config in configs.items()
    }
    heads = {name: read_head(opener(), task.columns(configs[name])) for name, opener in openers.items()}
    return configs, openers, heads


def packed_batch(cfg: Config, device: torch.device) -> int | None:
    """Rows in each micro-batch when every row is a packed block of the task's block_size: train.per_device_batch_size,
    or with data.max_tokens_per_batch the blocks that fit in it (padded as the collator pads on `device`); None when
    rows vary in length."""
    section = getattr(cfg, cfg.task, None)
    if not getattr(section, "packing", False):
        return None
    if cfg.data.max_tokens_per_batch is None:
        return cfg.train.per_device_batch_size
    multiple = pad_multiple(cfg.train.mixed_precision, device)
    return packed_rows_per_batch(cfg.data.max_tokens_per_batch, section.block_size, multiple, f"{cfg.task}.block_size")


def tokens_per_step(cfg: Config, processes: int, device: torch.device) -> int | None:
    """Training tokens in one optimizer step when every row is a packed block of the task's block_size (all real
    tokens); None when rows vary in length."""
    rows = packed_batch(cfg, device)
    if rows is None:
        return None
    return getattr(cfg, cfg.task).block_size * rows * cfg.train.gradient_accumulation_steps * processes


def stream_plan(cfg: Config, processes: int, device: torch.device) -> StepPlan:
    """The step plan of a streamed run: its length is unknown, so the run is train.max_steps long (or train.max_tokens
    in steps, rounded up), planned as one "epoch" of an endless stream."""
    train, per_step = cfg.train, tokens_per_step(cfg, processes, device)  # first: refuses a budget holding no block
    steps = train.max_steps or math.ceil(train.max_tokens / per_step)
    return plan_steps(steps * train.gradient_accumulation_steps, train.model_copy(update={"epochs": 1}))


def refuse_whole_split_tasks(task: Task) -> None:
    """A task whose training split is finished as a whole (chat's policies and packing) cannot stream yet."""
    if type(task).finish_split is not Task.finish_split or task.recipe != "loop":
        raise ConfigError(
            f"data.streaming: task {task.name} prepares its training split as a whole, which a stream never is; "
            "train it without data.streaming"
        )


def stream_label_names(cfg: Config, task: Task, head) -> list[str]:
    """Label names from data.label_names or the stream's ClassLabel: a stream's values cannot all be read first."""
    if not task.uses_label_names or cfg.data.label_names is not None:
        return task.label_names(cfg, head)
    feature = (head.features or {}).get(cfg.data.label_column)
    if not isinstance(feature, ClassLabel):
        raise DataError(
            f"data.streaming: the labels of {head.info.description} cannot be read before training; "
            "list them in data.label_names"
        )
    return list(feature.names)
