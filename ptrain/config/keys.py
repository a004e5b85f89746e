"""Dotted config keys: reading a value at a key, flattening a tree, data file paths, and the keys that say where a
run lives or what it reports rather than how it trains (one rule for resume and for the runs table)."""

from __future__ import annotations

# Where files live, how they are read, and what HPARAMS shows may change between an interrupted run and its
# resume, and between the runs of one table; none of them changes what is trained.
NOT_HYPERPARAMETERS = frozenset(
    {"train.resume", "output_dir", "run_dir", "hparams", "data.data_dir", "data.cache_dir", "data.num_workers"}
)
SEED_KEY = "train.seed"
