"""Dotted config keys: reading a value at a key, flattening a tree, data file paths, and the keys that say where a
run lives or what it reports rather than how it trains (one rule for resume and for the runs table)."""

from __future__ import annotations

from pathlib import Path

from ptrain.config.schema import Config

# Where files live, how they are read, and what HPARAMS shows may change between an interrupted run and its
# resume, and between the runs of one table; none of them changes what is trained.
NOT_HYPERPARAMETERS = frozenset(
    {
        "train.resume",
        "train.on_checkpoint_error",
        "output_dir",
        "run_dir",
        "hparams",
        "data.data_dir",
        "data.cache_dir",
        "data.num_workers",
        "train.collective_timeout_seconds",  # how long a launched run waits for a silent process
        "train.report_to",  # where the run is reported, not how it trains: a resume may add or drop a tracker
    }
)
SEED_KEY = "train.seed"


def data_path(cfg: Config, name: str | None) -> Path | None:
    """A data file's path: absolute as given, otherwise under data.data_dir (or the working directory)."""
    if name is None:
        return None
    path = Path(name).expanduser()
    if not path.is_absolute() and cfg.data.data_dir is not None:
        path = Path(cfg.data.data_dir).expanduser() / path
    return path


MISSING = object()


def config_value(cfg: Config, key: str):
    """The value at a dotted key of the resolved config, or MISSING."""
    return raw_value(cfg.model_dump(mode="json"), key)


def raw_value(tree: dict, key: str):
    """The value at a dotted key of a nested mapping, or MISSING."""
    node = tree
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return MISSING
        node = node[part]
    return node


def flatten_config(tree: dict, prefix: str = "") -> dict:
    """Dotted key -> value; a scratch_config is one value (its keys are AutoConfig's, not ptrain's)."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict) and key != "scratch_config":
            flat.update(flatten_config(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
