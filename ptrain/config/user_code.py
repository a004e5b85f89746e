"""Checks of the user's code a config names (train.loss, model.builder, train.metrics, train.callbacks): each is
imported and its signature held to what ptrain will call it with, so `ptrain check` refuses a wrong one in one
line naming the key, the file and the fix."""

from __future__ import annotations

import difflib
import inspect
from pathlib import Path

from ptrain.config.references import load_reference
from ptrain.config.schema import Config
from ptrain.errors import ConfigError

# The events a callback class may define, in the order a run meets them.
EVENTS = ("on_train_start", "on_step_end", "on_evaluate", "on_checkpoint", "on_train_end")


def metric_name(reference: str) -> str:
    """A user metric is reported under the name its reference gives (file.py:macro_recall -> macro_recall)."""
    return reference.rpartition(":")[2]


def check_user_code(cfg: Config, path: Path, metric_inputs: tuple[str, ...], task_metrics: tuple[str, ...]) -> None:
    """Import and check every reference; metric_inputs: the gathered tensors the task offers user metrics."""
    train = cfg.train
    if train.loss is not None:
        if train.label_smoothing or train.class_weights is not None:
            raise ConfigError(
                f"{path}: train.loss replaces ptrain's cross entropy, so train.label_smoothing and "
                "train.class_weights would be ignored; build them into your loss and remove the keys"
            )
        _check_loss(_load(train.loss, "train.loss", path), train.loss, path)
    if cfg.model.builder is not None:
        builder = _load(cfg.model.builder, "model.builder", path)
        if inspect.isclass(builder) or not _binds(builder, 3):
            _refuse(path, "model.builder", cfg.model.builder, "a function (cfg, label_names, tokenizer) -> model")
    names = [metric_name(reference) for reference in train.metrics]
    for reference, name in zip(train.metrics, names):
        _check_metric(_load(reference, "train.metrics", path), reference, path, metric_inputs)
        if name in task_metrics or names.count(name) > 1:
            raise ConfigError(f"{path}: train.metrics: '{name}' is already a metric of {cfg.task}; rename it")
    for reference in train.callbacks:
        _check_callback(_load(reference, "train.callbacks", path), reference, path)


def _load(reference: str, key: str, path: Path):
    try:
        return load_reference(reference, key)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def _refuse(path: Path, key: str, reference: str, wanted: str, got=None) -> None:
    found = f"; found {got}" if got else ""
    raise ConfigError(f"{path}: {key}: {reference} must be {wanted}{found}")


def _binds(function, count: int) -> bool:
    """Whether `function` accepts `count` positional arguments (True when Python cannot tell)."""
    try:
        inspect.signature(function).bind(*range(count))
    except TypeError:
        return False
    except ValueError:  # a builtin without a signature
        return True
    return True


def _describe(function) -> str:
    try:
        return f"{getattr(function, '__name__', 'it')}{inspect.signature(function)}"
    except (TypeError, ValueError):
        return repr(function)


def _check_loss(loss, reference: str, path: Path) -> None:
    wanted = "a function (logits, labels) -> summed loss, or a class made with no arguments whose instances take them"
    if inspect.isclass(loss):
        own_call = next((vars(cls)["__call__"] for cls in loss.__mro__ if "__call__" in vars(cls)), None)
        call = getattr(loss, "forward", None) or own_call
        if not _binds(loss, 0):
            _refuse(path, "train.loss", reference, wanted, f"its constructor {_describe(loss)} needs arguments")
        if call is None or not _binds(call, 3):
            _refuse(path, "train.loss", reference, wanted, f"{_describe(call)}")
    elif not callable(loss) or not _binds(loss, 2):
        _refuse(path, "train.loss", reference, wanted, _describe(loss))


def _check_metric(metric, reference: str, path: Path, inputs: tuple[str, ...]) -> None:
    if not inputs:
        raise ConfigError(f"{path}: train.metrics: this task's evaluation gathers no predictions; remove the key")
    wanted = f"a function of some of ({', '.join(inputs)}) -> float"
    if inspect.isclass(metric) or not callable(metric):
        _refuse(path, "train.metrics", reference, wanted)
    try:
        parameters = inspect.signature(metric).parameters.values()
    except (TypeError, ValueError):
        _refuse(path, "train.metrics", reference, wanted, "no readable signature")
    required = [p.name for p in parameters if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    unknown = [name for name in required if name not in inputs]
    if unknown or not any(p.name in inputs for p in parameters):
        _refuse(path, "train.metrics", reference, wanted, _describe(metric))


def _check_callback(callback, reference: str, path: Path) -> None:
    wanted = f"a class made with no arguments, with some of the methods {', '.join(EVENTS)}"
    if not inspect.isclass(callback):
        _refuse(path, "train.callbacks", reference, wanted, type(callback).__name__)
    if not _binds(callback, 0):
        _refuse(path, "train.callbacks", reference, wanted, f"its constructor {_describe(callback)} needs arguments")
    methods = [name for name in dir(callback) if name.startswith("on_") and callable(getattr(callback, name))]
    for name in methods:
        if name not in EVENTS:
            close = difflib.get_close_matches(name, EVENTS, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(
                f"{path}: train.callbacks: {reference} defines {name}, which is no event{hint}; events: "
                f"{', '.join(EVENTS)}"
            )
        if not _binds(getattr(callback, name), 2):
            _refuse(path, "train.callbacks", reference, f"a class whose {name} takes (self, view)", name)
    if not methods:
        _refuse(path, "train.callbacks", reference, wanted, "none of them")
