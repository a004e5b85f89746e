"""`ptrain tune CONFIG --param key=RANGE ...`: an Optuna study over CONFIG's keys. Each trial is a `ptrain train`
process (or the --launcher's, e.g. `accelerate launch`) in STUDY_DIR/trial-NNNN, reporting every evaluation to
the pruner; processes sharing the study's storage share its --trials; the best trial's config is written to
STUDY_DIR/best_config.yaml."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from ptrain.config import to_yaml
from ptrain.errors import SweepError
from ptrain.experiments import tune_pruning as pruning
from ptrain.experiments.tune_space import Param, as_override
from ptrain.experiments.tune_study import COUNTED, counted, fail_dead_trials, owner

LOG_FILE = "train.log"
BEST_CONFIG = "best_config.yaml"


@dataclass(frozen=True)
class Tuning:
    config: str
    fixed: list[str]  # key=value overrides of every trial
    params: list[Param]
    metric: str
    study_dir: Path
    storage_url: str
    study_name: str
    pruner: tuple[str, int]
    trials: int  # in the whole study, across processes
    prefix: list[str]  # how python starts: [sys.executable] or the --launcher's words
    callbacks: list[str]  # the config's own train.callbacks


def run_trials(tuning: Tuning, study) -> int:
    """Trials until the study holds --trials counted ones; returns how many this process ran."""
    dead = fail_dead_trials(study)
    if dead:
        print(f"ptrain: tune: {dead} trial(s) of a process that died marked failed; they are run again")
    ran = 0
    while True:
        trial = next_trial(tuning, study)
        if trial is None:
            return ran
        ran += 1
        try:
            state, value = run_trial(tuning, trial)
        except KeyboardInterrupt:
            trial.set_user_attr(COUNTED, False)
            study.tell(trial, state=fail_state())
            raise
        study.tell(trial, value, state=state)


def study_lock(tuning: Tuning):
    """On SQLite, processes of one machine take turns creating the study and asking for trials."""
    return FileLock(str(tuning.study_dir / "ask.lock")) if tuning.storage_url.startswith("sqlite") else nullcontext()


def next_trial(tuning: Tuning, study):
    """Ask for a trial unless the study is full. On SQLite the count and the ask hold a file lock, so processes of
    one machine never overshoot; on a shared database a trial past --trials is told failed and uncounted."""
    with study_lock(tuning):
        if len(counted(study)) >= tuning.trials:
            return None
        trial = study.ask({p.key: p.distribution() for p in tuning.params})
        for key, value in owner().items():
            trial.set_user_attr(key, value)
    before = [t for t in counted(study) if t.number < trial.number]
    if len(before) >= tuning.trials:
        trial.set_user_attr(COUNTED, False)
        study.tell(trial, state=fail_state())
        return None
    return trial


def fail_state():
    from optuna.trial import TrialState

    return TrialState.FAIL


def trial_overrides(tuning: Tuning, params: dict) -> list[str]:
    return [*tuning.fixed, *(as_override(p, params[p.key]) for p in tuning.params)]


def run_trial(tuning: Tuning, trial):
    """One trial's `ptrain train`: its state (COMPLETE, PRUNED or FAIL) and its value (the run's best metric)."""
    from optuna.trial import TrialState

    run_dir = tuning.study_dir / f"trial-{trial.number:04d}"
    overrides = trial_overrides(tuning, trial.params)
    trial.set_user_attr("overrides", overrides)
    trial.set_user_attr("run_dir", str(run_dir))
    extra = [
        f"run_dir={run_dir}",
        f"hparams={json.dumps([p.key for p in tuning.params])}",
        f"train.callbacks={json.dumps([*tuning.callbacks, pruning.REFERENCE])}",
    ]
    command = [*tuning.prefix, "-m", "ptrain", "train", tuning.config, *overrides, *extra]
    env = {
        **os.environ,
        pruning.STORAGE_ENV: tuning.storage_url,
        pruning.STUDY_ENV: tuning.study_name,
        pruning.TRIAL_ENV: str(trial._trial_id),
        pruning.PRUNER_ENV: json.dumps(tuning.pruner),
        pruning.METRIC_ENV: tuning.metric,
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with open(run_dir / LOG_FILE, "a") as log:
        log.write(f"$ {shlex.join(command)}\n")
        log.flush()
        code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env).returncode
    value = best_value(run_dir, tuning.metric)
    values = " ".join(o.partition("=")[2] for o in overrides[len(tuning.fixed) :])
    seconds = time.perf_counter() - started
    if (run_dir / pruning.PRUNED_FILE).is_file():
        print(f"ptrain: tune: trial {trial.number} ({values}): pruned in {seconds:.0f}s")
        return TrialState.PRUNED, None
    if code != 0 or value is None:
        print(f"ptrain: tune: trial {trial.number} ({values}): failed (exit {code}), see {run_dir / LOG_FILE}")
        return TrialState.FAIL, None
    print(f"ptrain: tune: trial {trial.number} ({values}): {tuning.metric} {value:.4f} in {seconds:.0f}s")
    return TrialState.COMPLETE, value


def best_value(run_dir: Path, metric: str) -> float | None:
    try:
        value = json.loads((run_dir / "metrics.json").read_text())["best"].get(metric)
    except (OSError, ValueError, KeyError):
        return None
    return None if value is None else float(value)


def write_best_config(tuning: Tuning, study) -> Path | None:
    """The best finished trial's resolved config, ready for `ptrain train` (without ptrain tune's own keys)."""
    from ptrain.tasks import load_config

    try:
        best = study.best_trial
    except ValueError:  # no finished trial yet
        return None
    cfg = load_config(tuning.config, best.user_attrs["overrides"])
    path = tuning.study_dir / BEST_CONFIG
    tmp = path.with_name(f"{BEST_CONFIG}.{os.getpid()}.tmp")
    tmp.write_text(f"# ptrain tune: trial {best.number}, {tuning.metric} {best.value:.6g}\n{to_yaml(cfg)}")
    os.replace(tmp, path)
    return path


def check_trials_fit(tuning: Tuning, sampler: str) -> None:
    if tuning.trials < 1:
        raise SweepError(f"--trials {tuning.trials}: give at least 1")
    if sampler == "grid":
        size = 1
        for param in tuning.params:
            size *= len(param.grid())
        if tuning.trials > size:
            raise SweepError(f"--trials {tuning.trials} is more than the grid's {size} points; give --trials {size}")


def report_end(tuning: Tuning, study, ran: int) -> None:
    path = write_best_config(tuning, study)
    states = {}
    for trial in counted(study):
        states[trial.state.name.lower()] = states.get(trial.state.name.lower(), 0) + 1
    summary = ", ".join(f"{n} {s}" for s, n in sorted(states.items()))
    print(f"ptrain: tune {tuning.study_name}: this process ran {ran} trial(s); the study holds {summary}")
    if path is not None:
        best = study.best_trial
        print(f"ptrain: tune: best trial {best.number}: {tuning.metric} {best.value:.4f}; config: {path}")
    print(f"ptrain: tune: table: ptrain runs {tuning.study_dir}", file=sys.stderr)
