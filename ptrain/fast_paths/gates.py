"""The gates every fast path passes before it patches a model: the switch and the engine (for all paths at once),
then the path's device, model family, tested library versions and its own check of the model's structure."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version

import torch
from accelerate.utils import DynamoBackend
from packaging.version import Version
from torch import nn

from ptrain.runtime.engine import engine_of

# The versions of the libraries whose private internals the paths use that tests/test_fast_paths*.py passed on
# ([lowest, first untested)): outside them the paths are off, with the installed version as the reason.
TESTED = {"torch": ("2.13", "2.14"), "transformers": ("5.25", "5.26")}


@dataclass(frozen=True)
class FastPath:
    name: str  # as the start line says it
    devices: tuple[str, ...] | None  # device types it runs on; None: every device
    families: frozenset[str]  # config.model_type values the exactness tests cover
    internals: tuple[str, ...]  # the libraries whose private internals it uses (keys of TESTED)
    unsupported: Callable[[nn.Module], str | None]  # why this model's structure does not fit, or None
    apply: Callable[[nn.Module], object]  # patch the model in place


def switch_off_reason(accelerator, enabled: bool) -> str | None:
    """Why no path may run in this launch (the switch, a sharding engine, torch.compile), or None."""
    if not enabled:
        return "train.fast_paths=false"
    engine = engine_of(accelerator).name
    if engine in ("fsdp2", "deepspeed"):
        return engine
    if accelerator.state.dynamo_plugin.backend != DynamoBackend.NO:
        return "torch.compile"
    return None


def off_reason(path: FastPath, model: nn.Module, device: torch.device) -> str | None:
    """Why `path` does not apply to `model` on `device`, or None when it does."""
    if path.devices is not None and device.type not in path.devices:
        return f"not on {device.type}"
    family = getattr(getattr(model, "config", None), "model_type", None)
    if family not in path.families:
        return f"model family {family} not among those tested ({', '.join(sorted(path.families))})"
    for library in path.internals:
        if reason := untested_version(library):
            return reason
    return path.unsupported(model)


def untested_version(library: str) -> str | None:
    """Why the installed `library` is outside the range the fast paths were tested on, or None when inside."""
    installed, (low, high) = version(library), TESTED[library]
    if not Version(low) <= Version(Version(installed).base_version) < Version(high):
        return f"{library} {installed} outside the tested range >={low},<{high}"
    return None
