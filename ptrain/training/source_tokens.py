"""data.mixture: each source's real tokens trained, counted on the device by the meter and folded into the loop state
(the same numbers on every process) at each log, each checkpoint and the run's end, so a resumed run goes on from
exact counts on any number of processes."""

from __future__ import annotations

from ptrain.data.mixtures import source_scalars
from ptrain.training.meter import TrainMeter
from ptrain.training.run import LoopState, Run


def fold_source_tokens(run: Run, state: LoopState, meter: TrainMeter) -> None:
    """The meter's counts since the last fold, summed over processes (one all-reduce: every process calls this at
    the same points), added to state.source_tokens; nothing without a mixture."""
    since = meter.take_source_tokens(run.runtime.accelerator)
    if since is not None:
        state.source_tokens = [a + b for a, b in zip(state.source_tokens or [0] * len(since), since)]


def logged_source_tokens(run: Run, state: LoopState, meter: TrainMeter) -> dict[str, float]:
    """A log step's scalars: each source's share of the real tokens trained since the last log, and its tokens so
    far (train/source_share/<name>, train/source_tokens/<name>)."""
    fold_source_tokens(run, state, meter)
    if not state.source_tokens:
        return {}
    logged = state.source_tokens_logged or [0] * len(state.source_tokens)
    since = [now - then for now, then in zip(state.source_tokens, logged)]
    state.source_tokens_logged = list(state.source_tokens)
    return source_scalars(list(run.cfg.data.mixture), since, state.source_tokens)
