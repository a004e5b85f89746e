"""ptrain's hand-written speed paths, fenced here behind one switch (train.fast_paths, on by default). Each computes
the mathematics of the plain model by reaching into private torch or transformers internals, so each runs only
where it was tested, and falls back to the plain model elsewhere with the reason (gates.py): the switch, the
engine (never under FSDP or DeepSpeed, whose parameters are shards gathered by hooks around the modules' own
forward, nor under torch.compile, which traces the plain modules), the device, the model family (config.model_type,
an allow-list per path that tests/test_fast_paths_families.py holds to the plain path's loss and gradients), and
the tested torch and transformers versions. `fast_path_states` says which paths a run gets and why the others are
off; the start line of `ptrain train` and metrics.json record it."""

from __future__ import annotations

import weakref
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import nn

from ptrain.fast_paths import fast_dropout, first_token, packed_linears
from ptrain.fast_paths.gates import FastPath, off_reason, switch_off_reason

PACKED_EVALUATION = "oneDNN-packed evaluation Linears"
PATHS = (
    FastPath(
        name="[CLS]-only last layer",
        devices=None,  # exact and a sixth less encoder work on any device; its attention stays the model's own
        families=first_token.FAMILIES,
        internals=("transformers",),
        unsupported=first_token.unsupported,
        apply=first_token.first_token_last_layer,
    ),
    FastPath(
        name="SFC64 dropout masks",
        devices=("cpu",),  # the masks replace the CPU's serial Mersenne Twister draws; elsewhere torch's own
        families=fast_dropout.FAMILIES,
        internals=("torch", "transformers"),
        unsupported=fast_dropout.unsupported,
        apply=fast_dropout.use_fast_dropout,
    ),
    FastPath(
        name=PACKED_EVALUATION,
        devices=("cpu",),
        families=packed_linears.FAMILIES,
        internals=("torch",),
        unsupported=packed_linears.unsupported,
        apply=lambda model: _PACKED.add(model),
    ),
)

_PACKED: weakref.WeakSet[nn.Module] = weakref.WeakSet()  # models whose evaluation passes run packed_linears


@dataclass(frozen=True)
class PathState:
    """One fast path for one run: active, or off with the reason."""

    name: str
    off_reason: str | None = None  # None: active

    @property
    def active(self) -> bool:
        return self.off_reason is None


def fast_path_states(model: nn.Module, accelerator, enabled: bool) -> list[PathState]:
    """For the (unwrapped, not yet prepared) `model` under `accelerator` with train.fast_paths = `enabled`: every
    path, active or off with the reason. Changes nothing."""
    switch_off = switch_off_reason(accelerator, enabled)
    return [PathState(path.name, switch_off or off_reason(path, model, accelerator.device)) for path in PATHS]


def apply_fast_paths(model: nn.Module, accelerator, enabled: bool, only: tuple[str, ...] = ()) -> list[PathState]:
    """Patch `model` in place with the paths fast_path_states finds active (weights, state dict and export stay
    the plain model's), or with those of them named in `only`; returns the states."""
    states = fast_path_states(model, accelerator, enabled)
    for path, state in zip(PATHS, states):
        if state.active and (not only or path.name in only):
            path.apply(model)
    return states


def describe(states: list[PathState]) -> str:
    """The start line's part: `fast paths: A, B` (the active ones), or `fast paths: off (reason)`."""
    active = [state.name for state in states if state.active]
    if active:
        return "fast paths: " + ", ".join(active)
    reasons = list(dict.fromkeys(state.off_reason for state in states))
    return f"fast paths: off ({reasons[0] if len(reasons) == 1 else 'none applies to this model and device'})"


def as_record(states: list[PathState]) -> dict[str, str]:
    """metrics.json's record: each path's name -> "active" or "off: reason"."""
    return {state.name: "active" if state.active else f"off: {state.off_reason}" for state in states}


def packed_evaluation(model: nn.Module, device: torch.device):
    """The context an evaluation pass of `model` (prepared or wrapped: the patched model is one of its modules)
    runs in: packed_linears when apply_fast_paths made that path active for it, else nothing."""
    if any(module in _PACKED for module in model.modules()):
        return packed_linears.packed_linears(model, device)
    return nullcontext()
