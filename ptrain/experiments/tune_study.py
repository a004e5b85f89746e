"""The Optuna side of `ptrain tune`: storage (SQLite by default; any database URL Optuna takes), samplers, pruners,
the study, and which of its trials count toward --trials (trials of a process that died are failed, uncounted)."""

from __future__ import annotations

import os
import socket

from ptrain.errors import SweepError

SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("median", "hyperband", "none")
COUNTED = "ptrain_counted"  # user attr: False on a trial whose process died, or one past --trials


def require_optuna():
    try:
        import optuna
    except ImportError:
        raise SweepError("ptrain tune needs Optuna: pip install 'ptrain[tune]' (or pip install optuna)") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def open_storage(url: str):
    """SQLite waits up to 30 s for another process's write lock (Optuna's advice for several processes)."""
    import optuna

    kwargs = {"connect_args": {"timeout": 30}} if url.startswith("sqlite") else {}
    return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)


def make_sampler(name: str, params, startup_trials: int, seed: int | None):
    import optuna

    if name == "grid":
        return optuna.samplers.GridSampler({p.key: p.grid() for p in params}, seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(n_startup_trials=startup_trials, seed=seed)


def make_pruner(name: str, startup_trials: int):
    import optuna

    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=startup_trials)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner()
    return optuna.pruners.NopPruner()


def owner() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid()}


def fail_dead_trials(study) -> int:
    """RUNNING trials started on this machine by a process that is gone (killed, the machine restarted): failed
    and uncounted, so a restarted study runs their share again. Trials of other machines are left to them."""
    from optuna.trial import TrialState

    failed = 0
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        attrs = trial.user_attrs
        if attrs.get("host") == socket.gethostname() and not alive(attrs.get("pid", -1)):
            study._storage.set_trial_user_attr(trial._trial_id, COUNTED, False)
            study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
            failed += 1
    return failed


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return pid > 0


def counted(study) -> list:
    """The trials that count toward --trials: all but the uncounted failures and the enqueued ones not started."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    return [t for t in trials if t.user_attrs.get(COUNTED, True) and t.state != TrialState.WAITING]
