"""The run's data with data.streaming: the evaluation splits read and tokenized whole (cached, as without
streaming), the training rows a stream of this process's part (ptrain/data/streaming.py), read from its first rows
only before the first step."""

from __future__ import annotations

import math

import torch
from accelerate import Accelerator
from datasets import ClassLabel

from ptrain.config import Config
from ptrain.data import batching
from ptrain.data.mixture_splits import concatenated, source_config
from ptrain.data.mixtures import MixturePlan, SourceCollator
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
    configs, streams, heads = open_streams(cfg, task)
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
        splits.mixture = MixturePlan.streamed(list(streams), weights, **how)
        stream = train_stream(cfg, streams, encode, sample, SourceCollator(collator, len(streams)), *on)
    else:
        stream = train_stream(cfg, streams[None], encode[None], sample[None], collator, *on)
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
    """The training stream and its first rows, by source: one of each per data.mixture source (read with its own
    config), else one under the name None; and the config each is read with."""
    configs = {name: source_config(cfg, name) for name in cfg.data.mixture} or {None: cfg}
    checked = {name: task.columns(config) if task.refuses_empty_texts else [] for name, config in configs.items()}
    streams = {name: open_train_stream(config, checked[name]) for name, config in configs.items()}
    heads = {name: read_head(stream, task.columns(configs[name])) for name, stream in streams.items()}
    return configs, streams, heads


def tokens_per_step(cfg: Config, processes: int) -> int | None:
    """Training tokens in one optimizer step when every row is a packed block of the task's block_size (all real
    tokens); None when rows vary in length."""
    section = getattr(cfg, cfg.task, None)
    if not getattr(section, "packing", False):
        return None
    train = cfg.train
    return section.block_size * train.per_device_batch_size * train.gradient_accumulation_steps * processes


def stream_plan(cfg: Config, processes: int) -> StepPlan:
    """The step plan of a streamed run: its length is unknown, so the run is train.max_steps long (or train.max_tokens
    in steps, rounded up), planned as one "epoch" of an endless stream."""
    train = cfg.train
    steps = train.max_steps or math.ceil(train.max_tokens / tokens_per_step(cfg, processes))
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
