"""Tokenizing the splits with a task's encoder, cached on disk under a key derived from everything that can
change the tokens: the data (its fingerprint), the tokenizer, the label names, the data section and the task's
own section. Over-inclusion only costs a re-tokenization; a forgotten part could serve stale tokens."""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import pyarrow as pa
from datasets import DatasetDict

from ptrain.config import Config
from ptrain.data.bad_rows import BadRows
from ptrain.data.mixtures import MixturePlan

DEFAULT_CACHE_DIR = Path("~/.cache/ptrain/tokenized")
CACHE_FORMAT = "v3"  # bump when an encoder's code changes what it writes for the same inputs
# Data keys that cannot change a tokenized row: where files are and how they are loaded or batched, and the row
# selection (the dataset fingerprint already covers which rows and files were read).
NOT_TOKENIZATION = frozenset(
    {
        "data_dir",
        "train_file",
        "mixture",
        "mixture_stopping_strategy",
        "validation_file",
        "test_file",
        "hub_dataset",
        "hub_config",
        "validation_fraction",
        "max_train_rows",
        "max_eval_rows",
        "split_column",
        "split_values",
        "sample_train_rows",
        "sample_eval_rows",
        "sample_seed",
        "num_folds",
        "fold",
        "group_column",
        "group_by_length",
        "max_tokens_per_batch",
        "num_workers",
        "bad_rows",
        "max_bad_row_fraction",
        "cache_dir",
        "streaming",  # the evaluation splits tokenize as they do without it (the stream is never cached)
        "shuffle_buffer_size",
        "stream_shards",
    }
)


class Encodes(Protocol):
    """What tokenizing needs of a task (ptrain.tasks.Task has it)."""

    name: str

    def encoder(self, cfg, tokenizer, label_names: list[str], ds, split: str) -> Callable: ...


@dataclass
class Splits:
    raw: DatasetDict  # untokenized rows, for the text of the highest-loss examples
    tokenized: DatasetDict  # input_ids, attention_mask, [token_type_ids], labels, idx
    label_names: list[str]
    cache_hits: dict[str, bool]  # split -> tokenization read back from disk
    bad_rows: BadRows = field(default_factory=BadRows)  # the rows data.bad_rows=skip left out, per source
    counts: dict[str, dict] = field(default_factory=dict)  # split -> the task's counts (Task.finish_split)
    mixture: MixturePlan | None = None  # data.mixture: what an epoch of the mixed training rows holds


def tokenize_splits(cfg: Config, raw: DatasetDict, tokenizer, task: Encodes, label_names: list[str]) -> Splits:
    """Batched tokenization of each split, cached on disk by content: a second run reads it back."""
    cache_dir = Path(cfg.data.cache_dir or DEFAULT_CACHE_DIR).expanduser()
    cache_dir.mkdir(parents=True, exist_ok=True)
    tokenized, hits = {}, {}
    settings = _settings(cfg, task, tokenizer, label_names)
    for split, ds in raw.items():
        encode = task.encoder(cfg, tokenizer, label_names, ds, split)
        key = hashlib.sha256(f"{ds._fingerprint}\x1f{settings}".encode()).hexdigest()[:24]
        cache_file = cache_dir / f"{key}.arrow"
        tokenized[split], hits[split] = _map_cached(ds, encode, cache_file, key, split)
    return Splits(raw=raw, tokenized=DatasetDict(tokenized), label_names=label_names, cache_hits=hits)


def _map_cached(ds, encode, cache_file: Path, key: str, split: str):
    """ds.map through the cache file. `datasets` writes it under a temporary name and renames it when complete, so
    a killed write leaves no entry; an entry damaged afterwards (truncated, overwritten) is written again.
    Returns the tokenized split and whether it was read from the cache."""

    def run(reuse: bool):
        return ds.map(
            encode,
            batched=True,
            with_indices=True,
            remove_columns=ds.column_names,
            cache_file_name=str(cache_file),
            load_from_cache_file=reuse,
            new_fingerprint=key,
            desc=f"tokenizing {split}",
        )

    if not cache_file.is_file():
        return run(reuse=False), False
    try:
        return run(reuse=True), True
    except (OSError, ValueError, pa.ArrowException) as err:
        print(
            f"ptrain: warning: tokenization cache {cache_file} is unreadable ({err}); tokenizing again", file=sys.stderr
        )
        cache_file.unlink(missing_ok=True)
        return run(reuse=False), False


def _tokenizer_hash(tokenizer) -> str:
    """Vocabulary, normaliser, post-processor and chat template; not the truncation/padding state, which every call
    resets."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        state = repr(sorted(tokenizer.get_vocab().items()))
    else:
        state = json.loads(backend.to_str())
        state.pop("truncation", None), state.pop("padding", None)
        state = json.dumps(state, sort_keys=True)
    template = getattr(tokenizer, "chat_template", None) or ""  # how conversations render (the chat task)
    return hashlib.sha256(f"{type(tokenizer).__name__}:{state}:{template}".encode()).hexdigest()


def _settings(cfg: Config, task: Encodes, tokenizer, label_names: list[str]) -> str:
    """Everything besides the rows that the encoder's output may depend on, as one string."""
    tree = cfg.model_dump(mode="json")
    data = {key: value for key, value in tree["data"].items() if key not in NOT_TOKENIZATION}
    parts = [task.name, _tokenizer_hash(tokenizer), label_names, data, tree.get(task.name), CACHE_FORMAT]
    return json.dumps(parts, sort_keys=True)
